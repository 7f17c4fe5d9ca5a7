"""The ASIF model (paper §2, "ASIF recipe" and "Salient hyperparameters").

An ASIF model is N anchor pairs: row i of ``anchor_images`` (N, d1) and row i of ``anchor_texts`` (N, d2)
are the two unimodal embeddings of one image-caption pair. An input is represented by its cosine
similarities to the N anchors of its own modality, sparsified and sharpened:

    1. cosine similarity to every anchor (inputs and anchors are L2-normalised),
    2. keep the k largest per row (ties: the lowest anchor index wins),
    3. set kept negative values to 0 (``clamp_negative``, as the authors' evaluation does), raise them to p,
    4. L2-normalise the row.

Images and texts then live in the same N-dimensional space and are compared by a dot product.

Negative similarities. The authors' evaluation function (``zero_shot_classification`` in their relreps.py)
merges each chunk's top-k into a buffer that starts at zeros, so a negative similarity loses to a zero slot
and is dropped: that is ``clamp_negative=True``. Only their bare primitives (``relative_represent``,
``sparsify``, ``normalize_sparse``) keep negative similarities and raise them to p: ``clamp_negative=False``.

Exactness. The top-k is exact (``topk.py``). Weights are computed per row in anchor order, and two
representations are multiplied by scipy's CSR product, which sums each output over the shared anchors in
increasing anchor order: a score depends on its two rows only. So a result never depends on the batch,
``chunk_size`` or ``memory_budget`` (bit for bit on the CPU; a GPU agrees to float tolerance).
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np
import scipy.sparse
import torch

from . import modelfile
from .checks import (_check_id, _check_ids, check_k, check_p, check_positive_int, check_reduce,  # noqa: F401
                     check_templates)
from .metrics import predict, threshold_curve  # noqa: F401  (threshold_curve lives in metrics; kept importable here)
from .settings import resolve_device
from .topk import Anchors, as_tensor, count_rows, decode_keys, plan, prepare_queries, running_topk

__all__ = ["AsifModel", "relative_representation"]


def __getattr__(name):
    if name == "sweep":  # sweep lives in asif_nb/sweeps.py (which imports this module); kept importable here
        from .sweeps import sweep

        return sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_PRODUCT_BYTES = 64 * 2**20  # dense score rows computed at a time in a product


# ----------------------------------------------------------------------------------------------------
# the recipe: kept similarities -> weights -> sparse rows; products


def by_index(keys):
    """(similarities, anchor indices) of the keys of each row, sorted by anchor index: the L2 norm sums the
    row, and a float sum depends on its order, so the order is fixed."""
    values, index = decode_keys(keys)
    # one integer sort moves each similarity (its bits in the low half) along with its index (< 2**31)
    packed = (index << 32) | values.view(np.uint32).astype(np.int64)
    packed.sort(axis=1)
    return (packed & 0xFFFFFFFF).astype(np.uint32).view(np.float32), packed >> 32


def scaled(values, index, clamp_negative, n_anchors):
    """What every p starts from: the kept similarities (``by_index``), negative ones set to 0 when
    ``clamp_negative``, divided by the row's largest magnitude (so that v**p cannot underflow where the row's
    largest value does not), and the anchor indices in the CSR index type."""
    if clamp_negative:
        values = np.maximum(values, np.float32(0))
    peak = np.abs(values).max(axis=1, keepdims=True)
    return values / np.where(peak > 0, peak, np.float32(1)), index.astype(np.int32 if n_anchors < 2**31 else np.int64)


def to_csr(values, index, p, n_anchors):
    """The representation as scipy CSR (n, n_anchors) float32 from ``scaled`` similarities: raised to p and
    L2-normalised (the division by the peak cancels out); zeros are not stored."""
    weights = values ** np.float32(p)
    norm = np.sqrt((weights * weights).sum(axis=1, keepdims=True))
    flat = (weights / np.where(norm > 0, norm, np.float32(1))).ravel()
    stored = flat != 0
    if stored.all():
        data, indices = flat, index.ravel()
        indptr = np.arange(0, flat.size + 1, max(1, values.shape[1]), dtype=np.int64)
    else:
        keep = np.flatnonzero(stored)
        data, indices = flat[keep], index.ravel()[keep]
        indptr = np.concatenate([[0], np.cumsum(stored.reshape(values.shape).sum(axis=1))]).astype(np.int64)
    matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(values.shape[0], n_anchors))
    matrix.has_sorted_indices = True
    return matrix


def _plain_keys(queries, anchors, k, chunk_size, memory_budget):
    """Each query row's exact top-k keys (n, k) by the plain path (``topk.running_topk``), in passes that fit."""
    per_pass, block = plan(queries.shape[0], k, memory_budget)
    return np.concatenate([found for q0 in range(0, queries.shape[0], per_pass)
                           for _, found in running_topk(queries[q0:q0 + per_pass], anchors, k, [anchors.n],
                                                        chunk_size, block)])


