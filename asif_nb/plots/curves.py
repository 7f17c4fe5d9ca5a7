"""Figure 4: accuracy against the number of anchor pairs for many k and p (notebook 06)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..metrics import wilson_interval


def pair_ticks(low: float, high: float) -> list[int]:
    """Round numbers of pairs (1, 2, 5 times a power of ten) between ``low`` and ``high``: a log axis's ticks that
    never overlap, whatever the grid."""
    low, high = max(float(low), 1.0), max(float(high), 1.0)
    ticks = [int(m * 10 ** e) for e in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if low <= t <= high]
    return inside or [int(round(low)), int(round(high))]


def pair_label(n: float) -> str:
    """A number of pairs for a tick: 100, 2k, 1.5k, 1.6M when it is round, else written out (5,016)."""
    n = float(n)
    if n >= 1e6 and n % 1e5 == 0:
        return f"{n / 1e6:g}M"
    if n >= 1e3 and n % 100 == 0:
        return f"{n / 1e3:g}k"
    return f"{int(n):,}" if n == int(n) else f"{n:g}"


def plot_figure4(sweeps, n_images=None, chance=None, reference=None, metric="accuracy",
                 title="Zero-shot accuracy vs number of anchor pairs"):
    """Figure 4 of the paper, one panel per evaluation set on shared axes, **k as colour**: for each k, the best
    exponent p of the grid at each number of pairs (thick line, with its 95 % Wilson band when ``n_images`` gives the
    set's size) and every single p (thin lines of the same colour); each panel's best point starred; chance dotted.
    Points with k > n do not exist and are left out.

    ``sweeps``: ``{eval name: sweep rows}`` (``n_pairs, k, p, accuracy``); a plain list of rows draws one panel.
    ``n_images`` / ``chance``: ``{eval name: number of images / 1 / number of classes}``. ``reference``:
    ``{eval name: (n_pairs, accuracy, label)}``, a published point drawn as a black diamond (the paper's 18 % on
    ImageNet at 10,000 pairs)."""
    if not isinstance(sweeps, dict):
        sweeps = {"": sweeps}
    panels = {name: [row for row in rows if row.get(metric) is not None] for name, rows in sweeps.items()}
    panels = {name: rows for name, rows in panels.items() if rows}
    if not panels:
        raise ValueError("plot_figure4 got no applicable sweep rows.")
    n_images, chance, reference = n_images or {}, chance or {}, reference or {}
    ks = sorted({row["k"] for rows in panels.values() for row in rows})
    colours = dict(zip(ks, plt.cm.plasma(np.linspace(0.0, 0.8, len(ks)))))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.3), sharex=True, sharey=True,
                             squeeze=False)
    every_n = [row["n_pairs"] for rows in panels.values() for row in rows]
    for ax, (name, rows) in zip(axes[0], panels.items()):
        for k in ks:
            of_k = [row for row in rows if row["k"] == k]
            if not of_k:
                continue
            for p in sorted({row["p"] for row in of_k}):
                line = sorted((row["n_pairs"], row[metric]) for row in of_k if row["p"] == p)
                ax.plot(*zip(*line), "-", color=colours[k], lw=0.7, alpha=0.35)
            best = {}
            for row in of_k:
                if row["n_pairs"] not in best or row[metric] > best[row["n_pairs"]]:
                    best[row["n_pairs"]] = row[metric]
            xs = sorted(best)
            ys = [best[x] for x in xs]
            ax.plot(xs, ys, "o-", color=colours[k], lw=2, ms=4, label=f"k = {k}")
            if name in n_images:
                m = int(n_images[name])
                bands = [wilson_interval(round(y * m), m) for y in ys]
                ax.fill_between(xs, [b[0] for b in bands], [b[1] for b in bands], color=colours[k], alpha=0.12, lw=0)
        top = max(rows, key=lambda row: row[metric])
        ax.plot([top["n_pairs"]], [top[metric]], "*", color="crimson", ms=14, zorder=5, label="best point")
        if name in chance:
            ax.axhline(chance[name], color="grey", ls=":", lw=1, label="chance")
        if name in reference:
            n_ref, acc_ref, label = reference[name]
            ax.plot([n_ref], [acc_ref], "D", color="black", ms=7, zorder=6, label=label)
        ax.set_xscale("log")
        size = f", {n_images[name]:,} images" if name in n_images else ""
        ax.set_title(f"{name}{size}\nbest {top[metric]:.3f}: k={top['k']}, p={top['p']:g}, "
                     f"n={top['n_pairs']:,}", fontsize=10)
        ax.set_xlabel("number of anchor pairs (first n of the collection)")
        ax.set_ylabel(f"zero-shot {metric}")
        ax.grid(alpha=0.3)
    ax.plot([], [], "-", color="grey", lw=0.7, label="each single p")
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 8), fontsize=8,
               frameon=False)
    ticks = pair_ticks(min(every_n), max(every_n))
    for ax in axes[0]:
        ax.minorticks_off()
        ax.set_xticks(ticks, [pair_label(t) for t in ticks])
        ax.tick_params(labelleft=True)
    bands = " (band: its 95 % Wilson interval)" if n_images else ""
    fig.suptitle(f"{title}\nthick: the best p of the grid for each k{bands}; thin: each single p", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
