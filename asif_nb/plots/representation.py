"""ASIF in one picture (notebook 00); the neighbourhoods of the two embeddings (notebook 01); one relative
representation and the zero-shot accuracies with their error bars (notebook 02)."""
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


def plot_neighbour_overlap(counts: dict, m: int = 10, title: str = ""):
    """Notebook 01's test of ASIF's assumption: for each label (e.g. "image ↔ its own caption", "image ↔ another
    anchor's caption"), how many probed anchors share 0, 1, …, m of their m nearest neighbours between the image and
    the caption embeddings, as side-by-side bars with each distribution's mean marked."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(1, len(counts))
    values = np.arange(m + 1)
    for i, (label, found) in enumerate(counts.items()):
        found = np.asarray(found)
        ax.bar(values + (i - (len(counts) - 1) / 2) * width, np.bincount(found, minlength=m + 1)[:m + 1], width,
               color=f"C{i}", label=f"{label} (mean {found.mean():.2f})")
        ax.axvline(found.mean(), color=f"C{i}", ls="--", lw=1)
    ax.set_xticks(values)
    ax.set_xlabel(f"neighbours shared among the {m} nearest (image embedding vs caption embedding)")
    ax.set_ylabel("probed anchors")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_similarities_and_weights(similarities, kth: float, rows: dict, title: str = "", axes=None):
    """Notebook 02's first picture, two panels: (left) the histogram of one query's N cosine similarities to the
    anchors with the k-th largest marked (``kth``), (right) the kept weights of its relative representation in rank
    order, one line per ``rows`` entry (label → the model's 1×N row for one p), with the level 1/√k that equal
    weights would have. The rows come from the model; nothing is recomputed here."""
    similarities = np.asarray(similarities).ravel()
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
    fig = axes[0].figure
    axes[0].hist(similarities, bins=60, color="grey")
    axes[0].axvline(kth, color="C3", ls="--", label=f"k-th largest: {kth:.3f}")
    axes[0].set_xlabel("cosine similarity to an anchor image")
    axes[0].set_ylabel("anchors")
    axes[0].legend(fontsize=8)
    axes[0].set_title(title or f"all N = {len(similarities):,} similarities", fontsize=10)
    k = 0
    for i, (label, row) in enumerate(rows.items()):
        dense = np.asarray(row.toarray()).ravel() if hasattr(row, "toarray") else np.asarray(row).ravel()
        kept = np.sort(dense[dense != 0])[::-1]
        k = max(k, len(kept))
        axes[1].plot(np.arange(1, len(kept) + 1), kept, "o-", ms=2.5, lw=1, color=f"C{i}", label=label)
    if k:
        axes[1].axhline(1 / np.sqrt(k), color="black", lw=0.8, ls=":", label=f"equal weights 1/√{k}")
    axes[1].set_xlabel("kept anchor, by rank (1 = most similar)")
    axes[1].set_ylabel("weight in rr (unit length)")
    axes[1].legend(fontsize=8)
    axes[1].set_title("after top-k, the power p and normalisation", fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy_intervals(rows, title: str = "zero-shot top-1 accuracy, this run"):
    """One point per evaluation set with its 95 % Wilson interval and its chance level: ``rows`` are dicts with
    ``name``, ``n`` (images), ``accuracy``, ``low``, ``high`` (fractions) and ``chance``. A set of 20 images reads
    as the wide bar it is."""
    rows = list(rows)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.3))
    y = np.arange(len(rows))
    acc = np.array([100 * r["accuracy"] for r in rows])
    low = np.array([100 * r["low"] for r in rows])
    high = np.array([100 * r["high"] for r in rows])
    ax.errorbar(acc, y, xerr=[acc - low, high - acc], fmt="o", color="C0", capsize=4, label="top-1, 95 % Wilson interval")
    ax.plot([100 * r["chance"] for r in rows], y, "|", color="C3", ms=14, mew=2, label="chance")
    ax.set_yticks(y, [f"{r['name']}\n({r['n']:,} images)" for r in rows], fontsize=9)
    ax.set_xlim(-2, 100)  # a chance of 0.1 % stays visible
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_ylabel("evaluation set")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
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
