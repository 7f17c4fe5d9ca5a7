"""What only a memory-based model can do (notebook 07): count which anchors are used, prune the unused ones,
perturb or forget a pair, and store the anchors compressed.

An ASIF model *is* its anchors: N image-caption pairs, stored as two embedding matrices. So

- **editing** is adding or removing rows (``AsifModel.add_pairs`` / ``remove_pairs``, no training);
- **usage** is readable: anchor i is used by a query when it is one of the query's k non-zeros
  (``usage_counts``), and a pair influences a prediction only through the product of its two weights
  (``influence``, the same number ``AsifModel.explain`` reports);
- **pruning** keeps a subset of rows (``prune``, ``most_used``, ``pruning_curve``);
- **compression** stores the rows in fewer bytes (``quantize`` / ``quantize_anchors``): fp16, int8 with one
  scale per row, or product quantisation (Jegou et al., 2010 — the paper's suggestion for scaling up) with
  codebooks learnt by scikit-learn's k-means.

Design: a compressed model is an ordinary ``AsifModel`` built from the *dequantised* anchors, so the whole
core API (classify, explain, add/remove, save) and its exactness rules apply to it unchanged; what storage
would cost is reported beside it (``QuantizedAnchors.nbytes``). ``fp32`` is the lossless format: its model is
an exact copy of the original, bit for bit. This module uses ``AsifModel``'s public methods only
(``anchor_embeddings``, ``from_unit_rows``, ``settings``, ``positions``).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from .metrics import accuracy
from .model import AsifModel

__all__ = ["anchor_embeddings", "usage_counts", "most_used", "prune", "pruning_curve", "influence",
           "perturb_pairs", "quantize", "Quantized", "quantize_anchors", "QuantizedAnchors", "topk_agreement",
           "METHODS"]

METHODS = ("fp32", "fp16", "int8", "pq")


def anchor_embeddings(model: AsifModel) -> tuple[np.ndarray, np.ndarray]:
    """``model.anchor_embeddings()``: the normalised float32 anchors, as copies."""
    _check_model(model)
    return model.anchor_embeddings()


def _check_model(model):
    if not isinstance(model, AsifModel):
        raise ValueError(f"model is a {type(model).__name__}: pass an asif_nb.AsifModel (e.g. asif.model).")


def _with_rows(model: AsifModel, images, texts, keep=None) -> AsifModel:
    """A model with ``model``'s settings over unit-length rows (the pairs at positions ``keep``, else all)."""
    settings = model.settings()
    if keep is not None:
        settings["ids"] = [settings["ids"][i] for i in keep]
    return AsifModel.from_unit_rows(images, texts, **settings)


# ----------------------------------------------------------------------------------------------------
# usage and pruning


def usage_counts(model: AsifModel, image_embeddings=None, text_embeddings=None) -> np.ndarray:
    """How often each anchor is used: (N,) int64, entry i = the number of query rows (images and texts
    together) whose relative representation has anchor i among its non-zeros (its top-k, after clamping).

    This is the paper's "distribution of pairs chosen during inference" over a workload; an anchor with count
    0 played no part in any of its outputs. Pass either or both modalities.
    """
    _check_model(model)
    if image_embeddings is None and text_embeddings is None:
        raise ValueError("usage_counts needs a workload: pass image_embeddings and/or text_embeddings.")
    counts = np.zeros(model.n_pairs, dtype=np.int64)
    if image_embeddings is not None:
        counts += np.bincount(model.encode_image(image_embeddings).indices, minlength=model.n_pairs)
    if text_embeddings is not None:
        counts += np.bincount(model.encode_text(text_embeddings).indices, minlength=model.n_pairs)
    return counts


def most_used(model: AsifModel, counts, n: int) -> list:
    """The ids of the ``n`` most-used pairs (ties: the earlier pair), in the model's order."""
    _check_model(model)
    counts = np.asarray(counts)
    if counts.shape != (model.n_pairs,) or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"counts must be {model.n_pairs} integer usage counts, one per pair "
                         f"(got shape {counts.shape}, dtype {counts.dtype}): use usage_counts(model, ...).")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= model.n_pairs:
        raise ValueError(f"n={n!r} must be an integer in [1, {model.n_pairs}] (how many pairs to keep).")
    keep = np.sort(np.argsort(-counts, kind="stable")[:n])
    return [model.ids[i] for i in keep]


