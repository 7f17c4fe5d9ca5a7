"""CLIP / LiT / linear heads / ASIF compared (notebook 08)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..metrics import wilson_interval
from .base import _rows_of, _value, _measured
from .curves import pair_label


def plot_method_curves(rows, methods, colours=("C3", "C1", "C2", "C0"), title=None):
    """Notebook 08's curves: one panel per (eval set, metric) that was measured (top-1 accuracy, then
    image→caption R@1), one line per method against the number of pairs, each point with its 95 % Wilson interval
    over the set's ``n_images`` (methods nudged apart along x so the bars do not hide each other), chance dotted.
    The legend sits below the panels, never over a point. ``rows``: the records of ``contrastive.compare`` (or a
    DataFrame of them); ``methods`` in legend order, coloured by ``colours``."""
    rows = _rows_of(rows)
    names = list(dict.fromkeys(row["eval"] for row in rows))
    counts = sorted({row["n_pairs"] for row in rows})
    panels = [(name, "acc1", "zero-shot top-1 accuracy") for name in names
              if _measured([r for r in rows if r["eval"] == name], "acc1")]
    panels += [(name, "text_retrieval_recall@1", "image→caption R@1") for name in names
               if _measured([r for r in rows if r["eval"] == name], "text_retrieval_recall@1")]
    if not panels:
        raise ValueError("plot_method_curves: no row has acc1 or text_retrieval_recall@1.")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False)
    nudges = np.exp(np.linspace(-0.06, 0.06, len(methods))) if len(methods) > 1 else [1.0]
    for ax, (name, metric, label) in zip(axes[0], panels):
        of_eval = [r for r in rows if r["eval"] == name]
        for colour, method, nudge in zip(colours, methods, nudges):
            line = sorted((r["n_pairs"], _value(r, metric), r.get("n_images")) for r in of_eval if r["method"] == method)
            xs, ys = [x for x, _, _ in line], [y for _, y, _ in line]
            ax.plot(xs, ys, "o-", color=colour, ms=4, label=method)
            bars = [(y, wilson_interval(round(y * m), m)) for _, y, m in line if m and y == y]
            if bars:
                ax.errorbar([x * nudge for x, y, m in line if m and y == y], [y for y, _ in bars],
                            yerr=[[y - lo for y, (lo, _) in bars], [hi - y for y, (_, hi) in bars]],
                            fmt="none", ecolor=colour, elinewidth=1, capsize=2, alpha=0.6)
        # chance: one class in n_classes; for retrieval, one caption among the set's (one per image)
        chance = of_eval[0]["chance"] if metric == "acc1" else 1 / of_eval[0]["n_images"]
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(counts, [pair_label(c) for c in counts])
        images = of_eval[0].get("n_images")
        ax.set(xlabel="number of image–caption pairs", ylabel=label,
               title=f"{name} ({images:,} images)" if images else name)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title or f"Same pairs, same evaluation: {', '.join(methods)}")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_training_cost(rows, methods, steps=None, batch_size=None, colours=("C3", "C1", "C2", "C0"),
                       seconds_label="wall seconds to train / build",
                       title="What a model costs, and how often training revisits each pair"):
    """Left: seconds to train (or build) one model, per method — the median over the numbers of pairs, whiskers
    from the fastest to the slowest. With a fixed step budget the training work does not depend on n, so its
    timings against n would be noise; they are pooled instead. Right (``steps``: ``{method: optimiser steps}``,
    ``batch_size``): how many times each training pair is seen, ``steps × batch_size / n``, against n — a small
    collection is revisited tens of times (what a trained head overfits), ASIF stores each pair once.
    ``rows``: as for ``plot_method_curves``; each (method, n) is read from its first row."""
    rows = _rows_of(rows)
    counts = sorted({row["n_pairs"] for row in rows})
    drawn = [(colour, method) for colour, method in zip(colours, methods) if any(r["method"] == method for r in rows)]
    if not drawn:
        raise ValueError("plot_training_cost: no row belongs to one of the methods.")
    fig, axes = plt.subplots(1, 2 if steps else 1, figsize=(11 if steps else 5.5, 3.8), squeeze=False)
    left = axes[0][0]
    for position, (colour, method) in enumerate(drawn):
        first = {}
        for row in rows:
            if row["method"] == method:
                first.setdefault(row["n_pairs"], row)
        seconds = np.array([first[n]["train_seconds"] for n in sorted(first)], dtype=float)
        middle = float(np.median(seconds))
        left.bar(position, middle, color=colour, alpha=0.8, label=method)
        left.errorbar(position, middle, yerr=[[middle - seconds.min()], [seconds.max() - middle]], fmt="none",
                      ecolor="black", capsize=4, lw=1)
    left.set_xticks(range(len(drawn)), [method.replace(" ", "\n", 1) for _, method in drawn], fontsize=8)
    left.set(yscale="log", ylabel=seconds_label, xlabel="method (bar: median over the numbers of pairs; "
             "whiskers: min–max)", title="seconds per model")
    left.grid(alpha=0.3, axis="y")
    if steps:
        if not batch_size:
            raise ValueError("plot_training_cost: steps needs batch_size (examples per optimiser step).")
        right = axes[0][1]
        trained = [(colour, method) for colour, method in drawn if method in steps]
        for position, (colour, method) in enumerate(trained):  # methods with equal steps overlap: shrinking markers
            ns = sorted({r["n_pairs"] for r in rows if r["method"] == method})
            right.plot(ns, [steps[method] * batch_size / n for n in ns], "os^D"[position % 4] + "-", color=colour,
                       ms=9 - 2 * position, lw=3 - position * 0.8, label=f"{method} ({steps[method]} steps × {batch_size})")
        for colour, method in drawn:
            if method not in steps:
                right.axhline(1, color=colour, lw=2, ls="--", label=f"{method}: each pair stored once")
        right.set(xscale="log", yscale="log", xlabel="number of pairs n", ylabel="times each pair is seen",
                  title="passes over the training pairs")
        right.minorticks_off()
        right.set_xticks(counts, [pair_label(c) for c in counts])
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
