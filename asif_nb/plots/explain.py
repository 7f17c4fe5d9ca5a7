"""The anchors behind one score (notebook 04, the paper's Figure 5), and per-class recall (notebook 04's curation)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from .base import _as_image, _wrap


def plot_explanation(query_image, rows, collection=None, title="", n_show: int = 8, ncols: int = 5,
                     query_title: str = "query"):
    """Figure 5 as a picture: the query image, then the anchors behind one image–text score (``explain``
    rows, largest contribution first), each with its caption and its contribution to the score; at most
    ``n_show`` anchors, ``ncols`` panels a row (captions stay readable at the saved size), the rest summed in one
    line under the panels.

    Anchors are found by their ``id``, never by position (after ``add_pairs`` / ``remove_pairs`` / ``prune`` the
    positions move): a row's own ``caption`` and ``image`` (``Asif.explain`` attaches them) are used as they
    are, else the pair with the row's ``id`` in ``collection`` (``AsifModel.explain`` rows)."""
    rows = list(rows)
    shown, hidden = rows[:n_show], rows[n_show:]
    positions = {}  # the collection's id -> position, built once if a row needs it
    pairs = [_explained_pair(row, collection, positions) for row in shown]
    panels = len(shown) + 1
    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.45 * nrows + (0.45 if title else 0) + 0.2),
                             squeeze=False, layout="constrained")
    axes = list(axes.flat)
    for extra in axes[panels:]:  # no empty panels: fig.axes is the query, then one axes per anchor shown
        fig.delaxes(extra)
    axes = axes[:panels]
    axes[0].imshow(_as_image(query_image), cmap="gray")
    axes[0].set_title(_wrap(query_title, 20, 2), fontsize=9, fontweight="bold")
    for ax, row, (caption, image) in zip(axes[1:], shown, pairs):
        if image is not None:
            ax.imshow(_as_image(image))
        ax.set_title(f"{_wrap(caption, 20, 2)}\n+{row['contribution']:.3f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if not rows:
        axes[0].text(1.1, 0.5, "no shared anchor: score 0", transform=axes[0].transAxes, fontsize=9)
    notes = []
    if hidden:
        notes.append(f"+ {len(hidden)} more shared anchor{'s' if len(hidden) != 1 else ''} adding "
                     f"{sum(row['contribution'] for row in hidden):.3f}")
    if title:
        fig.suptitle(title, fontsize=10)
    if notes:
        fig.supxlabel("; ".join(notes), fontsize=9)
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


def plot_class_recall(report, class_names, after=None, highlight=None, title="recall per class"):
    """Per-class recall of ``curation.class_report`` with its 95 % Wilson interval, the overall accuracy as a
    dashed line; ``after`` (a second report) is drawn beside it; ``highlight`` (a class index) is marked."""
    class_names = list(class_names)
    x = np.arange(len(class_names))
    reports = [("before" if after is not None else "recall", report, "#4c72b0")]
    if after is not None:
        reports.append(("after", after, "#dd8452"))
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * len(class_names) + 1.5), 3.4), layout="constrained")
    for j, (label, data, colour) in enumerate(reports):
        offset = (j - (len(reports) - 1) / 2) * width
        recall = np.asarray(data["recall"], dtype=float)
        error = np.vstack([recall - np.asarray(data["low"]), np.asarray(data["high"]) - recall])
        ax.bar(x + offset, recall, width, yerr=error, capsize=2, color=colour, alpha=0.85,
               label=f"{label} (accuracy {data['accuracy']:.3f})" if len(reports) > 1 else None)
        ax.axhline(data["accuracy"], color=colour, ls="--", lw=1,
                   label=None if len(reports) > 1 else f"accuracy over all classes ({data['accuracy']:.3f})")
    if highlight is not None:
        ax.axvspan(highlight - 0.45, highlight + 0.45, color="#f2d16b", alpha=0.35, lw=0, zorder=0)
    ax.set_xticks(x, [_wrap(name, 12, 2) for name in class_names], rotation=30, ha="right", fontsize=9)
    ax.set_xlabel("true class")
    ax.set_ylabel("recall (95 % Wilson interval)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    return fig
