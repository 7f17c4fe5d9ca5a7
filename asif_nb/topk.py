"""The heavy step of ASIF's relative representation: each query's k most similar anchors, exactly.

Queries (n, d) meet the N anchors of their modality tile by tile (``_TILE`` anchors per matrix product); per
query we keep its k best anchors so far as int64 keys that sort like (cosine similarity desc, anchor index
asc), so the result is exact and ties go to the lowest anchor index, whatever the order of the work. Once a
query holds k keys, only similarities strictly above its k-th value can enter (an equal one comes from a
larger index and loses the tie); those few are merged in now and then (``_RunningTopK``). Memory is
O(anchors + n * k + one tile per block of query rows), never an n x N matrix, and ``memory_budget`` bounds the
working part (more passes over the anchors when n * k itself does not fit).

Same bits everywhere on the CPU: a BLAS rounds a dot product differently depending on the shape of the
product it sits in (fewer than 8 rows, few columns), so anchors always go in tiles of exactly ``_TILE`` rows
(the last one zero-padded) and query rows in blocks padded to a multiple of 16. A (query, anchor) similarity
then has the same bits whatever ``chunk_size``, ``memory_budget``, the batch or the prefix of anchors used.
A GPU picks its kernels by shape too: there results agree to float tolerance.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Anchors per matrix product. 2,048: the similarities of a 2,000-query block (16 MB) are still in the cache
# when the filter reads them (bench_model.py: 1.10-1.19x the bare product, against ~1.3x with 8,192).
_TILE = 2048
_ROW_MULTIPLE = 16
_MAX_ROW_BLOCK = 2048
_EMPTY = torch.iinfo(torch.int64).min  # the key of an empty slot: below every real key
_LOW32 = 0xFFFFFFFF
DEFAULT_BUDGET = 512 * 2**20  # bytes of working memory per call, beyond anchors, queries and output
_CHUNK_BYTES = 64 * 2**20  # anchors read, converted and moved to the device per step


# ----------------------------------------------------------------------------------------------------
# checked, normalised inputs


def as_tensor(x, name, allow_1d=False):
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


def row_norms(x, name, row_offset=0):
    """float32 L2 norms of the rows of float32 ``x``, refusing rows that cannot be normalised. A row's norm
    depends on that row only, so normalising in chunks, from a memmap or one query at a time gives the same bits."""
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


def prepare_queries(x, name, dim, device):
    """Query rows (1-D: one row) as unit-length float32 on ``device``."""
    t = as_tensor(x, name, allow_1d=True)
    if t.shape[1] != dim:
        raise ValueError(f"{name} has dimension {t.shape[1]} but the anchors of that modality have {dim}: "
                         "embed with the same encoder as the anchors.")
    t = t.to(device=device, dtype=torch.float32)
    return (t / row_norms(t, name)[:, None]).contiguous()


def is_streamed(source):
    """Anchors read chunk by chunk instead of loaded: a memmap, or an on-disk array such as a bundle's
    ``ShardedRows`` (anything with a 2-D ``shape`` and contiguous slicing that is not in memory already)."""
    if isinstance(source, np.memmap):
        return True
    return (not isinstance(source, (np.ndarray, torch.Tensor, list, tuple)) and hasattr(source, "__getitem__")
            and len(getattr(source, "shape", ())) == 2)


def count_rows(x, name):
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{name} has shape {tuple(shape)}: pass a 2-D array (one row per embedding).")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)}): pass at least one embedding row.")
    return int(shape[0])


def _rows_per_chunk(dim):
    return max(_TILE, _CHUNK_BYTES // (4 * dim) // _TILE * _TILE)


class Anchors:
    """One modality's N anchors, L2-normalised, served as float32 rows on the device.

    In-memory input is normalised once into a float32 tensor on the device. A streamed source (memmap,
    ``ShardedRows``) stays where it is: its row norms are computed once and each chunk is normalised on the
    fly with the same arithmetic, so results are identical. On a GPU, float16 streamed anchors are loaded
    once onto it as float16 (half the memory: the paper's 1.6M anchors fit a Colab GPU) and normalised per chunk.
    ``unit=True``: the rows are unit length already (a saved or edited model's) and are stored as they are.
    """

    def __init__(self, source, name, device, unit=False):
        self.name, self.device = name, torch.device(device)
        self.raw = self.half = self.data = None
        if is_streamed(source) and not unit:
            dtype = np.dtype(getattr(source, "dtype", None) or np.asarray(source[:1]).dtype)
            if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
                raise ValueError(f"{name} has dtype {dtype}: pass real-valued embeddings (float32 is best).")
            self.n, self.dim = source.shape
            self.norms = torch.empty(self.n, dtype=torch.float32, device=self.device)
            on_gpu_half = self.device.type == "cuda" and dtype == np.float16
            if on_gpu_half:
                try:
                    self.half = torch.empty((self.n, self.dim), dtype=torch.float16, device=self.device)
                except torch.cuda.OutOfMemoryError as error:
                    raise MemoryError(f"{name}: {self.n} float16 anchors do not fit on {self.device}: "
                                      "use fewer anchors or device='cpu'.") from error
            else:
                self.raw = source
            step = _rows_per_chunk(self.dim)
            for start in range(0, self.n, step):
                chunk = torch.from_numpy(np.array(source[start:start + step]))
                if on_gpu_half:
                    self.half[start:start + len(chunk)] = chunk.to(self.device)
                    chunk = self.half[start:start + len(chunk)]
                self.norms[start:start + len(chunk)] = row_norms(chunk.to(self.device, torch.float32), name, start)
            return
        t = as_tensor(source, name)
        self.n, self.dim = t.shape
        self.data = torch.empty(t.shape, dtype=torch.float32, device=self.device)
        step = _rows_per_chunk(self.dim)
        for start in range(0, self.n, step):
            chunk = t[start:start + step].to(self.device, torch.float32)
            norms = row_norms(chunk, name, start)
            if unit:
                off = (norms - 1).abs().max()
                if off > 1e-4:
                    raise ValueError(f"{name} rows are not unit length (a norm is off by {float(off):.2g}): "
                                     "pass raw embeddings to AsifModel(...) instead, which normalises them.")
                self.data[start:start + step] = chunk
            else:
                self.data[start:start + step] = chunk / norms[:, None]

    def rows(self, start, stop):
        """Normalised float32 rows start..stop-1 on the device."""
        if self.data is not None:
            return self.data[start:stop]
        if self.half is not None:
            return self.half[start:stop].to(torch.float32) / self.norms[start:stop, None]
        chunk = torch.from_numpy(np.array(self.raw[start:stop])).to(torch.float32)
        return (chunk / self.norms[start:stop, None].cpu()).to(self.device)

    def tiles(self, chunk_size=None, stop=None):
        """Yield (start, tile, width): tiles of exactly ``_TILE`` rows, zero-padded after ``width`` rows,
        covering anchors 0..stop-1; ``chunk_size`` anchors (rounded up to whole tiles) are read per step."""
        stop = self.n if stop is None else stop
        step = _TILE * max(1, math.ceil((chunk_size or _rows_per_chunk(self.dim)) / _TILE))
        for c0 in range(0, stop, step):
            chunk = self.rows(c0, min(c0 + step, stop))
            for t0 in range(0, chunk.shape[0], _TILE):
                tile = chunk[t0:t0 + _TILE]
                width = tile.shape[0]
                if width < _TILE:  # a fresh zero-padded tile keeps the product's shape, hence its rounding
                    tile = torch.cat([tile, tile.new_zeros(_TILE - width, self.dim)])
                yield c0 + t0, tile, width

    def materialise(self):
        """All normalised rows as one float32 tensor on the device (loads a streamed source)."""
        if self.data is not None:
            return self.data
        step = _rows_per_chunk(self.dim)
        return torch.cat([self.rows(s, min(s + step, self.n)) for s in range(0, self.n, step)])


# ----------------------------------------------------------------------------------------------------
# exact running top-k


def encode_keys(values, columns):
    """One int64 per (similarity, anchor index) that sorts like (value desc, index asc) when sorted desc.
    High 32 bits: the float32 bits made monotonic; low 32 bits: 2**32 - 1 - index. Torch or numpy input."""
    if isinstance(values, np.ndarray):
        bits = (values + np.float32(0)).view(np.int32)  # + 0 turns -0.0 into +0.0
        bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
        return (bits.astype(np.int64) << 32) | (_LOW32 - columns)
    bits = (values + 0.0).contiguous().view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(torch.int64) << 32) | (_LOW32 - columns)


def decode_keys(keys):
    """(float32 similarities, int64 anchor indices) of numpy keys made by ``encode_keys``."""
    bits = (keys >> 32).astype(np.int32)
    bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    return bits.view(np.float32), _LOW32 - (keys & _LOW32)


def _best_keys(sims, start, k):
    """The keys of each row's k best entries of ``sims`` (anchors start..), exact: a float ``topk`` (no int64
    key per similarity), redone with keys for the rows that have a tie at their k-th value, where which of the
    tied entries ``topk`` kept is unspecified."""
    columns = torch.arange(start, start + sims.shape[1], device=sims.device)
    if sims.shape[1] <= k:
        return encode_keys(sims, columns.expand(sims.shape[0], -1))
    values, index = torch.topk(sims, k, dim=1, sorted=False)
    keys = encode_keys(values, index + start)
    tied = ((sims >= values.amin(dim=1, keepdim=True)).sum(dim=1) > k).nonzero().squeeze(1)
    if tied.numel():
        keys[tied] = torch.topk(encode_keys(sims[tied], columns.expand(tied.numel(), -1)), k, dim=1).values
    return keys


class _RunningTopK:
    """The exact top-k keys of a block of query rows, fed their similarities in increasing anchor order.

    On a GPU each part's own top-k is merged in (``topk`` is cheap there). On the CPU, once a row holds k keys
    it only takes similarities strictly above its k-th value (an equal one has a larger index and loses the
    tie); after the first tiles these are rare. They wait in ``pending`` and are merged (one ``topk`` over
    k + pending per row) once some row holds k/2 of them. What this buys, measured by
    benchmarks/bench_model.py: a top-k per tile costs ~50 % of the matrix product on the CPU, the filter ~15 %.
    The filter is numpy (its ``flatnonzero`` is several times faster than torch's ``nonzero``).
    """

    def __init__(self, n, k, device):
        self.k, self.seen, self.gpu = k, 0, device.type != "cpu"
        self.keys = torch.full((n, k), _EMPTY, dtype=torch.int64, device=device)
        self.threshold = np.full(n, -np.inf, dtype=np.float32)  # the k-th best value, once k anchors were seen
        self.pending, self.counts = [], np.zeros(n, dtype=np.int64)

    def add(self, sims, start):
        """Take similarities ``sims`` (rows, w) to anchors start..start+w-1."""
        if self.gpu or self.seen < self.k:  # (on the CPU: not full yet, every value may enter)
            self.seen += sims.shape[1]  # first: the merge sets the thresholds once k anchors were seen
            self._merge(_best_keys(sims, start, self.k))
            return
        s = sims.numpy()
        rows, columns = np.divmod(np.flatnonzero(s > self.threshold[:, None]), s.shape[1])
        if rows.size:
            counts = np.bincount(rows, minlength=len(self.counts))
            # each survivor's column in the pending block: after the row's earlier ones
            slot = self.counts[rows] + np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
            self.pending.append((rows, slot, encode_keys(s[rows, columns], columns + start)))
            self.counts += counts
            if self.counts.max() >= max(1, self.k // 2):
                self._merge()

    def _merge(self, extra=None):
        parts = [self.keys] + ([] if extra is None else [extra])
        if self.pending:
            block = np.full((len(self.counts), self.counts.max()), _EMPTY, dtype=np.int64)
            for rows, slot, keys in self.pending:
                block[rows, slot] = keys
            parts.append(torch.from_numpy(block))
            self.pending, self.counts[:] = [], 0
        if len(parts) > 1:
            self.keys = torch.topk(torch.cat(parts, dim=1), self.k, dim=1, sorted=False).values
            if not self.gpu and self.seen >= self.k:
                self.threshold = decode_keys(self.keys.min(dim=1).values.numpy())[0]

    def result(self):
        """The top-k keys (n, k) so far, numpy int64, unordered (``_EMPTY`` in slots not filled yet)."""
        self._merge()
        return self.keys.cpu().numpy()


def plan(n, k, memory_budget, snapshots=0):
    """(query rows per pass over the anchors, rows per matrix product) within ``memory_budget`` bytes. A row of
    a block holds a tile of similarities and, for the first tile, its top-k and tie check (at most 14 bytes per
    anchor of a tile), and one merge's int64 keys; a row of a pass holds its k keys and pending survivors, plus
    ``snapshots`` copies of the keys (``running_topk``). The row block does not change a result: any number of
    rows from 16 up gives the same bits, and blocks of 1000+ rows make the fastest products."""
    budget = DEFAULT_BUDGET if memory_budget is None else memory_budget
    per_block_row = 14 * _TILE + 24 * 2 * k
    block = min(_MAX_ROW_BLOCK, max(_ROW_MULTIPLE, budget // 2 // per_block_row // _ROW_MULTIPLE * _ROW_MULTIPLE))
    per_pass = int(min(n, max(block, (budget - block * per_block_row) // (8 * k * (4 + snapshots)))))
    # blocks of equal size: a last block of a few rows would read a whole tile for little work
    blocks = math.ceil(per_pass / block)
    return per_pass, int(min(block, _ROW_MULTIPLE * math.ceil(per_pass / blocks / _ROW_MULTIPLE)))


def running_topk(queries, anchors, k, stops, chunk_size=None, block=_MAX_ROW_BLOCK):
    """One pass over the anchors: yield (stop, keys) for each anchor-prefix size in ``stops``, in increasing
    order; ``keys`` (n, k) numpy int64 are each query's best k among anchors 0..stop-1, unordered, with
    ``_EMPTY`` in the slots beyond the stop when stop < k."""
    n, dim = queries.shape
    device = queries.device
    blocks = []
    for r0 in range(0, n, block):
        rows = queries[r0:r0 + block]
        padded = rows.new_zeros((_ROW_MULTIPLE * math.ceil(rows.shape[0] / _ROW_MULTIPLE), dim))
        padded[:rows.shape[0]] = rows
        blocks.append((r0, r0 + rows.shape[0], padded, _RunningTopK(rows.shape[0], k, device)))
    sims = torch.empty((blocks[0][2].shape[0], _TILE), device=device)
    stops = sorted(set(stops))
    for start, tile, width in anchors.tiles(chunk_size, stops[-1]):
        cuts = [start] + [s for s in stops if start < s < start + width] + [start + width]
        found = {stop: np.empty((n, k), dtype=np.int64) for stop in cuts[1:] if stop in stops}
        for r0, r1, padded, state in blocks:
            torch.matmul(padded, tile.T, out=sims[:padded.shape[0]])
            for c0, c1 in zip(cuts, cuts[1:]):
                state.add(sims[:r1 - r0, c0 - start:c1 - start], c0)
                if c1 in found:
                    found[c1][r0:r1] = state.result()
        yield from found.items()
