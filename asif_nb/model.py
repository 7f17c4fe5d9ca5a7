"""The ASIF model (paper §2, "ASIF recipe" and "Salient hyperparameters"), exact and memory-frugal.

An ASIF model is N anchor pairs: row i of ``anchor_images`` (N, d1) and row i of ``anchor_texts`` (N, d2)
are the two unimodal embeddings of one image-caption pair. An input is represented by its cosine
similarities to the N anchors of its own modality, sparsified and sharpened:

    1. cosine similarity to every anchor (inputs and anchors are L2-normalised),
    2. keep the k largest per row (ties: the lowest anchor index wins),
    3. set kept negative values to 0 (``clamp_negative``; see below), raise them to the exponent p,
    4. L2-normalise the row.

Images and texts then live in the same N-dimensional space and are compared by a dot product.

Exactness. The top-k is exact and deterministic: it orders anchors by (similarity desc, index asc).
Similarities are float32 matrix products, and a BLAS rounds the same dot product differently depending on
the product's shape; so anchors always go in tiles of exactly ``_TILE_ANCHORS`` (zero-padded) and queries
are padded to a multiple of 16 rows. Then a (query, anchor) similarity has the same bits whatever
``chunk_size``, ``memory_budget``, the batch it came in or the prefix of anchors used, so none of these
changes a result (pinned by tests on this machine's MKL; a thread count change could, in principle, too).
Another device (GPU) rounds differently: same results up to float tolerance.

Speed. Anchors are streamed tile by tile; per query we keep a running top-k and its current k-th value
(the threshold). Once k anchors were seen, only similarities strictly above the threshold can enter (an
equal one has a larger index and loses the tie), and after the first few tiles these are rare, so a cheap
max over groups of 64 columns finds them instead of a full top-k per tile. Survivors wait in a pending
buffer and are merged into the running top-k (one ``topk`` over k + pending) when it fills. Memory is
O(anchors + n*(k + pending + one tile)), never an n x N matrix; ``memory_budget`` splits the queries into
several passes when that would not fit.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
import numbers
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from .fileio import atomic_write
from .settings import resolve_device

__all__ = ["AsifModel", "relative_representation", "sweep", "threshold_curve"]

# A BLAS rounds the same dot product differently depending on the shape of the product it sits in: on
# the number of columns (here: anchors) and on whether there are fewer than 8 rows (a matrix-vector path).
# So anchors always go in tiles of exactly _TILE_ANCHORS (the last one zero-padded) and queries are padded to
# a multiple of _ROW_MULTIPLE rows: then a (query, anchor) similarity has the same bits in every call.
_TILE_ANCHORS = 2048
_ROW_MULTIPLE = 16
_ROW_BLOCK = 2048  # query rows per matrix product; any size >= 8 gives the same bits
# Columns per group in the survivor filter: the max over 64 contiguous floats vectorises well.
_GROUP = 64
# Merge the pending survivors once a row holds this many (x k): the raised threshold then lets fewer in.
_MERGE_AT = 0.5
_EMPTY = torch.iinfo(torch.int64).min  # key of an empty top-k slot: below every real key
_LOW32 = 0xFFFFFFFF
_DEFAULT_BUDGET = 256 * 2**20  # bytes of working memory per call, beyond anchors, inputs and output
_DEFAULT_CHUNK_BYTES = 64 * 2**20  # anchors converted / moved to the device per step
_DOT_BLOCK_BYTES = 64 * 2**20  # dense block of text representations in _dot
_MATCH_BLOCK = 2**21  # (image, text, anchor) matches listed at a time in sweep's sparse product (~80 MiB)
# sweep lists the matches itself while there are at most this many per kept image value; beyond, scipy's
# product is faster (measured on the 2-core reference machine: listing 3x faster at 0.8, even at about 5)
_LISTED_MATCHES = 4
_FORMAT = "asif_nb.AsifModel"
_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# argument checks


def _check_k(k, n_anchors=None, name="k"):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{name}={k!r} must be a positive integer (the number of non-zeros kept per row).")
    if n_anchors is not None and k > n_anchors:
        raise ValueError(f"{name}={k} is larger than the number of anchor pairs ({n_anchors}): "
                         f"use k <= {n_anchors} or add pairs.")
    return int(k)


def _check_p(p, clamp_negative):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or p <= 0:
        raise ValueError(f"p={p!r} must be a finite number > 0 (the exponent applied to kept similarities).")
    if not clamp_negative and not float(p).is_integer():
        raise ValueError(f"p={p!r} with clamp_negative=False: a negative similarity raised to a fractional power "
                         "is undefined; use an integer p or clamp_negative=True.")
    return float(p)


def _check_positive_int(value, name, fix):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer or None: {fix}")
    return int(value)


def _check_ids(ids, n, name="ids"):
    """Ids are ints or strings (kept as given, JSON-serialisable), unique; None means 0..n-1."""
    if ids is None:
        return list(range(n))
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of ids, one per pair, not a single string.")
    ids = list(ids.tolist() if isinstance(ids, (np.ndarray, torch.Tensor)) else ids)
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} entries but there are {n} pairs: pass one id per pair.")
    clean = []
    for i in ids:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (numbers.Integral, str)):
            raise ValueError(f"{name} entry {i!r} is a {type(i).__name__}: ids must be ints or strings.")
        clean.append(i if isinstance(i, str) else int(i))
    if len(set(clean)) != len(clean):
        seen, dup = set(), None
        for i in clean:
            if i in seen:
                dup = i
                break
            seen.add(i)
        raise ValueError(f"{name} contains {dup!r} more than once: ids must be unique.")
    return clean


def _as_tensor(x, name, allow_1d=False):
    """A 2-D real tensor view of numpy / memmap / torch / nested-list input (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        array = np.asarray(x)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.floating)
                                         or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{name} has dtype {array.dtype}: pass real-valued embeddings (float32 is best).")
        if not array.flags.writeable:  # e.g. a read-only memmap: torch wants memory it may write
            array = array.copy()
        t = torch.from_numpy(np.ascontiguousarray(array))
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {t.dtype}: pass real-valued embeddings.")
    if allow_1d and t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise ValueError(f"{name} has shape {tuple(t.shape)}: pass a 2-D array (rows are embeddings).")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): pass at least one embedding row.")
    return t


def _row_norms(x, name, row_offset=0):
    """float32 L2 norms of the rows of float32 ``x``, refusing rows that cannot be normalised.

    A row's norm depends on that row only, not on the rows around it, so normalising in chunks, from a
    memmap or one query at a time gives the same bits.
    """
    norms = torch.linalg.vector_norm(x, dim=1)
    bad = ~torch.isfinite(norms) | (norms == 0)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        values = x[row]
        if not bool(torch.isfinite(values).all()):
            what = "not finite (NaN or inf): drop that row or fix the encoder output"
        elif not bool(values.any()):
            what = "a zero vector, which has no direction: drop that row or fix the encoder output"
        else:
            what = "too large or too small for a float32 norm: rescale the embeddings"
        raise ValueError(f"{name} row {row + row_offset} is {what} (cosine similarity needs unit-length rows).")
    return norms


