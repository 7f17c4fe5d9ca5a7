"""The figures the notebooks show. Plain matplotlib; each function returns its Figure so a notebook can
``save_figure`` it. Nothing here computes a result: the numbers come from the model and metrics."""
from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def _as_image(item):
    if isinstance(item, Image.Image):
        return item
    with Image.open(item) as image:
        image.load()
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image.copy()


def _wrap(text: str, width: int = 22, lines: int = 3) -> str:
    return "\n".join(textwrap.wrap(str(text), width)[:lines])


def show_images(images, titles=None, ncols: int = 6, size: float = 2.0, suptitle: str | None = None):
    """A grid of thumbnails with wrapped captions."""
    images = list(images)
    if not images:
        raise ValueError("show_images got no images.")
    nrows = math.ceil(len(images) / ncols)
    ncols = min(ncols, len(images))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 1.25 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, item in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(_as_image(item), cmap="gray")
        if titles is not None:
            ax.set_title(_wrap(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


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


def similarity_heatmap(similarity, row_labels, col_labels, images=None, title="ASIF similarity", fmt=".2f"):
    """Images (rows, optionally with thumbnails) against texts (columns), annotated with the scores."""
    similarity = np.asarray(similarity)
    n_rows, n_cols = similarity.shape
    thumbs = images is not None
    fig = plt.figure(figsize=(2 + 1.3 * n_cols + (1.2 if thumbs else 0), 1 + 0.9 * n_rows))
    grid = fig.add_gridspec(n_rows, 2 if thumbs else 1, width_ratios=[1, n_cols] if thumbs else [1], wspace=0.05)
    ax = fig.add_subplot(grid[:, -1])
    im = ax.imshow(similarity, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n_cols), [_wrap(c, 16) for c in col_labels], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [_wrap(r, 20, 2) for r in row_labels], fontsize=8)
    if thumbs:
        ax.yaxis.tick_right()
    for i in range(n_rows):
        for j in range(n_cols):
            value = similarity[i, j]
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7,
                    color="white" if value < similarity.max() * 0.6 else "black")
    if thumbs:
        for i, item in enumerate(images):
            thumb_ax = fig.add_subplot(grid[i, 0])
            thumb_ax.imshow(_as_image(item), cmap="gray")
            thumb_ax.axis("off")
    ax.set_title(title)
    # with thumbnails the text labels sit on the right, so the colour bar moves out of their way
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.3 if thumbs else 0.02)
    return fig


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


def plot_explanation(query_image, rows, collection, title="", n_show: int = 8):
    """Figure 5 as a picture: the query image, then the anchors behind one image–text score (``explain``
    rows), each with its caption and its contribution to the score."""
    rows = list(rows)[:n_show]
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(2.1 * (len(rows) + 1), 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(_as_image(query_image), cmap="gray")
    axes[0].set_title("query", fontsize=9)
    for ax, row in zip(axes[1:], rows):
        pair = collection[int(row["anchor"])]
        ax.imshow(_as_image(pair.image))
        ax.set_title(f"{_wrap(pair.caption, 20, 2)}\n+{row['contribution']:.3f}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    if not rows:
        axes[0].text(1.1, 0.5, "no shared anchors: score 0", transform=axes[0].transAxes)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_threshold_curve(curve, title="Unknown token: accuracy / unknown / wrong vs threshold", mark=None):
    """Stacked fractions of correct, unknown (abstained) and wrong answers as the threshold rises."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    thresholds = np.asarray(curve["threshold"])
    finite = np.isfinite(thresholds)  # the last threshold is +inf (nothing answered): no place on an axis
    thresholds = thresholds[finite]
    ax.stackplot(thresholds, *(np.asarray(curve[key])[finite] for key in ("accuracy", "unknown", "wrong")),
                 labels=["correct", "unknown", "wrong"], colors=["#4c9a2a", "#bbbbbb", "#c0392b"], alpha=0.85)
    if mark is not None:
        ax.axvline(mark, color="k", ls="--", lw=1)
    ax.set_xlabel("threshold on the best score")
    ax.set_ylabel("fraction of queries")
    ax.set_xlim(thresholds.min(), thresholds.max())
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
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
