"""CLIP / LiT / linear heads / ASIF compared (notebook 08)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from .base import _rows_of, _value, _measured


def plot_method_curves(rows, methods, colours=("C3", "C1", "C2", "C0"), title=None):
    """Notebook 08's curves: one panel per (eval set, metric) that was measured (top-1 accuracy, then
    image→caption R@1), one line per method against the number of pairs, chance dotted. ``rows``: the records of
    ``contrastive.compare`` (or a DataFrame of them); ``methods`` in legend order, coloured by ``colours``."""
    rows = _rows_of(rows)
    names = list(dict.fromkeys(row["eval"] for row in rows))
    counts = sorted({row["n_pairs"] for row in rows})
    panels = [(name, "acc1", "zero-shot top-1 accuracy") for name in names
              if _measured([r for r in rows if r["eval"] == name], "acc1")]
    panels += [(name, "text_retrieval_recall@1", "image→caption R@1") for name in names
               if _measured([r for r in rows if r["eval"] == name], "text_retrieval_recall@1")]
    if not panels:
        raise ValueError("plot_method_curves: no row has acc1 or text_retrieval_recall@1.")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (name, metric, label) in zip(axes[0], panels):
        of_eval = [r for r in rows if r["eval"] == name]
        for colour, method in zip(colours, methods):
            line = sorted((r["n_pairs"], _value(r, metric)) for r in of_eval if r["method"] == method)
            ax.plot([x for x, _ in line], [y for _, y in line], "o-", color=colour, ms=4, label=method)
        # chance: one class in n_classes; for retrieval, one caption among the set's (one per image)
        chance = of_eval[0]["chance"] if metric == "acc1" else 1 / of_eval[0]["n_images"]
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(counts, [f"{c:,}" for c in counts])
        ax.set(xlabel="number of image–caption pairs", ylabel=label, title=name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or f"Same pairs, same evaluation: {', '.join(methods)}")
    fig.tight_layout()
    return fig


def plot_training_cost(rows, methods, colours=("C3", "C1", "C2", "C0"), seconds_label="wall seconds to train / build",
                       title="Cost of getting a model from n pairs (ASIF: 0 training FLOPs)"):
    """Training (or building) seconds and estimated training FLOPs against the number of pairs, one line per
    method (a method with 0 FLOPs, i.e. no training, is left out of the FLOPs panel). ``rows``: as for
    ``plot_method_curves``; each (method, n) is read from its first row."""
    rows = _rows_of(rows)
    counts = sorted({row["n_pairs"] for row in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for colour, method in zip(colours, methods):
        first = {}
        for row in rows:
            if row["method"] == method:
                first.setdefault(row["n_pairs"], row)
        line = [first[n] for n in sorted(first)]
        xs = [row["n_pairs"] for row in line]
        axes[0].plot(xs, [row["train_seconds"] for row in line], "o-", color=colour, ms=4, label=method)
        if any(row["flops"] for row in line):
            axes[1].plot(xs, [row["flops"] for row in line], "o-", color=colour, ms=4, label=method)
    axes[0].set_ylabel(seconds_label)
    axes[1].set_ylabel("training FLOPs (6·params·tokens)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of pairs")
        ax.grid(alpha=0.3)
        ax.set_xticks(counts, [f"{c:,}" for c in counts])
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
