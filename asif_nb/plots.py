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


def plot_risk_coverage(curve, point=None, title="risk-coverage"):
    """Risk (wrong / answered) against coverage (fraction answered) of a ``threshold_curve``; ``point`` (a
    ``threshold_curve`` at one threshold, as floats, with its ``threshold``) is marked."""
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.plot(curve["coverage"], curve["risk"], color="#c0392b")
    if point is not None:
        ax.plot(point["coverage"], point["risk"], "ko", label=f"t = {point['threshold']:.4f}")
        ax.legend(fontsize=8)
    ax.set(xlabel="coverage (fraction answered)", ylabel="risk (wrong / answered)", xlim=(0, 1), ylim=(0, 1),
           title=title)
    fig.tight_layout()
    return fig


def plot_unknown_rates(in_scores, out_scores, threshold=None, in_label="in distribution",
                       out_label="out of distribution", title="abstention vs threshold", n_points: int = 200):
    """The fraction of each set answered "unknown" (best score below the threshold) as the threshold rises
    from 0 to the largest score: two empirical distribution functions; ``threshold`` is marked."""
    in_scores, out_scores = np.asarray(in_scores, dtype=float).ravel(), np.asarray(out_scores, dtype=float).ravel()
    if not in_scores.size or not out_scores.size:
        raise ValueError("plot_unknown_rates needs at least one score in each set.")
    grid = np.linspace(0, max(in_scores.max(), out_scores.max()), n_points)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for scores, label in ((in_scores, in_label), (out_scores, out_label)):
        ax.plot(grid, (scores[None, :] < grid[:, None]).mean(axis=1), label=f"{label} ({len(scores)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1)
    ax.set(xlabel="threshold on the best score", ylabel="fraction unknown", ylim=(0, 1), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_usage_histogram(counts, title="anchor usage", bins: int = 60):
    """How many anchors are used how often (``memory.usage_counts``), on a log scale: the short tail of the
    anchors a task uses."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(np.asarray(counts), bins=bins, color="C0", log=True)
    ax.set(xlabel="times used (non-zero in a query's top-k)", ylabel="anchors (log scale)", title=title)
    fig.tight_layout()
    return fig


def plot_pruning(rows, used=None, chance=None, title="pruning"):
    """Accuracy against the fraction of anchors kept: ``rows`` (records or a DataFrame) with ``fraction``,
    ``acc_most_used`` and ``acc_random``; ``used``: ``(fraction, accuracy)`` of keeping every used anchor."""
    rows = _rows_of(rows)
    if not rows:
        raise ValueError("plot_pruning got no rows.")
    fraction = [row["fraction"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(fraction, [row["acc_most_used"] for row in rows], "o-", label="keep the most used")
    ax.plot(fraction, [row["acc_random"] for row in rows], "s--", label="keep at random")
    if used is not None:
        ax.plot(*used, "k*", ms=12, label="keep every used anchor")
    if chance is not None:
        ax.axhline(chance, color="grey", lw=1, ls=":", label="chance")
    ax.set(xscale="log", xlabel="fraction of anchors kept", ylabel="accuracy (held-out half)", title=title)
    ax.legend(fontsize=8)
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


def plot_method_curves(rows, methods, colours=("C3", "C1", "C2", "C0"), title=None):
    """Notebook 08's curves: one panel per (eval set, metric) that was measured (top-1 accuracy, then
    image→caption R@1), one line per method against the number of pairs, chance dotted. ``rows``: the records of
    ``contrastive.compare`` (or a DataFrame of them); ``methods`` in legend order, coloured by ``colours``."""
    rows = _rows_of(rows)
    names = list(dict.fromkeys(row["eval"] for row in rows))
    counts = sorted({row["n_pairs"] for row in rows})
    panels = [(name, "acc1", "zero-shot top-1 accuracy") for name in names
              if _measured([r for r in rows if r["eval"] == name], "acc1")]
    panels += [(name, "text_retrieval_recall@1", "image→caption R@1") for name in names
               if _measured([r for r in rows if r["eval"] == name], "text_retrieval_recall@1")]
    if not panels:
        raise ValueError("plot_method_curves: no row has acc1 or text_retrieval_recall@1.")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (name, metric, label) in zip(axes[0], panels):
        of_eval = [r for r in rows if r["eval"] == name]
        for colour, method in zip(colours, methods):
            line = sorted((r["n_pairs"], _value(r, metric)) for r in of_eval if r["method"] == method)
            ax.plot([x for x, _ in line], [y for _, y in line], "o-", color=colour, ms=4, label=method)
        # chance: one class in n_classes; for retrieval, one caption among the set's (one per image)
        chance = of_eval[0]["chance"] if metric == "acc1" else 1 / of_eval[0]["n_images"]
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(counts, [f"{c:,}" for c in counts])
        ax.set(xlabel="number of image–caption pairs", ylabel=label, title=name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or f"Same pairs, same evaluation: {', '.join(methods)}")
    fig.tight_layout()
    return fig


def plot_training_cost(rows, methods, colours=("C3", "C1", "C2", "C0"), seconds_label="wall seconds to train / build",
                       title="Cost of getting a model from n pairs (ASIF: 0 training FLOPs)"):
    """Training (or building) seconds and estimated training FLOPs against the number of pairs, one line per
    method (a method with 0 FLOPs, i.e. no training, is left out of the FLOPs panel). ``rows``: as for
    ``plot_method_curves``; each (method, n) is read from its first row."""
    rows = _rows_of(rows)
    counts = sorted({row["n_pairs"] for row in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for colour, method in zip(colours, methods):
        first = {}
        for row in rows:
            if row["method"] == method:
                first.setdefault(row["n_pairs"], row)
        line = [first[n] for n in sorted(first)]
        xs = [row["n_pairs"] for row in line]
        axes[0].plot(xs, [row["train_seconds"] for row in line], "o-", color=colour, ms=4, label=method)
        if any(row["flops"] for row in line):
            axes[1].plot(xs, [row["flops"] for row in line], "o-", color=colour, ms=4, label=method)
    axes[0].set_ylabel(seconds_label)
    axes[1].set_ylabel("training FLOPs (6·params·tokens)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of pairs")
        ax.grid(alpha=0.3)
        ax.set_xticks(counts, [f"{c:,}" for c in counts])
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
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
