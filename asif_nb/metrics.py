"""Evaluation metrics, computed as CLIP_benchmark reports them (numpy only).

- the suite's one tie rule: ``predict(scores)`` answers the class of the unique best score, and -1 (no
  answer) when several classes share the best score — a row of all-equal scores included, e.g. all 0 when a
  query shares no anchor with any prompt. ``accuracy`` counts -1 as wrong. Every accuracy the suite reports
  (``AsifModel.classify``, ``sweep``, ``threshold_curve``, ``memory``, ``evaluate``) goes through it, and
  ``accuracy_topk(..., ties="worst")["acc1"]`` is the same number;
- zero-shot classification: ``acc1``, ``acc5`` (top-k accuracy) and ``mean_per_class_recall`` (balanced
  accuracy: the recall of each class present in the labels, averaged over those classes);
- image–text retrieval: ``image_retrieval_recall@k`` (a text queries the images) and
  ``text_retrieval_recall@k`` (an image queries the texts): the fraction of queries with at least one correct
  answer among their k best-scored candidates.

Ties. Sparse ASIF representations give many exactly equal scores (often 0), so tie handling is part of the
definition. ``ties="worst"`` (the default, the suite's one rule) ranks a correct candidate after every candidate
tied with it, so a query whose scores are all equal never counts as a hit by luck of its index. ``ties="first"``
ranks tied candidates by index, lowest first, as a stable ``argsort(-scores)`` does and as CLIP_benchmark's
``argmax``/``topk`` usually do: offered to compare with such harnesses, never used for a number the suite reports.

Every function accepts numpy arrays, torch CPU tensors or scipy sparse matrices (anything with ``toarray``).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

_TIES = ("first", "worst")
_BLOCK = 2048  # rows per block, so the (rows × candidates) comparisons stay small in memory


def predict(scores) -> np.ndarray:
    """The class each row of ``scores`` (n, n_classes) answers, (n,) int64: the index of its best score, or -1
    when that best score is shared by several classes (no answer: a tie is never settled by class index).
    A row whose scores are all equal — all 0 when a query shares no anchor with any prompt — is such a tie."""
    scores = _matrix(scores, "scores")
    pred = np.empty(scores.shape[0], dtype=np.int64)
    for start in range(0, scores.shape[0], _BLOCK):
        block = scores[start:start + _BLOCK]
        best = block.max(axis=1, keepdims=True)
        tied = (block == best).sum(axis=1) > 1
        pred[start:start + _BLOCK] = np.where(tied, -1, block.argmax(axis=1))
    return pred


def accuracy(scores_or_pred, labels) -> float:
    """Top-1 accuracy under the tie rule of ``predict``: ``scores_or_pred`` is scores (n, n_classes) or
    predictions (n,) where -1 means no answer (as ``AsifModel.classify`` returns them); -1 is never right."""
    if hasattr(scores_or_pred, "toarray"):
        scores_or_pred = scores_or_pred.toarray()
    values = np.asarray(scores_or_pred)
    if values.ndim == 2:
        pred = predict(values)
    elif values.ndim == 1 and (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
        pred = values.astype(np.int64)
    else:
        raise ValueError(f"scores_or_pred has shape {values.shape} and dtype {values.dtype}: pass scores "
                         "(n, n_classes) or integer predictions (n,), -1 meaning no answer.")
    labels = _labels(labels, len(pred), None, "labels")
    return float(np.mean(pred == labels))


def threshold_curve(scores, labels, thresholds=None) -> dict:
    """The unknown-token trade-off (paper §4, "Uncertainty") of class ``scores`` (n, n_classes).

    At threshold t a query is answered with its class (``predict``) when its best score is >= t; it is
    "unknown" when the best score is below t or shared by several classes (``classify`` returns -1 for both).
    Returns a dict of numpy arrays, one entry per threshold: ``threshold``; ``accuracy``, ``unknown``, ``wrong``
    (fractions of all queries, summing to 1); ``coverage`` (answered fraction) and ``risk`` (wrong / answered;
    NaN where nothing is answered). Default thresholds: every distinct best score, then +inf (nothing answered).
    """
    scores = _matrix(scores, "scores")
    labels = np.asarray(labels)
    if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {scores.shape[0]} integer class indices, one per row of scores "
                         f"(got shape {labels.shape}, dtype {labels.dtype}).")
    best = scores.max(axis=1).astype(np.float64)
    pred = predict(scores)
    if thresholds is None:
        thresholds = np.append(np.unique(best), np.inf)
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    if thresholds.size == 0 or np.isnan(thresholds).any():
        raise ValueError("thresholds must be a non-empty sequence of numbers (or None for every distinct score).")
    answered = (best[None, :] >= thresholds[:, None]) & (pred >= 0)[None, :]
    correct = pred == labels
    n = scores.shape[0]
    right = (answered & correct).sum(axis=1) / n
    wrong = (answered & ~correct).sum(axis=1) / n
    coverage = answered.sum(axis=1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(coverage > 0, wrong / coverage, np.nan)
    return {"threshold": thresholds, "accuracy": right, "unknown": (~answered).sum(axis=1) / n, "wrong": wrong,
            "coverage": coverage, "risk": risk}


def accuracy_topk(scores, labels, k: int | Iterable[int] = (1, 5), *, ties: str = "worst") -> dict[str, float]:
    """Top-k accuracy: the fraction of samples whose true class is among their k highest-scored classes.

    ``scores`` is (n_samples, n_classes), ``labels`` (n_samples,) integer classes in ``[0, n_classes)``.
    Returns ``{"acc1": ..., "acc5": ...}`` for ``k=(1, 5)``. A k larger than the number of classes is clipped to
    it (so it gives 1.0), where CLIP_benchmark reports NaN for acc5 with fewer than 5 classes.
    With ``ties="worst"``, ``acc1`` is ``accuracy(scores, labels)``: the suite's tie rule (``predict``).
    """
    scores = _scores(scores, "scores")
    labels = _labels(labels, scores.shape[0], scores.shape[1], "labels")
    ks = _ks(k)
    ranks = _rank_of_true_class(scores, labels, ties)
    return {f"acc{kk}": float(np.mean(ranks < min(kk, scores.shape[1]))) for kk in ks}


def mean_per_class_recall(scores_or_pred, labels, n_classes: int | None = None, *, ties: str = "worst") -> float:
    """Balanced accuracy, as sklearn's ``balanced_accuracy_score`` that CLIP_benchmark calls.

    ``scores_or_pred`` is either scores (n_samples, n_classes) or predicted classes (n_samples,), where a
    prediction of -1 means "unknown" and counts as wrong. The recall of each class that occurs in ``labels``
    is averaged over those classes; classes absent from ``labels`` are left out (their recall is undefined).
    ``n_classes``, when given, is checked against the labels and predictions.
    """
    return float(np.nanmean(_per_class_recall(scores_or_pred, labels, n_classes, ties)))


def classification_report(scores, labels, class_names: Sequence[str], *, ties: str = "worst") -> dict:
    """The three CLIP_benchmark classification numbers plus each class's recall.

    Returns ``{"acc1", "acc5", "mean_per_class_recall", "per_class_recall"}`` where ``per_class_recall`` is a
    list aligned with ``class_names`` (NaN for a class that never occurs in ``labels``).
    """
    scores = _scores(scores, "scores")
    if len(class_names) != scores.shape[1]:
        raise ValueError(
            f"class_names has {len(class_names)} names but scores has {scores.shape[1]} columns: pass one name per class."
        )
    report = accuracy_topk(scores, labels, (1, 5), ties=ties)
    per_class = _per_class_recall(scores, labels, scores.shape[1], ties)
    report["mean_per_class_recall"] = float(np.nanmean(per_class))
    report["per_class_recall"] = [float(value) for value in per_class]
    return report


def retrieval_recall(similarity, positives, k: int | Iterable[int] = (1, 5), *, ties: str = "worst") -> dict[str, float]:
    """Image↔text retrieval recall@k, as CLIP_benchmark's ``zeroshot_retrieval`` reports it.

    ``similarity`` is (n_images, n_texts), e.g. ``ri @ rt.T``. ``positives[j]`` names the image(s) that text j
    describes: an index, or a list of indices. A query is a hit when at least one of its correct candidates is
    among its k best: ``image_retrieval_recall@k`` averages over texts (each retrieves images),
    ``text_retrieval_recall@k`` over images (each retrieves texts). An image that no text describes has no
    correct answer and is left out of the text-retrieval average. k is clipped to the number of candidates.
    """
    similarity = _scores(similarity, "similarity")
    n_images, n_texts = similarity.shape
    if len(positives) != n_texts:
        raise ValueError(
            f"positives has {len(positives)} entries but similarity has {n_texts} text columns: "
            "give the matching image index (or indices) of every text."
        )
    pairs = np.zeros((n_texts, n_images), dtype=bool)
    for text, images in enumerate(positives):
        images = np.atleast_1d(np.asarray(images))
        if images.size == 0 or not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() >= n_images:
            raise ValueError(
                f"positives[{text}]={positives[text]!r}: each text needs at least one image index in [0, {n_images})."
            )
        pairs[text, images] = True
    ks = _ks(k)
    text_ranks = _best_positive_rank(similarity.T, pairs, ties)  # texts query images
    described = pairs.any(axis=0)
    image_ranks = _best_positive_rank(similarity[described], pairs.T[described], ties)  # images query texts
    metrics = {}
    for kk in ks:
        metrics[f"image_retrieval_recall@{kk}"] = float(np.mean(text_ranks < min(kk, n_images)))
        metrics[f"text_retrieval_recall@{kk}"] = float(np.mean(image_ranks < min(kk, n_texts)))
    return metrics


# ------------------------------------------------------------------------------------------------ helpers

def _best_positive_rank(scores: np.ndarray, positive: np.ndarray, ties: str) -> np.ndarray:
    """For each row, the 0-based rank of its best-ranked positive column (rank 0 = the top candidate)."""
    _check_ties(ties)
    n_rows, n_cols = scores.shape
    best = np.empty(n_rows, dtype=np.int64)
    index = np.arange(n_cols)
    for start in range(0, n_rows, _BLOCK):
        block, pos = scores[start:start + _BLOCK], positive[start:start + _BLOCK]
        # The best positive is the highest-scored one, lowest index among equals (which also ranks best under "first").
        masked = np.where(pos, block, -np.inf)
        column = np.argmax(masked, axis=1)
        lost = ~pos[np.arange(len(block)), column]  # every positive scored -inf: the first of them is the best
        column[lost] = np.argmax(pos[lost], axis=1)
        value = masked[np.arange(len(block)), column][:, None]
        ahead = block > value
        tied = block == value
        if ties == "first":
            ahead |= tied & (index[None, :] < column[:, None])
        else:
            # Pessimistic: every tied negative goes ahead of the positive; tied positives do not.
            ahead |= tied & ~pos
        best[start:start + _BLOCK] = ahead.sum(axis=1)
    return best


def _rank_of_true_class(scores: np.ndarray, labels: np.ndarray, ties: str) -> np.ndarray:
    positive = np.zeros(scores.shape, dtype=bool)
    positive[np.arange(len(labels)), labels] = True
    return _best_positive_rank(scores, positive, ties)


def _per_class_recall(scores_or_pred, labels, n_classes, ties) -> np.ndarray:
    if hasattr(scores_or_pred, "toarray"):
        scores_or_pred = scores_or_pred.toarray()
    values = np.asarray(scores_or_pred)
    if values.ndim == 2:
        values = _scores(values, "scores_or_pred")
        if n_classes is not None and n_classes != values.shape[1]:
            raise ValueError(f"n_classes={n_classes} but scores have {values.shape[1]} columns: they must agree.")
        n_classes = values.shape[1]
        labels = _labels(labels, values.shape[0], n_classes, "labels")
        correct = _rank_of_true_class(values, labels, ties) == 0
    elif values.ndim == 1:
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError("scores_or_pred: 1-D predictions must be integer classes (-1 for unknown).")
        pred = values.astype(np.int64)
        labels = _labels(labels, len(pred), n_classes, "labels")
        if n_classes is None:
            n_classes = int(max(labels.max(), pred.max(initial=-1))) + 1
        if pred.size and (pred.min() < -1 or pred.max() >= n_classes):
            raise ValueError(f"scores_or_pred: predictions must lie in [-1, {n_classes}); -1 means unknown.")
        correct = pred == labels
    else:
        raise ValueError(f"scores_or_pred has shape {values.shape}: pass scores (n, n_classes) or predictions (n,).")
    support = np.bincount(labels, minlength=n_classes).astype(float)
    hits = np.bincount(labels[correct], minlength=n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / support, np.nan)


def _matrix(values, name: str) -> np.ndarray:
    """A non-empty 2-D float array without NaN, kept in its float dtype (float32 scores stay float32)."""
    if hasattr(values, "toarray"):
        values = values.toarray()
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} has shape {array.shape}: pass a non-empty (n, n_classes) matrix, e.g. the "
                         "scores from classify.")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN: pass the scores returned by classify.")
    return array


def _scores(values, name: str) -> np.ndarray:
    if hasattr(values, "toarray"):  # scipy sparse, e.g. ri @ rt.T
        values = values.toarray()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {array.shape}.")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN: ranks are undefined; check the embeddings for empty inputs.")
    return array


def _labels(labels, n_samples: int, n_classes: int | None, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n_samples,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({n_samples},): one class per sample.")
    if n_samples == 0:
        raise ValueError(f"{name} is empty: there is nothing to evaluate.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}.")
    upper = n_classes if n_classes is not None else np.inf
    if array.min() < 0 or array.max() >= upper:
        raise ValueError(f"{name} must lie in [0, {n_classes}), got values from {array.min()} to {array.max()}.")
    return array.astype(np.int64)


def _ks(k) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    if not ks or any(not isinstance(kk, (int, np.integer)) or kk < 1 for kk in ks):
        raise ValueError(f"k={k!r}: give a positive integer or a tuple of them, e.g. k=(1, 5).")
    return tuple(int(kk) for kk in ks)


def _check_ties(ties: str) -> None:
    if ties not in _TIES:
        raise ValueError(f"ties={ties!r}: use 'first' (stable, lowest index first) or 'worst' (pessimistic).")


# ------------------------------------------------------------------------------------------------ abstention

def auroc(in_scores, out_scores) -> float:
    """The area under the ROC curve of a score that should be higher in distribution than out of it: the
    probability that a random in-distribution sample scores above a random out-of-distribution one, a tie
    counting one half (the Mann–Whitney U statistic over ``len(in) * len(out)``). 1 separates perfectly, 0.5 is
    chance. Exact for any number of ties; O((n + m) log m) time, O(n + m) memory.

    ``in_scores`` / ``out_scores``: 1-D, non-empty, finite (e.g. each query's best class score).
    """
    inside, outside = _scores_1d(in_scores, "in_scores"), _scores_1d(out_scores, "out_scores")
    ordered = np.sort(outside)
    below = np.searchsorted(ordered, inside, side="left")       # out-scores strictly below each in-score
    tied = np.searchsorted(ordered, inside, side="right") - below
    pairs = float(len(inside) * len(outside))
    return float(below.sum() / pairs + 0.5 * (tied.sum() / pairs))


def _scores_1d(values, name: str) -> np.ndarray:
    if hasattr(values, "toarray"):
        values = values.toarray()
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must hold numbers (one score per sample), got dtype {array.dtype}.")
    array = array.astype(np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {array.shape}: pass one score "
                         "per sample, e.g. scores.max(axis=1).")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite scores: the ranking is undefined; check the embeddings.")
    return array


def wilson_interval(successes, n, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (95 % for z = 1.96): the error bar of an
    accuracy measured on few images (20, 127, 500), honest near 0 and 1 where the normal approximation is not."""
    successes, n = float(successes), float(n)
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n > 0 (got {successes:g} of {n:g}).")
    phat = successes / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
