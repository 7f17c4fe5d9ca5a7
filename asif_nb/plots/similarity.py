"""The image-text similarity heatmap (notebook 03)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.patches import Rectangle

from .base import _as_image, _wrap


def similarity_heatmap(similarity, row_labels, col_labels, images=None, title="ASIF similarity", fmt=".3f",
                       vmax: float = 1.0, gamma: float = 0.5):
    """Images (rows, optionally with thumbnails) against texts (columns), annotated with the scores; each image's
    best text is framed. An exact 0 (no shared anchor) is written "0", every other score with ``fmt``.

    The colour scale is **fixed** (0 to ``vmax``, 1 by default: the largest score two unit-length, non-negative
    representations can have), as CLIP's "Interacting with CLIP" notebook fixes its own, so two runs — other
    images, other texts, other k — are coloured alike and one large score cannot wash the others out. ``gamma``
    < 1 spreads the small scores, where most of an ASIF matrix lives (``gamma=1``: linear)."""
    similarity = np.asarray(similarity, dtype=float)
    n_rows, n_cols = similarity.shape
    thumbs = images is not None
    fig = plt.figure(figsize=(2.4 + 1.25 * n_cols + (1.1 if thumbs else 0), 1.6 + 0.85 * n_rows), layout="constrained")
    grid = fig.add_gridspec(n_rows, 2 if thumbs else 1, width_ratios=[1, n_cols] if thumbs else [1])
    ax = fig.add_subplot(grid[:, -1])
    norm = PowerNorm(gamma, vmin=0.0, vmax=vmax)
    im = ax.imshow(similarity, cmap="viridis", norm=norm, aspect="auto")
    ax.set_xticks(range(n_cols), [_wrap(c, 16) for c in col_labels], rotation=30, ha="right", fontsize=9)
    ax.set_yticks(range(n_rows), [_wrap(r, 20, 2) for r in row_labels], fontsize=9)
    ax.set_xlabel("text")
    ax.set_ylabel("image")
    if thumbs:  # the thumbnails sit on the left, so the image names (and the axis name) move to the right
        ax.yaxis.tick_right()
        ax.yaxis.set_label_position("right")
    for i in range(n_rows):
        for j in range(n_cols):
            value = similarity[i, j]
            ax.text(j, i, "0" if value == 0 else format(value, fmt), ha="center", va="center", fontsize=9,
                    color="white" if norm(value) < 0.6 else "black")
        if np.isfinite(similarity[i]).any() and similarity[i].max() > 0:
            best = int(np.argmax(similarity[i]))
            ax.add_patch(Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", lw=2))
    if thumbs:
        for i, item in enumerate(images):
            thumb_ax = fig.add_subplot(grid[i, 0])
            thumb_ax.imshow(_as_image(item), cmap="gray")
            thumb_ax.axis("off")
    ax.set_title(title)
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, location="left" if not thumbs else "right")
    bar.set_label(f"score (fixed scale 0–{vmax:g})")
    return fig