def _normalise(x, name, row_offset=0):
    """Rows scaled to unit length, as float32."""
    x = x.to(torch.float32)
    return x / _row_norms(x, name, row_offset)[:, None]


def _prepare_queries(x, name, dim, device):
    t = _as_tensor(x, name, allow_1d=True)
    if t.shape[1] != dim:
        raise ValueError(f"{name} has dimension {t.shape[1]} but the anchors of that modality have {dim}: "
                         "embed with the same encoder as the anchors.")
    return _normalise(t.to(device), name).contiguous()


# ----------------------------------------------------------------------------------------------------
# anchors


class _Anchors:
    """One modality's N anchors, L2-normalised.

    In-memory input is normalised once into a float32 tensor on the device. A ``numpy.memmap`` (e.g.
    ``np.load(path, mmap_mode="r")``, possibly larger than RAM) is kept as it is: its row norms are computed
    once here and each chunk is normalised on the fly, with the same arithmetic, so results are identical.
    """

    def __init__(self, source, name, device):
        self.name, self.device = name, device
        step = _rows_per_chunk(source.shape[1] if len(getattr(source, "shape", ())) == 2 else 1)
        if _is_streamed(source):
            _as_tensor(source[:1], name)  # dtype checks
            if source.ndim != 2:
                raise ValueError(f"{name} has shape {source.shape}: pass a 2-D array (rows are embeddings).")
            self.raw, self.data = source, None
            self.norms = torch.empty(source.shape[0], dtype=torch.float32)
            for start in range(0, source.shape[0], step):
                chunk = torch.from_numpy(np.array(source[start:start + step])).to(torch.float32)
                self.norms[start:start + step] = _row_norms(chunk, name, start)
            self.n, self.dim = source.shape
        else:
            t = _as_tensor(source, name)
            self.raw = None
            self.data = torch.empty(t.shape, dtype=torch.float32, device=device)
            for start in range(0, t.shape[0], step):
                self.data[start:start + step] = _normalise(t[start:start + step].to(device), name, start)
            self.n, self.dim = self.data.shape

    def rows(self, start, stop, device):
        """Normalised float32 rows start..stop-1 on ``device``."""
        if self.data is not None:
            return self.data[start:stop].to(device)
        chunk = torch.from_numpy(np.array(self.raw[start:stop])).to(torch.float32)
        return (chunk / self.norms[start:stop, None]).to(device)

    def tiles(self, chunk_size, device):
        """Yield (start, tile, width): tiles of exactly ``_TILE_ANCHORS`` rows, zero-padded after ``width``."""
        step = _TILE_ANCHORS * max(1, math.ceil((chunk_size or _rows_per_chunk(self.dim)) / _TILE_ANCHORS))
        for c0 in range(0, self.n, step):
            chunk = self.rows(c0, min(c0 + step, self.n), device)
            for t0 in range(0, chunk.shape[0], _TILE_ANCHORS):
                tile = chunk[t0:t0 + _TILE_ANCHORS]
                width = tile.shape[0]
                if width < _TILE_ANCHORS:
                    # a fresh, zero-padded tile keeps the product's shape (and so its rounding) fixed
                    tile = torch.cat([tile, tile.new_zeros(_TILE_ANCHORS - width, self.dim)])
                yield c0 + t0, tile, width

    def materialise(self):
        """All normalised rows as one float32 tensor (loads a memmap into memory)."""
        if self.data is not None:
            return self.data
        return torch.cat([self.rows(s, s + _rows_per_chunk(self.dim), self.device)
                          for s in range(0, self.n, _rows_per_chunk(self.dim))])


def _is_streamed(source):
    """Anchors read chunk by chunk instead of loaded: a memmap, or an on-disk array such as a bundle's
    ``ShardedRows`` (anything array-like with ``shape`` and slicing that is not in memory already)."""
    if isinstance(source, np.memmap):
        return True
    return (not isinstance(source, (np.ndarray, torch.Tensor, list, tuple)) and hasattr(source, "shape")
            and hasattr(source, "__getitem__") and len(getattr(source, "shape", ())) == 2)


def _rows_per_chunk(dim):
    return max(_TILE_ANCHORS, _DEFAULT_CHUNK_BYTES // (4 * dim) // _TILE_ANCHORS * _TILE_ANCHORS)


def _normalised_anchors(data, name, device):
    """An _Anchors over rows that are already unit-length float32 (after add / remove / load)."""
    anchors = _Anchors.__new__(_Anchors)
    anchors.name, anchors.device, anchors.raw = name, device, None
    anchors.data = data.to(device=device, dtype=torch.float32).contiguous()
    _row_norms(anchors.data, name)  # a damaged file could hold NaN
    anchors.n, anchors.dim = anchors.data.shape
    return anchors


# ----------------------------------------------------------------------------------------------------
# exact running top-k


def _encode_keys(values, columns):
    """One int64 per (similarity, anchor index) that sorts like (value desc, index asc) when sorted desc.

    High 32 bits: the float32 bits made monotonic (negative floats have their magnitude bits flipped);
    low 32 bits: 2**32 - 1 - index, so among equal values the lowest index has the largest key.
    """
    bits = (values + 0.0).contiguous().view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(torch.int64) << 32) | (_LOW32 - columns)


