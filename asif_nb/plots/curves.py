"""Figure 4: accuracy against the number of anchor pairs for many k and p (notebook 06)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_figure4(rows, title="Zero-shot accuracy vs number of anchor pairs", metric="accuracy", chance=None):
    """Figure 4 of the paper: one panel per k, one line per exponent p, accuracy against the number of
    pairs on a log axis. ``rows`` are ``sweep`` rows (``n_pairs, k, p, accuracy``); non-applicable
    points (k > n) are left out."""
    rows = [row for row in rows if row.get(metric) is not None]
    if not rows:
        raise ValueError("plot_figure4 got no applicable sweep rows.")
    ks = sorted({row["k"] for row in rows})
    ps = sorted({row["p"] for row in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 3.4), sharey=True, squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(ps)))
    for ax, k in zip(axes[0], ks):
        for colour, p in zip(colours, ps):
            line = sorted((row["n_pairs"], row[metric]) for row in rows if row["k"] == k and row["p"] == p)
            if line:
                xs, ys = zip(*line)
                ax.plot(xs, ys, "o-", color=colour, ms=3, label=f"p={p:g}")
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("number of anchor pairs")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
