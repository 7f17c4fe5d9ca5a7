"""The image-text similarity heatmap (notebook 03)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .base import _as_image, _wrap


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