def _representation(queries, anchors, k, p, clamp_negative, chunk_size, memory_budget, search=None):
    def plain(rows):
        return _plain_keys(rows, anchors, k, chunk_size, memory_budget)

    keys = plain(queries) if search is None else search.topk_keys(queries, k, plain)
    return to_csr(*scaled(*by_index(keys), clamp_negative, anchors.n), p, anchors.n)


def relative_representation(queries, anchors, k=800, p=8, clamp_negative=True, chunk_size=None,
                            device="auto", memory_budget=None):
    """ASIF's sparse relative representation of ``queries`` (n, d) against ``anchors`` (N, d).

    Returns a ``scipy.sparse.csr_matrix`` (n, N), float32, sorted indices: per row the k largest cosine
    similarities (ties: lowest anchor index), negative ones set to 0 when ``clamp_negative`` (see the module
    docstring), raised to ``p`` and L2-normalised. Zero weights are not stored, so a row holds at most k values
    (none for a query dissimilar to every anchor). ``anchors`` may be a ``numpy.memmap`` or a bundle's
    ``ShardedRows``: it is streamed. ``chunk_size`` (anchors per step, rounded up to whole tiles) and
    ``memory_budget`` (bytes of working memory) change speed and memory only, never the result.
    """
    device = resolve_device(device)
    k, p = check_k(k), check_p(p, clamp_negative)
    chunk_size = check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
    memory_budget = check_positive_int(memory_budget, "memory_budget", "bytes of working memory, e.g. 2**29.")
    anchors = Anchors(anchors, "anchors", device)
    check_k(k, anchors.n)
    queries = prepare_queries(queries, "queries", anchors.dim, device)
    return _representation(queries, anchors, k, p, clamp_negative, chunk_size, memory_budget)


