"""Shared pieces of the figures: image grids (``show_images``, ``show_pixels``) and small helpers."""
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


def show_pixels(pixels, titles=None, n: int = 8, suptitle=None):
    """``n`` evenly spaced images of a batch of pixels (n, 3, H, W) in [-1, 1] (``contrastive.image_pixels``:
    what a model trained on raw pixels sees), with their titles."""
    count = len(pixels)
    if not count:
        raise ValueError("show_pixels got no images.")
    shown = np.linspace(0, count - 1, min(n, count)).astype(int)
    fig, axes = plt.subplots(1, len(shown), figsize=(1.5 * len(shown), 1.9), squeeze=False)
    for ax, i in zip(axes[0], shown):
        ax.imshow((np.asarray(pixels[i]).transpose(1, 2, 0) + 1) / 2)
        if titles is not None:
            ax.set_title(str(titles[i])[:18], fontsize=7)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _rows_of(rows):
    return rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)


def _value(row, key) -> float:
    value = row.get(key)
    return float("nan") if value is None else value


def _measured(rows, key) -> bool:
    return any(_value(row, key) == _value(row, key) for row in rows)  # NaN != NaN
