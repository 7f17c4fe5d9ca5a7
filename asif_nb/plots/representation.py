"""ASIF in one picture (notebook 00) and one relative representation (notebook 02)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_relative_representation(row, title: str = "relative representation", ax=None, ids=None):
    """A stem plot of one sparse relative representation (a 1×N CSR row or a dense vector): the k
    non-zero coordinates stand out of an N-long row of zeros."""
    dense = np.asarray(row.toarray()).ravel() if hasattr(row, "toarray") else np.asarray(row).ravel()
    nonzero = np.flatnonzero(dense)
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 2.4))
    else:
        fig = ax.figure
    ax.vlines(nonzero, 0, dense[nonzero], lw=1)
    ax.plot(nonzero, dense[nonzero], "o", ms=3)
    ax.set_xlim(0, len(dense))
    ax.set_xlabel(f"anchor index (N = {len(dense)}; {len(nonzero)} non-zero)")
    ax.set_ylabel("weight")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def asif_diagram():
    """What ASIF is in one picture: an image and a text are each compared with their own half of the
    anchor pairs; the sparse similarity profiles live in one space and are compared there."""
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    rng = np.random.default_rng(3)
    n = 24
    shared = rng.choice(n, 5, replace=False)

    def box(x, y, w, h, text, colour):
        ax.add_patch(plt.Rectangle((x, y), w, h, fc=colour, ec="k", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    def arrow(x0, y0, x1, y1):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", lw=1.2))

    for y, label, enc, anchors, colour in ((2.8, "image x*", "frozen image\nencoder E1", "anchor images\nx1 … xN", "#d6eaf8"),
                                          (0.4, "text ŷ", "frozen text\nencoder E2", "anchor captions\ny1 … yN", "#fdebd0")):
        box(0.1, y, 1.2, 0.9, label, colour)
        arrow(1.3, y + 0.45, 1.8, y + 0.45)
        box(1.8, y, 1.5, 0.9, enc, "white")
        arrow(3.3, y + 0.45, 3.8, y + 0.45)
        box(3.8, y, 1.7, 0.9, "cosine to\n" + anchors, colour)
        arrow(5.5, y + 0.45, 6.0, y + 0.45)
        values = np.zeros(n)
        values[shared] = rng.uniform(0.5, 1.0, len(shared))
        extra = rng.choice(np.setdiff1d(np.arange(n), shared), 2, replace=False)
        values[extra] = rng.uniform(0.2, 0.5, 2)
        xs = 6.0 + np.arange(n) * 0.1
        ax.bar(xs, values * 0.8, width=0.07, bottom=y + 0.05, color="#2e86c1" if y > 2 else "#ca6f1e")
        ax.text(7.2, y + 1.0, "top-k, ^p, normalise", ha="center", fontsize=8)
    ax.annotate("", (8.6, 1.0), (8.6, 3.2), arrowprops=dict(arrowstyle="<->", lw=1.2))
    ax.text(8.75, 2.1, "compare:\nsim(rr(x*), rr(ŷ))\n— the same anchors\nlight up for an image\nand its caption",
            fontsize=8, va="center")
    ax.text(5.0, 4.05, "ASIF: no training, only a collection of N image–caption pairs (the anchors)",
            ha="center", fontsize=10, weight="bold")
    fig.tight_layout()
    return fig