def prune(model: AsifModel, keep_ids) -> AsifModel:
    """A new model made of only the pairs ``keep_ids`` (ids or a boolean mask, see ``AsifModel.positions``;
    kept in the model's order); ``model`` is unchanged. The result is exactly the model built from those pairs
    alone (``remove_pairs`` of the others on a copy). It needs at least k pairs; lower ``model.k`` first
    otherwise. O(N): the ids are looked up once."""
    _check_model(model)
    keep = np.unique(model.positions(keep_ids))
    if len(keep) < model.k:
        raise ValueError(f"keeping {len(keep)} pairs is fewer than k={model.k}: keep more pairs or lower model.k.")
    images, texts = model.anchor_embeddings()
    return _with_rows(model, images[keep], texts[keep], keep)


def pruning_curve(model: AsifModel, counts, image_embeddings, labels, prompt_embeddings, n_templates: int = 1,
                  fractions=(1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03), seed: int = 0) -> list[dict]:
    """Accuracy when only a fraction of the anchors is kept: the most used ones (``most_used`` of ``counts``,
    e.g. ``usage_counts`` over a workload that does not include these images) against as many drawn at random.

    For each fraction f (in (0, 1]) ``max(k, round(f * N))`` pairs are kept; returns one dict per fraction:
    ``kept``, ``fraction`` (kept / N), ``acc_most_used``, ``acc_random`` (``metrics.accuracy``: a tied best
    score is no answer) and ``MB_saved`` (float32 storage of the dropped pairs). The random subsets come from
    one ``numpy.random.default_rng(seed)``, drawn in the order of ``fractions``.
    """
    _check_model(model)
    values = [fractions] if isinstance(fractions, numbers.Real) else list(fractions)
    if not values or any(isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f <= 1 for f in values):
        raise ValueError(f"fractions={fractions!r} must be numbers in (0, 1]: the share of anchors to keep.")
    images, texts = model.anchor_embeddings()
    bytes_per_pair = 4 * (images.shape[1] + texts.shape[1])
    rng = np.random.default_rng(seed)
    rows = []
    for fraction in values:
        n_keep = max(model.k, int(round(fraction * model.n_pairs)))
        subsets = {"most_used": model.positions(most_used(model, counts, n_keep)),
                   "random": np.sort(rng.choice(model.n_pairs, n_keep, replace=False))}
        row = {"kept": n_keep, "fraction": n_keep / model.n_pairs}
        for name, keep in subsets.items():
            pruned = _with_rows(model, images[keep], texts[keep], keep)
            pred, _ = pruned.classify(image_embeddings, prompt_embeddings, n_templates=n_templates)
            row[f"acc_{name}"] = accuracy(pred, labels)
        row["MB_saved"] = (model.n_pairs - n_keep) * bytes_per_pair / 1e6
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------
# one pair's influence, and forgetting it


def influence(model: AsifModel, pair_id, image_embeddings, prompt_embeddings, n_templates: int = 1):
    """How much one pair contributes to each image's zero-shot prediction (the authors' "max" rule).

    Returns ``(pred, contribution)``: the predictions ``model.classify`` makes (-1: no answer, a tied best
    score), and per image the pair's image weight times its text weight in the best prompt of the predicted
    class — the ``contribution`` that ``model.explain(image, that prompt)`` lists for this pair. 0 means the
    pair did not take part in that prediction (it is not among the non-zeros of both representations, or
    there is no prediction).
    """
    _check_model(model)
    if isinstance(pair_id, (list, tuple, np.ndarray)):
        raise ValueError(f"pair_id={pair_id!r}: pass one id from model.ids.")
    column = int(model.positions(pair_id)[0])
    pred, _ = model.classify(image_embeddings, prompt_embeddings, n_templates=n_templates)
    images = model.encode_image(image_embeddings)
    prompts = model.encode_text(prompt_embeddings)
    # the best template of each image's predicted class: the prompt whose score classify took
    scores = (images @ prompts.T).toarray()
    answered = pred >= 0
    candidates = np.maximum(pred, 0)[:, None] * n_templates + np.arange(n_templates)[None, :]
    best_prompt = candidates[np.arange(len(pred)), np.take_along_axis(scores, candidates, 1).argmax(axis=1)]
    image_weight = images[:, column].toarray().ravel()
    prompt_weight = prompts[:, column].toarray().ravel()[best_prompt]
    return pred, np.where(answered, image_weight * prompt_weight, 0).astype(np.float32)