def _decode_keys(keys):
    """(float32 similarities, int64 anchor indices) of keys made by ``_encode_keys``."""
    bits = (keys >> 32).to(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.view(torch.float32), _LOW32 - (keys & _LOW32)


def _survivors(sims, threshold):
    """(rows, columns, values) of the entries strictly above their row's threshold, in row-major order.

    Two stages: the max of each group of 64 columns says which groups can hold a survivor; only those
    groups are gathered and compared. Flat ``index_select`` is used throughout: it is much faster than
    two-dimensional fancy indexing.
    """
    n_rows, width = sims.shape
    n_groups = width // _GROUP
    if width % _GROUP == 0 and sims.is_contiguous():
        hits = (sims.view(n_rows, n_groups, _GROUP).amax(2) > threshold).view(-1).nonzero().squeeze(1)
        if hits.numel() * 4 < n_rows * n_groups * 3:  # else gathering would copy most of the block
            block = sims.view(n_rows * n_groups, _GROUP).index_select(0, hits)
            hit_rows = hits // n_groups
            inside = (block > threshold.view(-1).index_select(0, hit_rows)[:, None]).view(-1).nonzero().squeeze(1)
            which = inside // _GROUP
            columns = (hits.index_select(0, which) % n_groups) * _GROUP + inside % _GROUP
            return hit_rows.index_select(0, which), columns, block.view(-1).index_select(0, inside)
    if sims.is_contiguous():
        flat = (sims > threshold).view(-1).nonzero().squeeze(1)
        return flat // width, flat % width, sims.view(-1).index_select(0, flat)
    rows, columns = (sims > threshold).nonzero(as_tuple=True)
    return rows, columns, sims[rows, columns]


class _RunningTopK:
    """The exact top-k keys of a block of query rows, fed their similarities in increasing anchor order."""

    def __init__(self, n_rows, k, pending, device):
        self.k, self.seen = k, 0
        self.merge_at = max(1, min(pending, int(_MERGE_AT * k)))
        self.keys = torch.full((n_rows, k), _EMPTY, dtype=torch.int64, device=device)
        self.pending = torch.full((n_rows, pending), _EMPTY, dtype=torch.int64, device=device)
        self.fill = torch.zeros(n_rows, dtype=torch.int64, device=device)  # pending slots used per row
        self.max_fill = 0
        self._changed = False
        # a row's k-th best value as of the last merge; -inf until k anchors were seen
        self.threshold = torch.full((n_rows, 1), -math.inf, device=device)

    def add(self, sims, start):
        """Take similarities ``sims`` (rows, w) to anchors start..start+w-1."""
        n_rows = sims.shape[0]
        if self.seen < self.k:
            self._merge_block(sims, start)  # the top-k is not full yet: every value may enter
        else:
            rows, columns, values = _survivors(sims, self.threshold)
            if rows.numel() > n_rows * self.k:
                self._merge_block(sims, start)  # most of the block survives: one top-k over it is cheaper
            elif rows.numel():
                counts = torch.bincount(rows, minlength=n_rows)
                needed = int((self.fill + counts).max())
                if needed > self.pending.shape[1]:
                    self.merge()
                    needed = int(counts.max())
                if needed > self.pending.shape[1]:
                    self._merge_block(sims, start)  # more survivors than pending slots
                else:
                    # row r's survivors go to its next free pending slots, flat index r * width + slot
                    first = torch.cumsum(counts, 0) - counts
                    slot = ((self.fill - first).index_select(0, rows) + rows * self.pending.shape[1]
                            + torch.arange(rows.numel(), device=rows.device))
                    self.pending.view(-1).index_copy_(0, slot, _encode_keys(values, columns + start))
                    self.fill += counts
                    self.max_fill = needed
                    # merging early raises the threshold, and a higher threshold lets fewer values through
                    if needed >= self.merge_at:
                        self.merge()
        self.seen += sims.shape[1]
        if self._changed:
            self._refresh_threshold()

    def _merge_block(self, sims, start):
        self.merge()
        if self.seen == 0 and sims.shape[1] >= self.k:
            # The first block alone fills the top-k: a float top-k is exact unless a row has a tie at its
            # k-th value (then the lowest index must win, which topk does not promise).
            values, columns = torch.topk(sims, self.k, dim=1, sorted=False)
            kth = values.amin(dim=1, keepdim=True)
            if not bool(((sims >= kth).sum(dim=1) > self.k).any()):
                self.keys = _encode_keys(values, columns + start)
                self._changed = True
                return
        columns = torch.arange(start, start + sims.shape[1], device=sims.device).expand(sims.shape[0], -1)
        both = torch.cat([self.keys, _encode_keys(sims, columns)], dim=1)
        self.keys = torch.topk(both, self.k, dim=1, sorted=False).values
        self._changed = True

    def merge(self):
        """Fold the pending survivors into the top-k."""
        if self.max_fill:
            both = torch.cat([self.keys, self.pending[:, :self.max_fill]], dim=1)
            self.keys = torch.topk(both, self.k, dim=1, sorted=False).values
            self.pending[:, :self.max_fill] = _EMPTY
            self.fill.zero_()
            self.max_fill = 0
            self._changed = True
        if self._changed:
            self._refresh_threshold()

    def _refresh_threshold(self):
        # until k anchors were seen the top-k has empty slots and anything may enter
        if self.seen >= self.k:
            self.threshold = _decode_keys(self.keys.min(dim=1, keepdim=True).values)[0]
        self._changed = False

    def result(self):
        """The final top-k keys, in no particular order."""
        self.merge()
        return self.keys


def _plan(n_queries, k, memory_budget):
    """(pending slots per row, query rows per pass over the anchors) within a working-memory budget in bytes.

    A query row costs its k running keys and pending keys (int64), a row of the similarity slab and, when a
    whole tile is merged, its int64 keys; more rows than fit are handled in several passes over the anchors.
    """
    budget = _DEFAULT_BUDGET if memory_budget is None else memory_budget
    pending = 2 * k
    per_row = 8 * (k + pending) + 4 * _TILE_ANCHORS + 16 * (k + _TILE_ANCHORS)
    rows = budget // per_row
    if rows < n_queries:  # a small budget: fewer pending slots (more merges) before more passes
        pending = max(16, min(pending, (budget // n_queries - 4 * _TILE_ANCHORS - 16 * (k + _TILE_ANCHORS)) // 8 - k))
        rows = budget // (8 * (k + pending) + 4 * _TILE_ANCHORS + 16 * (k + _TILE_ANCHORS))
    rows = max(_ROW_MULTIPLE, rows // _ROW_MULTIPLE * _ROW_MULTIPLE)
    return int(pending), int(min(rows, n_queries))


def _running_topk(queries, anchors, k, stops, chunk_size, pending, device):
    """Yield (stop, keys): for each anchor-prefix size in ``stops``, the (n, k) best keys per query, unordered.

    One pass over the anchors: each anchor tile is multiplied with all queries (zero-padded to a multiple of
    ``_ROW_MULTIPLE`` rows, in blocks of at most ``_ROW_BLOCK`` rows) into one similarity slab, which the
    running top-k then filters in one go.
    """
    n, dim = queries.shape
    padded_rows = _ROW_MULTIPLE * math.ceil(n / _ROW_MULTIPLE)
    padded = torch.zeros((padded_rows, dim), dtype=torch.float32, device=device)
    padded[:n] = queries
    sims = torch.empty((padded_rows, _TILE_ANCHORS), dtype=torch.float32, device=device)
    state = _RunningTopK(n, k, pending, device)
    stop_set = set(stops)
    for start, tile, width in anchors.tiles(chunk_size, device):
        if start >= max(stops):
            break
        for q0 in range(0, padded_rows, _ROW_BLOCK):
            torch.matmul(padded[q0:q0 + _ROW_BLOCK], tile.T, out=sims[q0:q0 + _ROW_BLOCK])
        cuts = sorted({start, start + width} | {s for s in stop_set if start < s < start + width})
        for c0, c1 in zip(cuts, cuts[1:]):
            state.add(sims[:n, c0 - start:c1 - start], c0)
            if c1 in stop_set:
                yield c1, state.result()


def _top_keys(queries, anchors, k, chunk_size, memory_budget, device):
    """(n, k) best keys per query against all anchors, in no particular order; passes bounded by the budget."""
    pending, rows_per_pass = _plan(queries.shape[0], k, memory_budget)
    parts = []
    for q0 in range(0, queries.shape[0], rows_per_pass):
        for _, keys in _running_topk(queries[q0:q0 + rows_per_pass], anchors, k, [anchors.n],
                                     chunk_size, pending, device):
            parts.append(keys)
    return torch.cat(parts)


def _decode_numpy(keys):
    """``_decode_keys`` for a numpy array: (float32 similarities, int64 anchor indices)."""
    bits = (keys >> 32).astype(np.int32)
    bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    return bits.view(np.float32), _LOW32 - (keys & _LOW32)


def _by_index(values, index):
    """The same (similarity, anchor index) pairs per row, sorted by anchor index.

    A canonical order matters: the L2 norm sums the row, and a float sum depends on its order.
    """
    # one integer sort moves each similarity (its bits in the low half) along with its index
    packed = (index.astype(np.uint64) << np.uint64(32)) | values.view(np.uint32).astype(np.uint64)
    packed.sort(axis=1)
    return (packed & np.uint64(_LOW32)).astype(np.uint32).view(np.float32), (packed >> np.uint64(32)).astype(np.int64)


def _weights(values, p, clamp_negative):
    """The (n, k) float32 weights of kept similarities ``values``: clamped, raised to p, L2-normalised per row.
    Row order matters for the bits (the norm is a float sum): pass values sorted by anchor (``_by_index``)."""
    if clamp_negative:
        values = np.maximum(values, np.float32(0))
    # dividing by the row's largest magnitude first keeps v**p from underflowing; the L2 norm removes it
    peak = np.abs(values).max(axis=1, keepdims=True)
    weights = (values / np.where(peak > 0, peak, np.float32(1))) ** np.float32(p)
    norm = np.sqrt((weights * weights).sum(axis=1, keepdims=True))
    return weights / np.where(norm > 0, norm, np.float32(1))


def _to_csr(values, index, p, clamp_negative, n_anchors):
    """The representation as scipy CSR (n, n_anchors) float32: kept similarities (clamped), raised to p,
    L2-normalised; zeros are not stored. ``values``/``index`` come from ``_by_index``."""
    return _weights_to_csr(_weights(values, p, clamp_negative), index, n_anchors)


def _weights_to_csr(weights, index, n_anchors):
    """``_to_csr`` of weights already computed by ``_weights``."""
    index = index.astype(np.int32 if n_anchors < 2**31 else np.int64)
    stored = weights != 0
    if stored.all():
        data, indices = weights.ravel(), index.ravel()
        indptr = np.arange(0, weights.size + 1, max(1, weights.shape[1]), dtype=np.int64)
    else:
        data, indices = weights[stored], index[stored]
        indptr = np.concatenate([[0], np.cumsum(stored.sum(axis=1))]).astype(np.int64)
    matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(weights.shape[0], n_anchors))
    matrix.has_sorted_indices = True
    return matrix


def _representation(queries, anchors, k, p, clamp_negative, chunk_size, memory_budget, device):
    keys = _top_keys(queries, anchors, k, chunk_size, memory_budget, device)
    return _to_csr(*_by_index(*_decode_numpy(keys.cpu().numpy())), p, clamp_negative, anchors.n)


def relative_representation(queries, anchors, k=800, p=8, clamp_negative=True, chunk_size=None,
                            device="auto", memory_budget=None):
    """ASIF's sparse relative representation of ``queries`` (n, d) against ``anchors`` (N, d).

    Returns a ``scipy.sparse.csr_matrix`` (n, N), float32, sorted indices: per row the k largest cosine
    similarities (ties: lowest anchor index), negative ones set to 0 when ``clamp_negative`` (with few anchors
    an even p would otherwise turn dissimilar anchors into similar ones; ``False`` is the authors' exact
    behaviour), raised to ``p`` and L2-normalised. Zero weights are not stored, so a row holds at most k values
    (none for a query dissimilar to every anchor). ``anchors`` may be a ``numpy.memmap`` larger than RAM: it is
    streamed; any other input is normalised into a float32 copy first (``AsifModel`` does that once).
    ``chunk_size`` (anchors per step, rounded up to whole tiles) and ``memory_budget`` (bytes of working
    memory) change speed and memory only, never the result.
    """
    device = resolve_device(device)
    k = _check_k(k)
    p = _check_p(p, clamp_negative)
    chunk_size = _check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
    memory_budget = _check_positive_int(memory_budget, "memory_budget", "bytes of working memory, e.g. 2**28.")
    anchors = _Anchors(anchors, "anchors", device)
    _check_k(k, anchors.n)
    queries = _prepare_queries(queries, "queries", anchors.dim, device)
    return _representation(queries, anchors, k, p, clamp_negative, chunk_size, memory_budget, device)


# ----------------------------------------------------------------------------------------------------
# products of sparse representations


def _dot(a, b):
    """Dense float32 ``a @ b.T`` of two CSR matrices with the same number of columns (anchors).

    The sparse product costs a step per stored value of ``a`` plus one per (row of a, row of b, shared
    anchor); with few anchors the rows share most of them and a dense product (torch, all cores) is much
    cheaper. The rough costs below (seconds on the 2-core reference machine) pick the faster one.
    """
    if not _dense_is_cheaper(a.shape[0], a.nnz, b.shape[0], b.nnz, a.shape[1]):
        return np.asarray((a @ b.T).toarray(), dtype=np.float32)
    return _dense_dot(lambda i, j: a[i:j].toarray(), a.shape[0], b)


def _dense_is_cheaper(a_rows, a_nnz, b_rows, b_nnz, n_anchors):
    """``_dot``'s choice: True for the dense product. The rough costs are seconds on the 2-core reference
    machine; the dense text block must also fit in ``_DOT_BLOCK_BYTES``."""
    shared = a_nnz * b_nnz / n_anchors
    sparse_cost = 2e-8 * a_nnz + 5e-9 * shared
    dense_cost = 2 * a_rows * n_anchors * b_rows / 1e11 + 4 * (a_rows + b_rows) * n_anchors / 2e9
    return dense_cost < sparse_cost and 4 * b_rows * n_anchors <= _DOT_BLOCK_BYTES


def _dense_dot(a_rows, n_rows, b):
    """Dense float32 ``a @ b.T`` where ``a_rows(i, j)`` gives rows i..j-1 of ``a`` as a dense float32 array
    and ``b`` is CSR. The row blocks fix the product shapes, hence the bits: keep them identical for every
    caller (``_dot`` and ``sweep`` must agree)."""
    n_anchors = b.shape[1]
    b_dense = torch.from_numpy(b.toarray())
    out = np.empty((n_rows, b.shape[0]), dtype=np.float32)
    rows = max(1, _DOT_BLOCK_BYTES // (4 * n_anchors))
    for i in range(0, n_rows, rows):
        out[i:i + rows] = (torch.from_numpy(a_rows(i, min(i + rows, n_rows))) @ b_dense.T).numpy()
    return out


def _class_means(texts, n_classes, n_templates):
    """Per class, the mean of its template rows (class-major order), L2-normalised again."""
    rows = np.arange(n_classes * n_templates)
    average = scipy.sparse.csr_matrix((np.full(rows.size, 1.0 / n_templates, dtype=np.float32),
                                       (rows // n_templates, rows)), shape=(n_classes, rows.size))
    means = (average @ texts).tocsr()
    norms = np.sqrt(np.asarray(means.multiply(means).sum(axis=1)).ravel())
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
    means = scipy.sparse.diags(scale) @ means
    means = means.tocsr().astype(np.float32)
    means.sort_indices()
    return means


def _check_templates(n_prompts, n_templates):
    n_templates = _check_positive_int(n_templates, "n_templates", "the number of prompt templates per class.")
    if n_prompts % n_templates:
        raise ValueError(f"there are {n_prompts} prompt embeddings, not a multiple of n_templates={n_templates}: "
                         "pass class-major prompts (class c, template t at row c*T + t) for every class.")
    return n_templates


def _check_reduce(reduce):
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce={reduce!r} is not known: use 'max' (the class of the best prompt, the authors' "
                         "rule) or 'mean' (the mean template representation per class, CLIP's rule).")
    return reduce


def _class_scores(images, texts, n_templates, reduce):
    n_classes = texts.shape[0] // n_templates
    if reduce == "max":
        return _dot(images, texts).reshape(images.shape[0], n_classes, n_templates).max(axis=2)
    return _dot(images, _class_means(texts, n_classes, n_templates))


# ----------------------------------------------------------------------------------------------------
# the model


class AsifModel:
    """A CLIP-shaped model made of N anchor pairs and no training (paper §2).

    ``anchor_images`` (N, d1) and ``anchor_texts`` (N, d2): row i of each is the embedding of one
    image-caption pair (numpy, torch or a ``numpy.memmap``; float16 works too). ``k`` non-zeros per
    representation, exponent ``p``, ``ids`` (ints or strings, unique; default ``0..N-1``) name the pairs in
    ``explain`` and ``remove_pairs``. Anchors are L2-normalised once here into float32 on ``device``
    ("auto": the GPU when present); a memmap is kept as it is and normalised chunk by chunk on the fly.
    ``chunk_size`` and ``memory_budget`` (bytes of working memory per call) trade speed for memory and never
    change a result. See ``relative_representation`` for the exact recipe.
    """

    def __init__(self, anchor_images, anchor_texts, k=800, p=8, ids=None, clamp_negative=True, chunk_size=None,
                 device="auto", memory_budget=None):
        self.device = resolve_device(device)
        self.clamp_negative = bool(clamp_negative)
        k = _check_k(k)
        p = _check_p(p, self.clamp_negative)
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
        self.memory_budget = _check_positive_int(memory_budget, "memory_budget",
                                                 "bytes of working memory, e.g. 2**28.")
        n_images, n_texts = _count_rows(anchor_images, "anchor_images"), _count_rows(anchor_texts, "anchor_texts")
        if n_images != n_texts:
            raise ValueError(f"anchor_images has {n_images} rows but anchor_texts has {n_texts}: row i of each "
                             "must be the two embeddings of pair i.")
        _check_k(k, n_images)
        ids = _check_ids(ids, n_images)
        images = _Anchors(anchor_images, "anchor_images", self.device)
        texts = _Anchors(anchor_texts, "anchor_texts", self.device)
        self._images, self._texts, self._ids, self._k, self._p = images, texts, ids, k, p
        self._position = {pair_id: i for i, pair_id in enumerate(ids)}

    # -- hyperparameters --------------------------------------------------------------------------------
    @property
    def k(self):
        """Non-zeros kept per relative representation (1 <= k <= n_pairs)."""
        return self._k

    @k.setter
    def k(self, value):
        self._k = _check_k(value, self.n_pairs)

    @property
    def p(self):
        """Exponent applied to the kept similarities (> 0)."""
        return self._p

    @p.setter
    def p(self, value):
        self._p = _check_p(value, self.clamp_negative)

    @property
    def n_pairs(self):
        """Number of anchor pairs N."""
        return self._images.n

    @property
    def ids(self):
        """The pair ids, in anchor order."""
        return tuple(self._ids)

    def __repr__(self):
        return (f"AsifModel(n_pairs={self.n_pairs}, k={self.k}, p={self.p:g}, dims=({self._images.dim}, "
                f"{self._texts.dim}), clamp_negative={self.clamp_negative}, device={self.device!r})")

    # -- representations ------------------------------------------------------------------------------------
    def _encode(self, x, anchors, name):
        queries = _prepare_queries(x, name, anchors.dim, self.device)
        return _representation(queries, anchors, self.k, self.p, self.clamp_negative, self.chunk_size,
                               self.memory_budget, self.device)

    def encode_image(self, image_embeddings):
        """Relative representations (n, N) CSR float32 of image embeddings (n, d1) against the anchor images.

        A 1-D input is one row. At most k values per row, sorted indices; see ``relative_representation``.
        """
        return self._encode(image_embeddings, self._images, "image_embeddings")

    def encode_text(self, text_embeddings):
        """Relative representations (m, N) CSR float32 of text embeddings (m, d2) against the anchor texts."""
        return self._encode(text_embeddings, self._texts, "text_embeddings")

    def similarity(self, image_embeddings, text_embeddings):
        """Dense (n, m) float32 ``encode_image(images) @ encode_text(texts).T``: cosine of the unit-length
        representations, in [-1, 1] ([0, 1] with clamp_negative)."""
        return _dot(self.encode_image(image_embeddings), self.encode_text(text_embeddings))

    def classify(self, image_embeddings, prompt_embeddings, n_templates=1, reduce="max", unknown_threshold=None):
        """Zero-shot classification: ``(pred (n,) int64, scores (n, n_classes) float32)``.

        ``prompt_embeddings`` are class-major: class c, template t at row ``c * n_templates + t``.
        ``reduce="max"`` (the authors' rule): a class scores its best template, so the prediction is the
        class of the single best prompt. ``reduce="mean"`` (CLIP's rule): a class scores the similarity to
        the mean of its template representations, L2-normalised again. Ties go to the lowest class.
        ``unknown_threshold=t``: the prediction is -1 where the best score is < t (the paper's unknown token).
        """
        n_templates = _check_templates(_count_rows(prompt_embeddings, "prompt_embeddings"), n_templates)
        reduce = _check_reduce(reduce)
        if unknown_threshold is not None and (isinstance(unknown_threshold, bool) or not isinstance(
                unknown_threshold, numbers.Real) or math.isnan(unknown_threshold)):
            raise ValueError(f"unknown_threshold={unknown_threshold!r} must be a number or None.")
        images = self.encode_image(image_embeddings)
        texts = self.encode_text(prompt_embeddings)
        scores = _class_scores(images, texts, n_templates, reduce)
        pred = scores.argmax(axis=1).astype(np.int64)
        if unknown_threshold is not None:
            pred[scores.max(axis=1) < unknown_threshold] = -1
        return pred, scores

    def explain(self, image_embedding, text_embedding, top=20):
        """The anchors behind one image-text score (Figure 5 of the paper, as data).

        Returns a list of dicts, largest contribution first (ties: lowest anchor): ``anchor`` (index),
        ``id``, ``image_weight`` and ``text_weight`` (its value in each representation) and ``contribution``
        (their product), for the anchors non-zero in both. All contributions (``top=None``) sum to
        ``similarity(image, text)``; ``top`` keeps the largest ones.
        """
        top = _check_positive_int(top, "top", "how many anchors to return, or None for all.")
        image = _as_tensor(image_embedding, "image_embedding", allow_1d=True)
        text = _as_tensor(text_embedding, "text_embedding", allow_1d=True)
        if image.shape[0] != 1 or text.shape[0] != 1:
            raise ValueError("explain takes one image embedding and one text embedding (1-D or one row): "
                             f"got {image.shape[0]} and {text.shape[0]} rows.")
        ri, rt = self.encode_image(image), self.encode_text(text)
        shared, in_image, in_text = np.intersect1d(ri.indices, rt.indices, assume_unique=True,
                                                   return_indices=True)
        image_weight, text_weight = ri.data[in_image], rt.data[in_text]
        contribution = image_weight * text_weight
        order = np.lexsort((shared, -contribution))[:top]
        return [{"anchor": int(shared[i]), "id": self._ids[shared[i]], "image_weight": float(image_weight[i]),
                 "text_weight": float(text_weight[i]), "contribution": float(contribution[i])} for i in order]

    # -- editing ------------------------------------------------------------------------------------------
    def add_pairs(self, anchor_images, anchor_texts, ids=None):
        """Append pairs (rows of each array are one pair's embeddings). ``ids`` must be new and unique;
        None gives the next integers after the largest integer id. A memmap-backed model is loaded into
        memory. Nothing changes if the call fails."""
        n_images, n_texts = _count_rows(anchor_images, "anchor_images"), _count_rows(anchor_texts, "anchor_texts")
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
        images = _Anchors(anchor_images, "anchor_images", self.device)
        texts = _Anchors(anchor_texts, "anchor_texts", self.device)
        for new, old in ((images, self._images), (texts, self._texts)):
            if new.dim != old.dim:
                raise ValueError(f"{new.name} has dimension {new.dim} but the model's has {old.dim}: embed "
                                 "with the same encoders.")
        self._replace(torch.cat([self._images.materialise(), images.materialise()]),
                      torch.cat([self._texts.materialise(), texts.materialise()]), self._ids + ids)

    def remove_pairs(self, ids):
        """Delete pairs by id: true unlearning. The rows are dropped into new arrays (no mask, no copy of them
        is kept), so afterwards no output depends on the removed pairs in any way; the model equals one built
        without them. Refuses to leave fewer than k pairs. Nothing changes if the call fails."""
        if isinstance(ids, (str, numbers.Integral)):
            ids = [ids]
        ids = list(ids)
        unknown = [i for i in ids if i not in self._position]
        if unknown:
            raise ValueError(f"ids {unknown[:5]} name no pair of this model: check model.ids.")
        drop = {self._position[i] for i in ids}
        left = self.n_pairs - len(drop)
        if left < self.k:
            raise ValueError(f"removing {len(drop)} pairs would leave {left} < k={self.k}: lower model.k first.")
        keep = torch.tensor([i for i in range(self.n_pairs) if i not in drop], dtype=torch.long)
        images, texts = self._images.materialise(), self._texts.materialise()
        self._replace(images[keep.to(images.device)], texts[keep.to(texts.device)],
                      [self._ids[i] for i in keep.tolist()])

    def _replace(self, images, texts, ids):
        self._images = _normalised_anchors(images, "anchor_images", self.device)
        self._texts = _normalised_anchors(texts, "anchor_texts", self.device)
        self._ids = list(ids)
        self._position = {pair_id: i for i, pair_id in enumerate(self._ids)}

    # -- files --------------------------------------------------------------------------------------------
    def save(self, path):
        """Write the model (normalised float32 anchors, ids, k, p, clamp_negative) atomically, without pickle.

        ``.npz`` gives a numpy archive; any other suffix a safetensors file (ids and settings in its
        metadata). Returns the path.
        """
        path = Path(path)
        meta = {"format": _FORMAT, "version": str(_FORMAT_VERSION), "k": str(self.k), "p": repr(self.p),
                "clamp_negative": str(self.clamp_negative), "ids": json.dumps(self._ids)}
        images = self._images.materialise().cpu().contiguous()
        texts = self._texts.materialise().cpu().contiguous()
        if path.suffix == ".npz":
            with atomic_write(path) as handle:
                np.savez(handle, anchor_images=images.numpy(), anchor_texts=texts.numpy(),
                         meta=np.array(json.dumps(meta)))
        else:
            import safetensors.torch

            data = safetensors.torch.save({"anchor_images": images, "anchor_texts": texts}, metadata=meta)
            with atomic_write(path) as handle:
                handle.write(data)
        return path

    @classmethod
    def load(cls, path, device="auto", chunk_size=None, memory_budget=None):
        """Read a model written by ``save`` (.npz or safetensors). A corrupt, truncated or foreign file gives
        a ValueError saying so."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path}: check the path or save a model there first.")
        fix = "re-save the model with AsifModel.save, or rebuild it from its anchors"
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    if "meta" not in archive.files:
                        raise KeyError("meta")
                    meta = json.loads(str(archive["meta"]))
                    images, texts = torch.from_numpy(archive["anchor_images"]), torch.from_numpy(archive["anchor_texts"])
            else:
                import safetensors

                with safetensors.safe_open(str(path), framework="pt") as handle:
                    meta = handle.metadata() or {}
                    images, texts = handle.get_tensor("anchor_images"), handle.get_tensor("anchor_texts")
        except Exception as error:  # every reader error means the same thing to the user
            raise ValueError(f"{path} is not a readable ASIF model file ({type(error).__name__}: {error}): "
                             f"{fix}.") from error
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} was not written by AsifModel.save (no '{_FORMAT}' format tag): {fix}.")
        if meta.get("version") != str(_FORMAT_VERSION):
            raise ValueError(f"{path} has model format version {meta.get('version')!r}, this code reads "
                             f"{_FORMAT_VERSION}: {fix}.")
        try:
            k, p = int(meta["k"]), float(meta["p"])
            clamp_negative = {"True": True, "False": False}[meta["clamp_negative"]]
            ids = json.loads(meta["ids"])
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{path} has damaged model metadata ({error}): {fix}.") from error
        model = cls.__new__(cls)
        model.device = resolve_device(device)
        model.clamp_negative = clamp_negative
        model.chunk_size = _check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
        model.memory_budget = _check_positive_int(memory_budget, "memory_budget",
                                                  "bytes of working memory, e.g. 2**28.")
        if images.ndim != 2 or texts.ndim != 2 or images.shape[0] != texts.shape[0]:
            raise ValueError(f"{path} holds anchors of shapes {tuple(images.shape)} and {tuple(texts.shape)}: {fix}.")
        model._replace(images, texts, _check_ids(ids, images.shape[0]))
        model._k = _check_k(k, model.n_pairs)
        model._p = _check_p(p, clamp_negative)
        return model


def _count_rows(x, name):
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{name} has shape {tuple(shape)}: pass a 2-D array (one row per embedding).")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)}): pass at least one embedding row.")
    return int(shape[0])


# ----------------------------------------------------------------------------------------------------
# evaluation helpers


def threshold_curve(scores, labels, thresholds=None):
    """The unknown-token trade-off (paper §4, "Uncertainty") of class ``scores`` (n, n_classes).

    At threshold t a query is answered with its best class when its best score is >= t, else it is
    "unknown" (as ``classify(unknown_threshold=t)``). Returns a dict of numpy arrays, one entry per
    threshold: ``threshold``; ``accuracy``, ``unknown``, ``wrong`` (fractions of all queries, summing to 1);
    ``coverage`` (answered fraction) and ``risk`` (wrong / answered; NaN where nothing is answered).
    Default thresholds: every distinct best score, then +inf (nothing answered).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores has shape {scores.shape}: pass the (n, n_classes) scores from classify.")
    if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {scores.shape[0]} integer class indices, one per row of scores "
                         f"(got shape {labels.shape}, dtype {labels.dtype}).")
    if np.isnan(scores).any():
        raise ValueError("scores contains NaN: pass the scores returned by classify.")
    best = scores.max(axis=1)
    correct = scores.argmax(axis=1) == labels
    if thresholds is None:
        thresholds = np.append(np.unique(best), np.inf)
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    if thresholds.size == 0 or np.isnan(thresholds).any():
        raise ValueError("thresholds must be a non-empty sequence of numbers (or None for every distinct score).")
    answered = best[None, :] >= thresholds[:, None]
    n = scores.shape[0]
    accuracy = (answered & correct).sum(axis=1) / n
    wrong = (answered & ~correct).sum(axis=1) / n
    coverage = answered.sum(axis=1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(coverage > 0, wrong / coverage, np.nan)
    unknown = (~answered).sum(axis=1) / n
    return {"threshold": thresholds, "accuracy": accuracy, "unknown": unknown, "wrong": wrong,
            "coverage": coverage, "risk": risk}


def _as_list(values, name, check):
    if values is None:
        return None
    if isinstance(values, (numbers.Number, np.number)):
        values = [values]
    values = [check(v) for v in values]
    if not values:
        raise ValueError(f"{name} is empty: pass at least one value.")
    return sorted(set(values))


def sweep(image_embeddings, labels, prompt_embeddings, anchor_images, anchor_texts, n_pairs=None, k=(800,),
          p=(8,), n_templates=1, reduce="max", clamp_negative=True, chunk_size=None, device="auto"):
    """Zero-shot top-1 accuracy for every (anchor-prefix size, k, p) in one pass over the anchors.

    A prefix of size n uses the first n pairs, as the paper's Figure 4. Returns a list of dicts
    ``{n_pairs, k, p, accuracy, applicable}`` ordered by n_pairs, k, p; where k > n_pairs the point does not
    exist (``accuracy=None, applicable=False``). Each point equals the accuracy of
    ``AsifModel(anchor_images[:n], anchor_texts[:n], k, p).classify(...)``.

    Cost model: each modality's anchors are streamed once, keeping a running top-k_max per query (images and
    prompts), which is snapshotted at each prefix size; that pass costs about one evaluation at the largest
    size with k = k_max. Then each (prefix, k, p) point is cheap: take the best k of the snapshot, raise to p,
    normalise, and one (n_images x prefix) @ (prefix x n_prompts) product, dense or sparse as ``_dot`` would
    choose, with the same bits; the p values of one (prefix, k) share its index work (``_sweep_scores``).
    ``n_pairs`` defaults to 8 sizes spaced geometrically from the smallest k to N.
    """
    device = resolve_device(device)
    ks = _as_list(k, "k", _check_k)
    ps = _as_list(p, "p", lambda v: _check_p(v, clamp_negative))
    reduce = _check_reduce(reduce)
    chunk_size = _check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
    n_total = _count_rows(anchor_images, "anchor_images")
    if _count_rows(anchor_texts, "anchor_texts") != n_total:
        raise ValueError("anchor_images and anchor_texts have different numbers of rows: row i of each must be "
                         "the two embeddings of pair i.")
    if n_pairs is None:
        n_pairs = np.unique(np.geomspace(min(ks[0], n_total), n_total, 8).round().astype(int)).tolist()
    sizes = _as_list(n_pairs, "n_pairs", lambda v: _check_k(v, n_total, name="n_pairs entry"))
    n_templates = _check_templates(_count_rows(prompt_embeddings, "prompt_embeddings"), n_templates)
    n_images = _count_rows(image_embeddings, "image_embeddings")
    n_classes = _count_rows(prompt_embeddings, "prompt_embeddings") // n_templates
    labels = np.asarray(labels)
    if labels.shape != (n_images,) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be {n_images} integer class indices in [0, {n_classes}), one per image.")
    images_a = _Anchors(anchor_images, "anchor_images", device)
    texts_a = _Anchors(anchor_texts, "anchor_texts", device)
    images = _prepare_queries(image_embeddings, "image_embeddings", images_a.dim, device)
    prompts = _prepare_queries(prompt_embeddings, "prompt_embeddings", texts_a.dim, device)

    k_run = min(ks[-1], n_total)
    passes = [_running_topk(q, a, k_run, sizes, chunk_size, _plan(q.shape[0], k_run, None)[0], device)
              for q, a in ((images, images_a), (prompts, texts_a))]
    # Scoring a prefix needs only its snapshot, so it runs in worker threads while the main thread streams on
    # through the anchors (numpy, scipy and torch release the GIL in their loops): on 2 cores the mostly
    # single-threaded scoring overlaps the pass instead of following it. Every score is computed exactly as
    # without threads, and the rows come back in order.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_sweep_prefix, size, image_keys.clone(), prompt_keys.clone(), ks, ps, labels,
                               clamp_negative, n_templates, reduce)
                   for (size, image_keys), (_, prompt_keys) in zip(*passes)]
        return [row for future in futures for row in future.result()]


def _sweep_prefix(size, image_keys, prompt_keys, ks, ps, labels, clamp_negative, n_templates, reduce):
    """The sweep rows of one anchor-prefix size, from its running top-k_max snapshots (cloned: the running
    state goes on changing in place)."""
    # best first (numpy sorts int64 much faster than torch on the CPU); empty slots sort last
    image_best = _decode_numpy(np.sort(image_keys.cpu().numpy(), axis=1)[:, ::-1])
    prompt_best = _decode_numpy(np.sort(prompt_keys.cpu().numpy(), axis=1)[:, ::-1])
    rows = []
    for k_value in ks:
        if k_value > size:
            rows += [{"n_pairs": size, "k": k_value, "p": p_value, "accuracy": None, "applicable": False}
                     for p_value in ps]
            continue
        image_rows = _by_index(image_best[0][:, :k_value], image_best[1][:, :k_value])
        prompt_rows = _by_index(prompt_best[0][:, :k_value], prompt_best[1][:, :k_value])
        all_scores = _sweep_scores(image_rows, prompt_rows, ps, clamp_negative, size, n_templates, reduce)
        rows += [{"n_pairs": size, "k": k_value, "p": p_value, "applicable": True,
                  "accuracy": float(np.mean(scores.argmax(axis=1) == labels))}
                 for p_value, scores in zip(ps, all_scores)]
    return rows


def _sweep_scores(image_rows, prompt_rows, ps, clamp_negative, n_anchors, n_templates, reduce):
    """``_class_scores`` of one (prefix, k) point of ``sweep`` for every p in ``ps``, with the same bits.

    Per p, the product takes the path ``_dot`` would take for these matrices (dense or sparse), and each path
    adds the same float32 products in the same order, so every score equals the single model's. What depends
    only on (prefix, k), the anchor index of every kept value, is shared by all p: the dense path scatters
    into the same positions; the sparse path, where few texts share each kept anchor, lists once which
    (image, text, anchor) triples meet and then costs only a gather, a multiply and a scatter-add per p
    (``_shared_anchor_dots``); this skips what scipy redoes per product (the transpose, a counting pass, a
    sparse result). Where many texts share each anchor, scipy's loop is faster than numpy's scatter-add.
    """
    image_values, image_index = image_rows
    n_images = image_index.shape[0]
    image_weights = [_weights(image_values, p, clamp_negative) for p in ps]
    texts = [_to_csr(*prompt_rows, p, clamp_negative, n_anchors) for p in ps]
    if reduce == "mean":
        texts = [_class_means(t, t.shape[0] // n_templates, n_templates) for t in texts]
    dense = [_dense_is_cheaper(n_images, np.count_nonzero(w), t.shape[0], t.nnz, n_anchors)
             for w, t in zip(image_weights, texts)]

    flat = image_index + (np.arange(n_images, dtype=np.int64) * n_anchors)[:, None]  # positions in a dense a

    def dense_rows(weights):
        def block(i, j):
            # rows i..j-1 as a.toarray() would give them; + 0 turns a -0.0 weight (not stored in CSR) into 0.0
            out = np.zeros((j - i, n_anchors), dtype=np.float32)
            out.reshape(-1)[(flat[i:j] - i * n_anchors).ravel()] = (weights[i:j] + np.float32(0)).ravel()
            return out
        return block

    out = [_dense_dot(dense_rows(w), n_images, t) if d else None for w, t, d in zip(image_weights, texts, dense)]
    sparse = [i for i, d in enumerate(dense) if not d]
    if sparse:
        columns = _TextColumns([texts[i] for i in sparse])
        if columns.per_anchor[image_index].sum() <= _LISTED_MATCHES * image_index.size:
            products = _shared_anchor_dots(image_index, [image_weights[i] for i in sparse], columns)
        else:
            products = [_dot(_weights_to_csr(image_weights[i], image_index, n_anchors), texts[i]) for i in sparse]
        for i, product in zip(sparse, products):
            out[i] = product
    if reduce == "max":
        return [o.reshape(n_images, -1, n_templates).max(axis=2) for o in out]
    return out


class _TextColumns:
    """Several CSR text matrices of one shape, by anchor (CSC), on one structure: the union of their stored
    (text row, anchor) entries (they differ only where a weight underflowed to 0 for some p), each matrix's
    values scattered into it (0 elsewhere). The texts at anchor j are entries start[j]..start[j] +
    per_anchor[j] - 1, in increasing text row."""

    def __init__(self, texts):
        self.n_rows, self.n_anchors = texts[0].shape
        keys = [np.repeat(np.arange(self.n_rows, dtype=np.int64) * self.n_anchors, np.diff(t.indptr)) + t.indices
                for t in texts]  # (text row, anchor) as one sortable key
        union = np.sort(np.concatenate(keys))
        union = union[np.concatenate([[True], union[1:] != union[:-1]])]
        by_anchor = np.argsort(union % self.n_anchors, kind="stable")
        union = union[by_anchor]
        self.row = union // self.n_anchors
        self.per_anchor = np.bincount(union % self.n_anchors, minlength=self.n_anchors)
        self.start = np.cumsum(self.per_anchor) - self.per_anchor
        position = np.empty_like(by_anchor)
        position[by_anchor] = np.arange(by_anchor.size)  # row-major union position -> CSC position
        self.values = []
        row_major = np.sort(union)
        for t, t_keys in zip(texts, keys):
            values = np.zeros(union.size, dtype=np.float32)
            values[position[np.searchsorted(row_major, t_keys)]] = t.data
            self.values.append(values)


def _shared_anchor_dots(index, weights, columns):
    """Dense float32 ``a @ t.T`` for each pair (``weights[i]``, ``columns.values[i]``), where every ``a`` has
    the anchor indices ``index`` (n, k), sorted per row, and values ``weights[i]`` (n, k), zeros allowed;
    the same bits as scipy's CSR product in ``_dot``.

    scipy adds, for each output cell, the float32 products a[r, j] * t[c, j] over the shared anchors j in
    increasing order. Here the (image entry, text entry) matches are listed once for all pairs, in that order
    (rows, then anchors ascending, as ``index`` is), and each pair only costs a gather, a multiply and
    ``np.add.at``, which adds in the order given. A zero weight adds 0.0 and changes no sum. Rows go in
    blocks of at most ``_MATCH_BLOCK`` matches, to bound the memory.
    """
    n, k = index.shape
    matches = columns.per_anchor[index]  # (n, k): texts sharing each kept anchor
    per_row = matches.sum(axis=1)
    out = [np.zeros((n, columns.n_rows), dtype=np.float32) for _ in weights]
    r0 = 0
    while r0 < n:
        # the most rows (at least one) whose matches fit in one block
        r1 = r0 + max(1, int(np.searchsorted(np.cumsum(per_row[r0:]), _MATCH_BLOCK, side="right")))
        m = matches[r0:r1].ravel()
        total = int(m.sum())
        if total:
            entry = np.repeat(np.arange(r0 * k, r1 * k), m)  # the image entry (flat n x k) of each match
            # match number t of entry e is text entry start[anchor of e] + t - (matches before e)
            first = np.cumsum(m) - m
            text_entry = (columns.start[index[r0:r1].ravel()] - first)[entry - r0 * k] + np.arange(total)
            cell = (entry // k - r0) * columns.n_rows + columns.row[text_entry]
            for w, t_values, o in zip(weights, columns.values, out):
                products = w.reshape(-1)[entry] * t_values[text_entry]
                np.add.at(o.reshape(-1)[r0 * columns.n_rows:r1 * columns.n_rows], cell, products)
        r0 = r1
    return out
