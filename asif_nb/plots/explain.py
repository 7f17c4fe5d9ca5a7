"""The anchors behind one score (notebook 04, the paper's Figure 5)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from .base import _as_image, _wrap


def plot_explanation(query_image, rows, collection=None, title="", n_show: int = 8):
    """Figure 5 as a picture: the query image, then the anchors behind one image–text score (``explain``
    rows), each with its caption and its contribution to the score.

    Anchors are found by their ``id``, never by position (after ``add_pairs`` / ``remove_pairs`` / ``prune`` the
    positions move): a row's own ``caption`` and ``image`` (``Asif.explain`` attaches them) are used as they
    are, else the pair with the row's ``id`` in ``collection`` (``AsifModel.explain`` rows)."""
    rows = list(rows)[:n_show]
    positions = {}  # the collection's id -> position, built once if a row needs it
    pairs = [_explained_pair(row, collection, positions) for row in rows]
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(2.1 * (len(rows) + 1), 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(_as_image(query_image), cmap="gray")
    axes[0].set_title("query", fontsize=9)
    for ax, row, (caption, image) in zip(axes[1:], rows, pairs):
        if image is not None:
            ax.imshow(_as_image(image))
        ax.set_title(f"{_wrap(caption, 20, 2)}\n+{row['contribution']:.3f}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    if not rows:
        axes[0].text(1.1, 0.5, "no shared anchors: score 0", transform=axes[0].transAxes)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _explained_pair(row, collection, positions):
    """``(caption, image)`` of one ``explain`` row, looked up by the row's ``id``."""
    if "caption" in row:  # Asif.explain: None where the collection does not hold the pair
        caption = row["caption"] if row["caption"] is not None else f"id {row.get('id')!r}: not in the collection"
        return caption, row.get("image")
    if "id" not in row:
        raise ValueError("explain rows need their anchor's 'id' (AsifModel.explain and Asif.explain give it): "
                         "anchors are looked up by id, since positions move when pairs are added or removed.")
    if collection is None:
        raise ValueError(f"row for anchor id {row['id']!r} has no caption: pass the collection the model's pairs came "
                         "from (plot_explanation(image, rows, collection)), or rows from Asif.explain.")
    if not positions:
        positions.update((pair_id, i) for i, pair_id in enumerate(collection.ids))
    if row["id"] not in positions:
        raise ValueError(f"anchor id {row['id']!r} is not in the collection {getattr(collection, 'name', '')!r}: pass "
                         "the collection the model's pairs came from, and build the model with "
                         "ids=list(collection.ids) so that its anchors can be found.")
    pair = collection[positions[row["id"]]]
    return pair.caption, pair.image