def perturb_pairs(model: AsifModel, pair_ids, seed: int = 0) -> AsifModel:
    """A copy of ``model`` in which the named pairs' two embeddings are replaced by random unit vectors —
    same positions, same ids; every other anchor keeps its exact stored bits.

    The unlearning check of notebook 07: outputs that change under this perturbation depend on those pairs;
    after ``remove_pairs(pair_ids)`` on both models, no output may differ by a single bit.
    """
    _check_model(model)
    rows = model.positions(pair_ids)
    if not rows.size:
        raise ValueError("pair_ids is empty: it names no pair of this model; pass ids from model.ids.")
    images, texts = model.anchor_embeddings()
    rng = np.random.default_rng(seed)
    for matrix in (images, texts):
        noise = rng.standard_normal((len(rows), matrix.shape[1]))
        matrix[rows] = (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)
    return _with_rows(model, images, texts)


# ----------------------------------------------------------------------------------------------------
# compressed anchors


@dataclass
class Quantized:
    """Embeddings stored in a compact format. ``dequantize()`` gives the float32 rows they stand for;
    ``nbytes`` is what storing them takes (codes, scales and codebooks together)."""

    method: str
    shape: tuple[int, int]
    codes: np.ndarray  # fp32/fp16: the values; int8: int8 values; pq: uint8 centroid index per sub-vector
    scales: np.ndarray | None = None  # int8: one float32 scale per row
    codebooks: list | None = None  # pq: per sub-vector, (n_centroids, sub_dim) float32 centroids
    splits: list | None = None  # pq: the dimension ranges of the sub-vectors

    @property
    def nbytes(self) -> int:
        total = self.codes.nbytes
        if self.scales is not None:
            total += self.scales.nbytes
        if self.codebooks is not None:
            total += sum(book.nbytes for book in self.codebooks)
        return int(total)

    def dequantize(self) -> np.ndarray:
        if self.method in ("fp32", "fp16"):
            return self.codes.astype(np.float32)
        if self.method == "int8":
            return self.codes.astype(np.float32) * self.scales[:, None]
        out = np.empty(self.shape, dtype=np.float32)
        for j, ((start, stop), book) in enumerate(zip(self.splits, self.codebooks)):
            out[:, start:stop] = book[self.codes[:, j]]
        return out