def _class_means(texts, n_classes, n_templates):
    """Per class, the mean of its template rows (class-major order), L2-normalised again."""
    rows = np.arange(n_classes * n_templates)
    average = scipy.sparse.csr_matrix((np.full(rows.size, 1.0 / n_templates, dtype=np.float32),
                                       (rows // n_templates, rows)), shape=(n_classes, rows.size))
    means = (average @ texts).tocsr()
    norms = np.sqrt(np.asarray(means.multiply(means).sum(axis=1)).ravel())
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
    means = (scipy.sparse.diags(scale) @ means).tocsr().astype(np.float32)
    means.sort_indices()
    return means


def class_scores(images, texts, n_templates=1, reduce="max"):
    """Dense float32 (n_images, n_classes) scores of CSR ``images`` against class-major CSR prompt rows
    ``texts``: per class its best template (``max``) or its re-normalised mean template (``mean``). With
    ``n_templates=1`` this is ``images @ texts.T``. Rows go in blocks so that the dense products stay small.

    Every scipy product below adds, for each score, the products of the two rows' weights over their shared
    anchors in increasing anchor order, so a score depends on its two rows only, and the choices below change
    speed, never a bit (measured by benchmarks/bench_model.py, they keep sweep's 96 points cheap): the sparse
    product walks the rows of the side with fewer non-zeros (few prompts: ~5x faster with many anchors);
    where the text rows are dense (k close to N) scipy's sparse x dense product, which adds a 0 for each anchor
    a text lacks (no change to a sum), runs ~10x faster than the sparse one.
    """
    n_classes = texts.shape[0] // n_templates
    if reduce == "mean":
        texts, n_templates = _class_means(texts, n_classes, n_templates), 1
    n_texts, n_anchors = texts.shape
    dense = 8 * texts.nnz >= n_texts * n_anchors and 4 * n_texts * n_anchors <= _PRODUCT_BYTES
    columns = texts.T.toarray() if dense else None
    out = np.empty((images.shape[0], n_classes), dtype=np.float32)
    step = max(1, _PRODUCT_BYTES // (16 * n_texts))
    for r0 in range(0, images.shape[0], step):
        rows = images[r0:r0 + step]
        if dense:
            block = rows @ columns
        elif texts.nnz < rows.nnz:
            block = (texts @ rows.T.tocsr()).T.toarray()
        else:
            columns = texts.T.tocsr() if columns is None else columns
            block = (rows @ columns).toarray()
        out[r0:r0 + step] = np.asarray(block, dtype=np.float32).reshape(len(block), n_classes, n_templates).max(axis=2)
    return out


# ----------------------------------------------------------------------------------------------------
# the model


class AsifModel:
    """A CLIP-shaped model made of N anchor pairs and no training (paper §2).

    ``anchor_images`` (N, d1) and ``anchor_texts`` (N, d2): row i of each is the embedding of one
    image-caption pair (numpy, torch, a ``numpy.memmap`` or a bundle's ``ShardedRows``; float16 works too).
    ``k`` non-zeros per representation, exponent ``p``, ``ids`` (ints or strings, unique; default ``0..N-1``)
    name the pairs in ``explain``, ``remove_pairs`` and ``asif_nb.memory``. Anchors are L2-normalised once
    here into float32 on ``device`` ("auto": the GPU when present); a memmap / ``ShardedRows`` is streamed and
    normalised chunk by chunk (on a GPU, float16 ones are held there as float16). ``chunk_size`` and
    ``memory_budget`` (bytes of working memory per call) trade speed for memory and never change a result.
    """

    def __init__(self, anchor_images, anchor_texts, k=800, p=8, ids=None, clamp_negative=True, chunk_size=None,
                 device="auto", memory_budget=None, *, _unit=False):
        self.device = resolve_device(device)
        self.clamp_negative = bool(clamp_negative)
        k = check_k(k)
        p = check_p(p, self.clamp_negative)
        self.chunk_size = check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
        self.memory_budget = check_positive_int(memory_budget, "memory_budget",
                                                "bytes of working memory, e.g. 2**29.")
        n_images, n_texts = count_rows(anchor_images, "anchor_images"), count_rows(anchor_texts, "anchor_texts")
        if n_images != n_texts:
            raise ValueError(f"anchor_images has {n_images} rows but anchor_texts has {n_texts}: row i of each "
                             "must be the two embeddings of pair i.")
        check_k(k, n_images)
        ids = _check_ids(ids, n_images)
        images = Anchors(anchor_images, "anchor_images", self.device, unit=_unit)
        texts = Anchors(anchor_texts, "anchor_texts", self.device, unit=_unit)
        self._images, self._texts, self._ids, self._k, self._p = images, texts, tuple(ids), k, p
        self._position = {pair_id: i for i, pair_id in enumerate(ids)}
        self._search = {}  # modality -> search backend (with_index); none: the plain path

    @classmethod
    def from_unit_rows(cls, anchor_images, anchor_texts, **settings):
        """A model over anchors that are unit length already (e.g. ``model.anchor_embeddings()``, edited),
        stored as they are: normalising them again would move about half the rows by one float32 ulp.
        Rows whose norm is off by more than 1e-4 are refused. ``settings``: as ``AsifModel(...)``."""
        return cls(anchor_images, anchor_texts, **settings, _unit=True)

    # -- hyperparameters and anchors ------------------------------------------------------------------
    @property
    def k(self):
        """Non-zeros kept per relative representation (1 <= k <= n_pairs)."""
        return self._k

    @k.setter
    def k(self, value):
        self._k = check_k(value, self.n_pairs)

    @property
    def p(self):
        """Exponent applied to the kept similarities (> 0)."""
        return self._p

    @p.setter
    def p(self, value):
        self._p = check_p(value, self.clamp_negative)

    @property
    def n_pairs(self):
        """Number of anchor pairs N."""
        return self._images.n

    @property
    def ids(self):
        """The pair ids, in anchor order (a tuple: ``model.ids[i]`` costs nothing, even in a loop)."""
        return self._ids

    def settings(self):
        """The keyword arguments that rebuild this model's behaviour over other anchors: ``k``, ``p``, ``ids``,
        ``clamp_negative``, ``chunk_size``, ``device``, ``memory_budget``."""
        return {"k": self.k, "p": self.p, "ids": list(self._ids), "clamp_negative": self.clamp_negative,
                "chunk_size": self.chunk_size, "device": self.device, "memory_budget": self.memory_budget}

    def anchor_embeddings(self):
        """The anchors as the model uses them: L2-normalised float32 numpy ``(images (N, d1), texts (N, d2))``,
        row i = pair ``ids[i]``. Copies (a streamed model's are loaded into memory): changing them changes
        nothing in the model."""
        return tuple(half.materialise().cpu().numpy().copy() for half in (self._images, self._texts))

    def positions(self, ids):
        """The anchor rows (0-based, in the model's order) of pair ``ids``: one id, a sequence of ids, or a
        boolean mask with one entry per pair. Floats and bools are not ids; an unknown id is an error."""
        if isinstance(ids, (bool, np.bool_)):
            raise ValueError(f"{ids!r} is not a pair id: pass ids from model.ids, or a boolean mask with one "
                             f"entry per pair ({self.n_pairs}).")
        if isinstance(ids, (str, numbers.Number, np.generic)) or getattr(ids, "ndim", 1) == 0:
            ids = [ids]
        values = ids.tolist() if isinstance(ids, (np.ndarray, torch.Tensor)) else list(ids)
        if values and all(isinstance(v, (bool, np.bool_)) for v in values):
            if len(values) != self.n_pairs:
                raise ValueError(f"a boolean mask of {len(values)} entries: a mask needs one entry per pair "
                                 f"({self.n_pairs}); or pass ids from model.ids.")
            return np.flatnonzero(values)
        values = [_check_id(v, "ids") for v in values]
        unknown = [v for v in values if v not in self._position]
        if unknown:
            raise ValueError(f"ids {unknown[:5]} name no pair of this model: check model.ids.")
        return np.array([self._position[v] for v in values], dtype=np.int64)

    def __repr__(self):
        return (f"AsifModel(n_pairs={self.n_pairs}, k={self.k}, p={self.p:g}, dims=({self._images.dim}, "
                f"{self._texts.dim}), clamp_negative={self.clamp_negative}, device={self.device!r})")

    # -- search backends ---------------------------------------------------------------------------------
    def with_index(self, index="pruned", modality="both", **options):
        """This model with its top-k step going through a search backend (``asif_nb.search``), anchors shared.

        ``index``: ``"pruned"`` (exact, bit for bit: projection bounds skip tiles, ``asif_nb.prune``), ``"reduced"``
        (exact, bit for bit: a float16/bfloat16 pass with a proven error bound then float32 rescoring, only where a
        micro-benchmark says it is faster, ``asif_nb.reduced``), or approximate FAISS indexes ``"ivf-flat"``,
        ``"ivf-sq8"``, ``"ivf-pq"``, ``"hnsw"``, ``"faiss:<index_factory string>"`` (``asif_nb.faiss_index``, needs
        ``pip install "asif_nb[scale]"``); or a dict ``{"image": backend, "text": backend}`` of built ones (e.g.
        ``FaissSearch.load``). ``modality``: "both", "image" or "text" (the other keeps its current step).
        ``options`` go to the backend. Editing the pairs (``add_pairs``/``remove_pairs``) drops the backends.
        """
        if modality not in ("both", "image", "text"):
            raise ValueError(f"modality={modality!r}: use 'both', 'image' or 'text'.")
        from .search import build_search

        halves = {"image": self._images, "text": self._texts}
        wanted = ("image", "text") if modality == "both" else (modality,)
        built = {}
        for half in wanted:
            given = index.get(half) if isinstance(index, dict) else index
            if given is not None:
                built[half] = build_search(given, halves[half], self.k, dict(options))
        twin = copy.copy(self)
        twin._search = {**self._search, **built}
        return twin

    @property
    def index(self):
        """The search backends in use, ``{"image": ..., "text": ...}`` (empty: the plain path for both)."""
        return dict(self._search)

    # -- representations --------------------------------------------------------------------------------
    def _encode(self, x, anchors, name):
        queries = prepare_queries(x, name, anchors.dim, self.device)
        return _representation(queries, anchors, self.k, self.p, self.clamp_negative, self.chunk_size,
                               self.memory_budget, self._search.get(name.split("_")[0]))

    def encode_image(self, image_embeddings):
        """Relative representations (n, N) CSR float32 of image embeddings (n, d1) against the anchor images.
        A 1-D input is one row. At most k values per row, sorted indices; see ``relative_representation``."""
        return self._encode(image_embeddings, self._images, "image_embeddings")

    def encode_text(self, text_embeddings):
        """Relative representations (m, N) CSR float32 of text embeddings (m, d2) against the anchor texts."""
        return self._encode(text_embeddings, self._texts, "text_embeddings")

    def similarity(self, image_embeddings, text_embeddings):
        """Dense (n, m) float32 ``encode_image(images) @ encode_text(texts).T``: cosine of the unit-length
        representations, in [-1, 1] ([0, 1] with clamp_negative)."""
        return class_scores(self.encode_image(image_embeddings), self.encode_text(text_embeddings))

    def classify(self, image_embeddings, prompt_embeddings, n_templates=1, reduce="max", unknown_threshold=None):
        """Zero-shot classification: ``(pred (n,) int64, scores (n, n_classes) float32)``.

        ``prompt_embeddings`` are class-major: class c, template t at row ``c * n_templates + t``.
        ``reduce="max"`` (the authors' rule): a class scores its best template, so the prediction is the
        class of the single best prompt. ``reduce="mean"`` (CLIP's rule): a class scores the similarity to
        the mean of its template representations, L2-normalised again.

        ``pred`` is -1 for "no answer": when the best score is shared by several classes (``metrics.predict``;
        e.g. all scores 0 because the image shares no anchor with any prompt), and, with
        ``unknown_threshold=t``, when the best score is < t (the paper's unknown token). To tell them apart:
        ``metrics.predict(scores) == -1`` marks the ties, ``scores.max(axis=1) < t`` the abstentions.
        """
        n_templates = check_templates(count_rows(prompt_embeddings, "prompt_embeddings"), n_templates)
        reduce = check_reduce(reduce)
        if unknown_threshold is not None and (isinstance(unknown_threshold, bool) or not isinstance(
                unknown_threshold, numbers.Real) or math.isnan(unknown_threshold)):
            raise ValueError(f"unknown_threshold={unknown_threshold!r} must be a number or None.")
        scores = class_scores(self.encode_image(image_embeddings), self.encode_text(prompt_embeddings),
                              n_templates, reduce)
        pred = predict(scores)
        if unknown_threshold is not None:
            pred[scores.max(axis=1) < unknown_threshold] = -1
        return pred, scores

    def explain(self, image_embedding, text_embedding, top=20):
        """The anchors behind one image-text score (Figure 5 of the paper, as data).

        Returns a list of dicts, largest contribution first (ties: lowest anchor): ``id`` (the pair's id: look
        its caption and image up by id, which stays right after ``add_pairs`` / ``remove_pairs`` / pruning),
        ``anchor`` (its current row), ``image_weight`` and ``text_weight`` (its value in each representation)
        and ``contribution`` (their product), for the anchors non-zero in both. All contributions
        (``top=None``) sum to ``similarity(image, text)``; ``top`` keeps the largest ones.
        """
        top = check_positive_int(top, "top", "how many anchors to return, or None for all.")
        image = as_tensor(image_embedding, "image_embedding", allow_1d=True)
        text = as_tensor(text_embedding, "text_embedding", allow_1d=True)
        if image.shape[0] != 1 or text.shape[0] != 1:
            raise ValueError("explain takes one image embedding and one text embedding (1-D or one row): "
                             f"got {image.shape[0]} and {text.shape[0]} rows.")
        ri, rt = self.encode_image(image_embedding), self.encode_text(text_embedding)
        shared, in_image, in_text = np.intersect1d(ri.indices, rt.indices, assume_unique=True,
                                                   return_indices=True)
        image_weight, text_weight = ri.data[in_image], rt.data[in_text]
        contribution = image_weight * text_weight
        order = np.lexsort((shared, -contribution))[:top]
        return [{"id": self._ids[shared[i]], "anchor": int(shared[i]), "image_weight": float(image_weight[i]),
                 "text_weight": float(text_weight[i]), "contribution": float(contribution[i])} for i in order]

    # -- editing ------------------------------------------------------------------------------------------
    def add_pairs(self, anchor_images, anchor_texts, ids=None):
        """Append pairs (rows of each array are one pair's embeddings). ``ids`` must be new and unique;
        None gives the next integers after the largest integer id. A streamed model is loaded into
        memory. Nothing changes if the call fails."""
        n_images, n_texts = count_rows(anchor_images, "anchor_images"), count_rows(anchor_texts, "anchor_texts")
        if n_images != n_texts:
            raise ValueError(f"anchor_images has {n_images} rows but anchor_texts has {n_texts}: pass both "
                             "embeddings of every new pair.")
        if ids is None:
            if any(isinstance(i, str) for i in self._ids):
                raise ValueError("this model has string ids: pass ids for the new pairs.")
            first = max(self._ids, default=-1) + 1
            ids = range(first, first + n_images)
        ids = _check_ids(ids, n_images)
        taken = [i for i in ids if i in self._position]
        if taken:
            raise ValueError(f"ids {taken[:5]} already name pairs of this model: new pairs need new ids.")
        images = Anchors(anchor_images, "anchor_images", self.device)
        texts = Anchors(anchor_texts, "anchor_texts", self.device)
        for new, old in ((images, self._images), (texts, self._texts)):
            if new.dim != old.dim:
                raise ValueError(f"{new.name} has dimension {new.dim} but the model's has {old.dim}: embed "
                                 "with the same encoders.")
        self._replace(torch.cat([self._images.materialise(), images.materialise()]),
                      torch.cat([self._texts.materialise(), texts.materialise()]), self._ids + tuple(ids))

    def remove_pairs(self, ids):
        """Delete pairs by id (one id, a sequence of ids, or a boolean mask with one entry per pair, see
        ``positions``): true unlearning. The rows are dropped into new arrays (no mask, no copy of them is
        kept), so afterwards no output depends on the removed pairs in any way; the model equals one built
        without them. Refuses to leave fewer than k pairs. Nothing changes if the call fails."""
        drop = set(self.positions(ids).tolist())
        left = self.n_pairs - len(drop)
        if left < self.k:
            raise ValueError(f"removing {len(drop)} pairs would leave {left} < k={self.k}: lower model.k first.")
        keep = torch.tensor([i for i in range(self.n_pairs) if i not in drop], dtype=torch.long)
        images, texts = self._images.materialise(), self._texts.materialise()
        self._replace(images[keep.to(images.device)], texts[keep.to(texts.device)],
                      [self._ids[i] for i in keep.tolist()])

    def _replace(self, images, texts, ids):
        self._images = Anchors(images, "anchor_images", self.device, unit=True)
        self._texts = Anchors(texts, "anchor_texts", self.device, unit=True)
        self._ids = tuple(ids)
        self._position = {pair_id: i for i, pair_id in enumerate(self._ids)}
        self._search = {}  # a backend was built over the old anchors

    # -- files --------------------------------------------------------------------------------------------
    def save(self, path):
        """Write the model (normalised float32 anchors, ids, k, p, clamp_negative) atomically, without pickle.
        ``.npz`` gives a numpy archive; any other suffix a safetensors file (ids and settings in its
        metadata). Returns the path."""
        images, texts = self.anchor_embeddings()
        return modelfile.save(path, images, texts, self._ids, self.k, self.p, self.clamp_negative)

    @classmethod
    def load(cls, path, device="auto", chunk_size=None, memory_budget=None):
        """Read a model written by ``save`` (.npz or safetensors). A corrupt, truncated or foreign file gives
        a ValueError saying so."""
        device = resolve_device(device)
        chunk_size = check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
        memory_budget = check_positive_int(memory_budget, "memory_budget", "bytes of working memory, e.g. 2**29.")
        images, texts, settings = modelfile.load(path)
        try:
            return cls.from_unit_rows(images, texts, **settings, device=device, chunk_size=chunk_size,
                                      memory_budget=memory_budget)
        except ValueError as error:  # what the file holds, not the arguments (checked above), is at fault
            raise ValueError(f"{path} holds no usable model ({error}): {modelfile.FIX}.") from error
