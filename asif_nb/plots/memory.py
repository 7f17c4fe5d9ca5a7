"""Memory editing figures: anchor usage and pruning (notebook 07)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..metrics import wilson_interval
from .base import _rows_of


def plot_usage_histogram(counts, title="anchor usage", bins: int = 60):
    """How many anchors are used how often (``memory.usage_counts``), on a log scale: the short tail of the
    anchors a task uses."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(np.asarray(counts), bins=bins, color="C0", log=True)
    ax.set(xlabel="times used (non-zero in a query's top-k)", ylabel="anchors (log scale)", title=title)
    fig.tight_layout()
    return fig


def plot_pruning(rows, used=None, chance=None, title="pruning", n_images=None):
    """Accuracy against the fraction of anchors kept: ``rows`` (records or a DataFrame) with ``fraction``,
    ``acc_most_used`` and ``acc_random``; ``used``: ``(fraction, accuracy)`` of keeping every used anchor;
    ``n_images``: the held-out images the accuracies are measured on, drawn as 95 % Wilson bands."""
    rows = _rows_of(rows)
    if not rows:
        raise ValueError("plot_pruning got no rows.")
    fraction = [row["fraction"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, style, colour, label in (("acc_most_used", "o-", "C0", "keep the most used"),
                                      ("acc_random", "s--", "C1", "keep at random")):
        values = [row[key] for row in rows]
        ax.plot(fraction, values, style, color=colour, label=label)
        if n_images:
            bands = [wilson_interval(round(v * n_images), n_images) for v in values]
            ax.fill_between(fraction, [b[0] for b in bands], [b[1] for b in bands], color=colour, alpha=0.15, lw=0)
    if used is not None:
        ax.plot(*used, "k*", ms=12, label="keep every used anchor")
    if chance is not None:
        ax.axhline(chance, color="grey", lw=1, ls=":", label="chance")
    ax.set(xscale="log", xlabel="fraction of anchors kept", ylabel="accuracy (held-out half)",
           title=title + (f"\nbands: 95 % intervals over {n_images} images" if n_images else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