def _codebook(sample, n_centroids, n_iter, seed):
    """k-means centroids (n_centroids, dims) of the rows of ``sample`` (scikit-learn, k-means++ start)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_centroids, n_init=1, max_iter=n_iter, random_state=seed).fit(sample) \
        .cluster_centers_.astype(np.float32)


def _nearest(x, centroids, rows_per_step=65536):
    """Index of the nearest centroid of each row of ``x``, in steps of rows (bounded memory)."""
    lengths = (centroids * centroids).sum(1)[None, :]  # |x|^2 is the same for every centroid of a row
    return np.concatenate([(lengths - 2 * x[s:s + rows_per_step] @ centroids.T).argmin(axis=1)
                           for s in range(0, len(x), rows_per_step)])


def quantize(embeddings, method: str = "int8", *, dims_per_code: int = 8, n_centroids: int = 256,
             n_iter: int = 10, train_rows: int = 50_000, seed: int = 0) -> Quantized:
    """Store the rows of ``embeddings`` (n, d) compactly.

    - ``fp32``: as they are (4 bytes a value) — the lossless reference;
    - ``fp16``: half precision (2 bytes a value);
    - ``int8``: one byte a value, ``round(x / s)`` with a per-row scale ``s = max|x_row| / 127`` (+4 bytes a row);
      the error per value is at most ``s / 2``;
    - ``pq``: product quantisation — cut each row into sub-vectors of ``dims_per_code`` dimensions, learn
      ``n_centroids`` (<= 256) centroids per sub-vector position by k-means over the rows, store one byte
      (the nearest centroid) per sub-vector, plus the codebooks. The centroids are learnt (scikit-learn's
      ``KMeans``, at most ``n_iter`` steps) on at most ``train_rows`` rows drawn at random, as FAISS does, so
      1.6M anchors cost no more to train on than 50k; every row is then coded. Deterministic for a ``seed``.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: use one of {METHODS}.")
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.size == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"embeddings has shape {x.shape} and dtype {x.dtype}: pass a non-empty 2-D float array.")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("embeddings contains NaN or inf: fix the encoder output before quantising.")
    if method == "fp32":
        return Quantized(method, x.shape, x.copy())
    if method == "fp16":
        if np.abs(x).max() > np.finfo(np.float16).max:
            raise ValueError("embeddings has values beyond float16's range (65504): normalise the rows first.")
        return Quantized(method, x.shape, x.astype(np.float16))
    if method == "int8":
        peak = np.abs(x).max(axis=1)
        scales = np.where(peak > 0, peak / 127, 1).astype(np.float32)
        codes = np.clip(np.rint(x / scales[:, None]), -127, 127).astype(np.int8)
        return Quantized(method, x.shape, codes, scales=scales)
    for value, name in ((dims_per_code, "dims_per_code"), (n_centroids, "n_centroids"), (n_iter, "n_iter"),
                        (train_rows, "train_rows")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer.")
    if n_centroids > 256:
        raise ValueError(f"n_centroids={n_centroids} does not fit one byte per code: use at most 256.")
    if n_centroids > min(len(x), train_rows):
        raise ValueError(f"n_centroids={n_centroids} is more than the {min(len(x), train_rows)} rows to learn them "
                         f"from: use n_centroids <= {min(len(x), train_rows)}.")
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= train_rows else x[np.sort(rng.choice(len(x), train_rows, replace=False))]
    edges = list(range(0, x.shape[1], dims_per_code)) + [x.shape[1]]
    splits = list(zip(edges[:-1], edges[1:]))
    codes = np.empty((len(x), len(splits)), dtype=np.uint8)
    codebooks = []
    for j, (start, stop) in enumerate(splits):
        book = _codebook(np.ascontiguousarray(sample[:, start:stop]), n_centroids, n_iter, seed)
        codes[:, j] = _nearest(np.ascontiguousarray(x[:, start:stop]), book)
        codebooks.append(book)
    return Quantized(method, x.shape, codes, codebooks=codebooks, splits=splits)


@dataclass
class QuantizedAnchors:
    """A model's anchors stored in one format, and the ``AsifModel`` they give back.

    ``model`` is an ordinary AsifModel over the dequantised anchors (same ids, k, p, settings), so every core
    function and exactness rule applies to it; ``images`` / ``texts`` hold the stored codes.
    """

    method: str
    model: AsifModel
    images: Quantized
    texts: Quantized

    @property
    def nbytes(self) -> int:
        """Bytes the stored anchors take (both modalities; codebooks and scales included)."""
        return self.images.nbytes + self.texts.nbytes

    @property
    def bytes_per_pair(self) -> float:
        return self.nbytes / self.model.n_pairs


def quantize_anchors(model: AsifModel, method: str = "int8", **options) -> QuantizedAnchors:
    """Store the model's (normalised) anchors in ``method`` (see ``quantize``; ``options`` go to it) and build
    the model those stored anchors give. ``fp32`` returns an exact copy of ``model``; for the lossy formats the
    dequantised rows are normalised again by ``AsifModel``, as any embeddings are. ``model`` is unchanged.
    """
    _check_model(model)
    images, texts = model.anchor_embeddings()
    stored_images, stored_texts = quantize(images, method, **options), quantize(texts, method, **options)
    if method == "fp32":
        rebuilt = _with_rows(model, stored_images.dequantize(), stored_texts.dequantize())
    else:
        rebuilt = AsifModel(stored_images.dequantize(), stored_texts.dequantize(), **model.settings())
    return QuantizedAnchors(method, rebuilt, stored_images, stored_texts)


def topk_agreement(reference, other) -> float:
    """How well ``other``'s relative representations keep ``reference``'s non-zeros: the fraction of each
    reference row's non-zero anchors that are also non-zero in the same row of ``other``, averaged over the
    rows with any non-zero. Both are (n, N) sparse matrices over the same anchors (e.g. ``encode_image`` of
    the same queries by an fp32 model and a compressed one). 1.0 = the same top-k sets."""
    reference, other = scipy.sparse.csr_matrix(reference), scipy.sparse.csr_matrix(other)
    if reference.shape != other.shape:
        raise ValueError(f"reference has shape {reference.shape} but other has {other.shape}: compare the "
                         "representations of the same queries over the same anchors.")
    kept = reference.astype(bool).multiply(other.astype(bool))
    sizes = reference.getnnz(axis=1)
    rows = sizes > 0
    if not rows.any():
        raise ValueError("reference has no non-zero entries: there is no top-k to agree with.")
    return float(np.mean(kept.getnnz(axis=1)[rows] / sizes[rows]))
