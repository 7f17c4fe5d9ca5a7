"""Exact top-k that skips most of the product: a low-rank projection bounds every cosine; unneeded tiles are skipped.

Only each query's k best anchors enter a relative representation; an anchor whose similarity provably cannot reach
the query's current k-th best value never needs multiplying. ``PrunedSearch(anchors)`` builds, once:

- **layout**: scikit-learn's k-means splits the unit anchors into cells of about ``cell_size``; cells are placed next
  to similar cells (a second k-means, over the centroids, weighted by cell size) and the anchors copied in that
  order, so a tile of ``tile_size`` (256) consecutive anchors holds similar ones. A tile (the last one zero-padded)
  meets a block of query rows padded to a multiple of 16. The plain path (``topk.py``) uses tiles of 2,048, but
  MKL's sgemm gives a similarity the same bits in any product of at least 16 columns and 4 rows (measured), so
  every similarity has the bits the plain fp32 path gives it. ``same_bits`` checks this at build on the machine's
  BLAS; where it fails, the walk uses 2,048-wide tiles (a perfect bound would then still visit 0.31 of the product
  on the real set, against 0.17 at 256), and where even those round by row count, the plain path answers;
- **projection**: the top ``rank`` principal directions V of the anchors (float64 eigenvectors of their Gram matrix,
  orthonormal to 1e-12); each anchor keeps its projection a_P = V^T a and the norm of what is left, |a_R|.

**The bound** (rigorous for the float32 similarity the plain path computes, not only the real one): q.a = q_P.a_P +
q_R.a_R <= q_P.a_P + |q_R| |a_R| (Cauchy-Schwarz on the residuals). So one product of rank + 1 columns, [q_P, |q_R|]
times [a_P, |a_R|], bounds every (query, anchor) similarity at about rank / d of the full product's cost. Margins:
the plain path's float32 product is within gamma_d |q| |a| of q.a (gamma_d = d u / (1 - d u), u = 2**-24, any
summation order), the float32 bound product within 2 gamma_(rank+3) |q| |a| of its real value (inputs rounded to
float32 included); a pad of (1e-6 + sqrt(rank * drift)) |x| on each residual norm covers its float64 arithmetic and
V's measured drift from orthonormality. A row needs a tile only when the largest bound over the tile's anchors
reaches the row's running k-th value.

**The bound in bfloat16** (``precision``; "auto" measures at build, ``bfloat16_pays``): where the CPU multiplies
bfloat16 natively (AVX512-BF16, AMX) a bound product of twice the rank costs what the float32 one does, and its
smaller residual cuts what the walk visits (real set: 0.41 -> 0.33 of the product). Rounding is accounted for, not
hoped away: x_P is rounded to bfloat16 (x~) and q_P.a_P <= q~.a~ + |q~| |a_P - a~| + |q_P - q~| |a_P|, so each side
carries two more columns (norms rounded up, as is the residual norm's); products of bfloat16 numbers are exact in
float32, their float32 sum is within gamma_(rank+4) |x~| |y~| of its real value, and its rounding to bfloat16 is
covered by adding u |z| / (1 - u), u = 2**-8, to the tile's largest value z. This assumes the product accumulates
in float32, as torch's CPU kernels (oneDNN, and its reference kernel) do (probed on this machine: 1 + 259 * 2**-9
sums to 1.5078 at 1 to 2,048 rows, with oneDNN and without); the sum's margin is doubled so that kernels rounding to
odd (Arm's BFDOT without EBF16) are covered too. The selected tiles are then multiplied in float32 as before, so the
result is still the plain path's, bit for bit.

**The walk**, per block of up to 2,048 query rows: each row first meets its best tiles by bound, 4k anchors' worth
(rows grouped by tile, one product per tile, one top-k per row over them all), which gives it a k-th value; then each
tile is multiplied once by all the rows that still need it. The running top-k keys sort like the plain path's
(value desc, index asc) and take a similarity equal to the k-th value too (anchors arrive out of index order), so the
result — set, ties, values — is the plain path's, bit for bit. Two blocks are walked at a time, each in a thread: a
block's numpy bookkeeping runs on one core while the other block's products use the rest (``same_bits`` checks the
products concurrently too).

**When it does not pay** (unclustered anchors: every bound near the top): at build a sample of anchors, queried as
rows, measures the fraction of the product the walk would do; above ``max_visited`` every call goes by the plain
path, at no extra cost (0.75 by default: the bound product costs about rank / d and a skipped tile saves its
product, so the walk wins below about 0.85 of the product). Each block also checks, after its first tiles, how many
(row, tile) pairs could still be needed, and hands the call to the plain path when nearly all could. ``last``
reports what the last call did (route, fraction of the (query, anchor) products computed).

What it buys (``benchmarks/bench_model.py --only exact-routes``): on 56,109 real EfficientNet embeddings, 10,147
queries, k=800, 0.43-0.46x the bare fp32 product against the plain path's 0.94-1.07x, visiting 0.33 of it with the
bfloat16 rank-256 bound (0.41 with the float32 rank-128 one; 0.74x, 0.59 with 2,048-wide tiles); one block at a time
it was 0.48-0.60x. A perfect bound at the same tiles would visit 0.17; the walk visits about what the bound allows
(0.30 with each row's final k-th value known from the start, 0.33 walked). The bound holds per anchor far better
than per tile (0.05 of the (query, anchor) pairs reach the k-th value), but bounding 32-anchor slices and multiplying
each row's run of needed slices (visited 0.21-0.27) was not faster: many small products.
"""
from __future__ import annotations

import functools
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch

from .topk import _EMPTY, _ROW_MULTIPLE, _TILE, decode_keys, encode_keys

__all__ = ["PrunedSearch"]

_BLOCK = 2048  # query rows walked together: a tile is multiplied once by all the rows that need it (efficient products)
_SAMPLE = 256  # anchors queried at build to decide whether pruning pays
# query blocks walked at once, each in a thread: a block's numpy work runs on one core, the other block's products
# fill the rest (real set, 2 cores: 0.43-0.46x the GEMM against 0.48x one block at a time the same day)
_WORKERS = 2
# a block gives up when more than this fraction of its (row, tile) pairs may still be needed after each row's first
# tiles (an overestimate: k-th values rise as the walk goes; on the real set the walk then does about 0.4 of it)
_GIVE_UP = 0.9
_FIRST = 4  # each row's first tiles hold 4k anchors: a higher k-th value to start from (2k: 0.64x, 4k: 0.59x)
_FIT_ROWS = 32768  # rows k-means and the projection are fitted on (all rows are then assigned / projected)
_BF16_U = 2.0 ** -8  # bfloat16's unit roundoff (8 significant bits)


def gamma(d):
    """Higham's gamma_d: the relative bound on the error of a float32 dot product of length d, any order."""
    u = 2.0 ** -24
    return d * u / (1 - d * u)


class RunningBest:
    """Each row's k best (similarity, anchor) keys among what it was given, anchors in any order: exact, ties to the
    lowest index. A row that holds k keys only takes similarities >= its k-th value (an equal one may carry a lower
    index); survivors wait in ``pending`` and are merged (one ``topk`` over k + pending per row) once some row holds
    k/2 of them, as in ``topk._RunningTopK``."""

    def __init__(self, n, k):
        self.n, self.k = n, k
        self.keys = np.full((n, k), _EMPTY, dtype=np.int64)
        self.kth = np.full(n, -np.inf, dtype=np.float32)
        self.seen = np.zeros(n, dtype=np.int64)
        self.pending, self.counts = [], np.zeros(n, dtype=np.int64)

    def add(self, rows, sims, columns):
        """Take ``sims`` (len(rows), w) float32 of rows ``rows`` (increasing) to anchors ``columns`` (w,)."""
        self.seen[rows] += sims.shape[1]
        # most rows a loose bound sent here take nothing: one (threaded) row max drops them before numpy's scan
        hit = torch.amax(torch.from_numpy(sims), dim=1).numpy() >= self.kth[rows]
        if not hit.all():
            rows, sims = rows[hit], sims[hit]
        rr, cc = np.divmod(np.flatnonzero(sims >= self.kth[rows, None]), sims.shape[1])
        if rr.size:
            owners = rows[rr]
            counts = np.bincount(rr, minlength=len(rows))
            slot = self.counts[owners] + np.arange(rr.size) - (np.cumsum(counts) - counts)[rr]
            self.pending.append((owners, slot, encode_keys(sims[rr, cc], columns[cc])))
            self.counts[rows] += counts
            if self.counts.max() >= max(1, self.k // 2):
                self._merge()

    def _merge(self):
        if not self.pending:
            return
        active = np.flatnonzero(self.counts)
        where = np.full(self.n, -1, dtype=np.int64)
        where[active] = np.arange(active.size)
        block = np.full((active.size, self.counts.max()), _EMPTY, dtype=np.int64)
        for owners, slot, keys in self.pending:
            block[where[owners], slot] = keys
        merged = torch.cat([torch.from_numpy(self.keys[active]), torch.from_numpy(block)], dim=1)
        self.keys[active] = torch.topk(merged, self.k, dim=1, sorted=False).values.numpy()
        full = active[self.seen[active] >= self.k]
        self.kth[full] = decode_keys(self.keys[full].min(axis=1))[0]
        self.pending, self.counts[:] = [], 0

    def start(self, keys, seen):
        """Begin from each row's candidate keys (n, c) int64 (``_EMPTY`` where none), ``seen`` (n,) real ones each."""
        self.keys = torch.topk(torch.from_numpy(keys), self.k, dim=1, sorted=False).values.numpy()
        self.seen[:] = seen
        full = np.flatnonzero(self.seen >= self.k)
        self.kth[full] = decode_keys(self.keys[full].min(axis=1))[0]

    def result(self):
        self._merge()
        return self.keys


class PrunedSearch:
    """The exact top-k step of an ``AsifModel`` (``model.with_index("pruned")``), skipping tiles by projection bounds.

    ``anchors``: the model's ``topk.Anchors`` of one modality. ``rank``: directions of the projection (default
    d / 10 in float32, d / 5 in bfloat16: the bound costs about a tenth of the product). ``precision``: of the bound
    product, "float32", "bfloat16" or "auto" (bfloat16 where ``bfloat16_pays``). ``cell_size``: anchors per k-means
    cell of the layout.
    ``tile_size``: anchors per product (16 to 2,048; 2,048 where ``same_bits`` finds the BLAS rounding by shape).
    ``max_visited``: the fraction of the product above which pruning does not pay and the plain path answers.
    ``k``: the k the build-time check assumes (the model's). ``force=True`` keeps the pruned walk even where it does
    not pay (for tests and benchmarks). Only on the CPU: on a GPU the plain path answers (its product is cheap there,
    and its kernels are chosen by shape, so bits would not be pinned).
    """

    kind, exact = "pruned", True

    def __init__(self, anchors, rank=None, cell_size=128, tile_size=256, max_visited=0.75, k=800, force=False,
                 seed=0, precision="auto"):
        if precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision={precision!r}: pass 'auto', 'float32' or 'bfloat16' (the bound product's).")
        self.n, self.dim, self.max_visited, self.force = anchors.n, anchors.dim, float(max_visited), bool(force)
        self.last, self.precision = {}, None  # None: no bound is built (the plain path answers)
        started = time.perf_counter()
        self.built = anchors.device.type == "cpu" and self.n > _TILE
        if not self.built:
            self.pays, self.build = False, {"seconds": 0.0, "reason": "GPU or a single tile: the plain path answers"}
            return
        rows = anchors.materialise().numpy()
        if isinstance(tile_size, bool) or not isinstance(tile_size, int) or not 16 <= tile_size <= _TILE:
            raise ValueError(f"tile_size={tile_size!r} must be an int from 16 to {_TILE} (anchors per product).")
        probe = torch.from_numpy(rows[:_TILE]).clone()  # torch's own (aligned) memory, like the walk's operands
        fits = same_bits(probe, tile_size)
        self.tile_size = tile_size if fits else _TILE
        if not (fits or same_bits(probe, _TILE)):  # this BLAS rounds by row count too: bits cannot be pinned
            self.built, self.pays = False, False
            self.build = {"seconds": time.perf_counter() - started, "reason": "the BLAS rounds by shape: plain path"}
            return
        labels, centroids = _cells(rows, max(1, round(self.n / cell_size)), seed)
        self.order, _ = _layout(labels, centroids, math.ceil(self.n / self.tile_size), seed)  # position -> anchor index
        self.rows = torch.from_numpy(rows).index_select(0, torch.from_numpy(self.order))  # torch-allocated, aligned
        if precision == "auto":  # bfloat16 only where it buys a higher default rank, at about the same cost
            doubled = rank is None and max(8, round(self.dim / 5)) > max(8, round(self.dim / 10))
            precision = "bfloat16" if doubled and bfloat16_pays(self.dim) else "float32"
        self.precision = precision
        self.rank = int(rank or max(8, round(self.dim / (5 if precision == "bfloat16" else 10))))
        if not 1 <= self.rank <= self.dim:
            if rank:
                raise ValueError(f"rank={rank} must be between 1 and the anchors' dimension {self.dim}.")
            self.rank = self.dim
        self._project(seed)
        self.tiles = math.ceil(self.n / self.tile_size)
        self.build = {"seconds": 0.0, "rank": self.rank, "cells": len(np.unique(labels)), "tiles": self.tiles,
                      "tile_size": self.tile_size, "precision": self.precision}
        sample = self.rows[torch.from_numpy(np.linspace(0, self.n - 1, min(_SAMPLE, self.n)).round().astype(np.int64))]
        _, fraction = self._walk(sample, min(k, self.n), give_up=False)
        self.pays = fraction <= self.max_visited
        self.build.update(seconds=time.perf_counter() - started, sample_visited=fraction)

    def _project(self, seed):
        """V (dim, rank) float64 with orthonormal columns, and [a_P, |a_R| + pad |a|] per anchor (float32)."""
        pick = np.sort(np.random.default_rng(seed).choice(self.n, min(self.n, _FIT_ROWS), replace=False))
        sample = self.rows.numpy()[pick].astype(np.float64)
        _, vectors = np.linalg.eigh(sample.T @ sample)
        self.V, _ = np.linalg.qr(vectors[:, ::-1][:, :self.rank])
        drift = np.abs(self.V.T @ self.V - np.eye(self.rank)).max()
        if drift > 1e-12:
            raise ArithmeticError("the projection lost orthonormality: pass a smaller rank")
        self.pad = 1e-6 + math.sqrt(self.rank * drift)  # |x_R| computed as sqrt(|x|^2 - |x_P|^2): V's drift covered
        parts, self.norm_max, self.augmented_max = [], 0.0, 0.0
        for start in range(0, self.n, _FIT_ROWS):  # float64 in steps: 1.6M x 384 would be 4.9 GB at once
            a64 = self.rows[start:start + _FIT_ROWS].numpy().astype(np.float64)
            augmented, size = self._augment(a64, "anchor")
            parts.append(augmented)
            self.norm_max = max(self.norm_max, float(np.linalg.norm(a64, axis=1).max()) * (1 + 1e-12))
            self.augmented_max = max(self.augmented_max, float(size.max()))
        self.augmented = torch.cat(parts)

    def _augment(self, rows64, side):
        """Each row's columns of the bound product (float32 or bfloat16) and the norms of those columns (float64)."""
        projected = rows64 @ self.V
        norms = np.linalg.norm(rows64, axis=1)
        residual = np.sqrt(np.maximum(0.0, norms ** 2 - (projected ** 2).sum(axis=1))) + self.pad * norms
        if self.precision == "float32":
            augmented = torch.from_numpy(np.concatenate([projected, residual[:, None]], axis=1).astype(np.float32))
        else:  # x_P rounded to bfloat16 (x~); x_P.y_P <= x~.y~ + |x~| |y_P - y~| + |x_P - x~| |y_P|: two more columns
            rounded = torch.from_numpy(projected).to(torch.bfloat16)
            error = np.linalg.norm(projected - rounded.double().numpy(), axis=1)
            size = np.linalg.norm(rounded.double().numpy(), axis=1)
            pairs = (size, error) if side == "query" else (error, np.linalg.norm(projected, axis=1))
            augmented = torch.cat([rounded, _bfloat16_at_least(np.stack([residual, *pairs], axis=1))], dim=1)
        return augmented, np.linalg.norm(augmented.double().numpy(), axis=1)

    def tile_bounds(self, queries):
        """(n, tiles) float64: an upper bound on every float32 similarity of each query row to each tile's anchors
        (margins included: a row needs a tile only if its bound there reaches the row's k-th value)."""
        q64 = queries.numpy().astype(np.float64)
        norms = np.linalg.norm(q64, axis=1)
        augmented, size = self._augment(q64, "query")
        bounds = torch.empty((queries.shape[0], self.tiles), dtype=augmented.dtype)
        w = self.tile_size
        for t in range(self.tiles):
            torch.amax(augmented @ self.augmented[t * w:(t + 1) * w].T, dim=1, out=bounds[:, t])
        bounds = bounds.double().numpy()
        margin = gamma(self.dim) * norms * self.norm_max  # the plain path's float32 similarity
        if self.precision == "float32":  # inputs rounded to float32 and the float32 sum
            margin += 2 * gamma(self.rank + 3) * norms * self.norm_max
        else:  # exact products of bfloat16 inputs summed in float32, then the sum rounded to bfloat16 (u = 2**-8)
            margin += 2 * gamma(self.rank + 4) * size * self.augmented_max  # 2x: kernels that round to odd too
            bounds += np.abs(bounds) * (_BF16_U / (1 - _BF16_U))
        # 1e-6 relative: slack on top of the proven margins
        return bounds + 1e-6 * np.abs(bounds) + (margin * (1 + 1e-6) + 1e-30)[:, None]

    def _walk(self, queries, k, give_up):
        """(keys (n, k) or None, fraction of the product computed). With ``give_up``, returns None as soon as a
        block's first tiles leave more than ``_GIVE_UP`` of its (row, tile) pairs possibly needed. Blocks (at most
        ``_BLOCK`` rows, their count a multiple of ``_WORKERS`` where n allows) are walked ``_WORKERS`` at a time, in
        threads: one block's numpy work (one core) overlaps the other's products. A give-up, an error or an interrupt
        stops the other blocks at their next tile."""
        n = queries.shape[0]
        keys = np.empty((n, k), dtype=np.int64)
        if n == 0:
            return keys, 0.0
        size = math.ceil(n / (_WORKERS * math.ceil(n / (_WORKERS * _BLOCK))))
        starts = {}
        halt = threading.Event()
        pool = ThreadPoolExecutor(min(_WORKERS, math.ceil(n / size)), thread_name_prefix="asif-prune")
        try:
            for r0 in range(0, n, size):
                starts[pool.submit(self._walk_block, queries[r0:r0 + size], k, give_up, halt)] = r0
            done = 0
            for walk in as_completed(starts):
                got = walk.result()
                if got is None:  # a block gave up: the plain path answers the call
                    return None, 0.0
                r0 = starts[walk]
                keys[r0:r0 + size], work = got
                done += work
        finally:
            halt.set()
            pool.shutdown(wait=True, cancel_futures=True)
        return keys, done / (n * self.n)

    def _walk_block(self, queries, k, give_up, halt):
        """(keys, work) of one block, or None where it gives up or ``halt`` is set (another block ended the call)."""
        if halt.is_set():
            return None
        b = queries.shape[0]
        bounds = self.tile_bounds(queries)
        best = RunningBest(b, k)
        buffer = torch.empty((_ROW_MULTIPLE * math.ceil(b / _ROW_MULTIPLE), self.dim))
        sims = torch.empty((buffer.shape[0], self.tile_size))
        todo = np.ones((b, self.tiles), dtype=bool)

        def multiply(t, need):
            """Rows ``need`` (increasing) times tile t: their float32 similarities and the tile's anchor indices."""
            m = _ROW_MULTIPLE * math.ceil(need.size / _ROW_MULTIPLE)
            torch.index_select(queries, 0, torch.from_numpy(need), out=buffer[:need.size])
            buffer[need.size:m] = 0
            start, stop = t * self.tile_size, min((t + 1) * self.tile_size, self.n)
            torch.matmul(buffer[:m], self._tile(t).T, out=sims[:m])
            todo[need, t] = False
            return sims[:need.size, :stop - start].numpy(), self.order[start:stop]

        # each row's most promising tiles, _FIRST k anchors' worth, into one (b, n_first, w) block of keys: one top-k
        # per row then gives its k-th value before anything is skipped (fed tile by tile, the merges cost 1.2 s of 8)
        w, n_first = self.tile_size, min(self.tiles, math.ceil(_FIRST * k / self.tile_size))
        if give_up and n_first > _GIVE_UP * self.tiles:  # k that large: the first tiles alone are nearly everything
            return None
        first = np.argpartition(-bounds, n_first - 1, axis=1)[:, :n_first]
        keys = np.full((b, n_first, w), _EMPTY, dtype=np.int64)
        seen = np.zeros(b, dtype=np.int64)
        for t in np.unique(first):
            rows, slots = np.nonzero(first == t)
            values, columns = multiply(t, rows)
            keys[rows, slots, :len(columns)] = encode_keys(values, columns)
            seen[rows] += len(columns)
        best.start(keys.reshape(b, n_first * w), seen)
        work = int(seen.sum())
        needed = todo & (bounds >= best.kth[:, None])
        if give_up and needed.sum() > _GIVE_UP * b * self.tiles:  # what is left, not what is done, decides
            return None
        for t in np.argsort(-needed.sum(axis=0), kind="stable"):  # tiles most rows need first: k-th values rise
            if halt.is_set():
                return None
            need = np.flatnonzero(todo[:, t] & (bounds[:, t] >= best.kth))
            if need.size:
                values, columns = multiply(t, need)
                best.add(need, values, columns)
                work += values.size
        return best.result(), work

    def _tile(self, t):
        tile = self.rows[t * self.tile_size:(t + 1) * self.tile_size]
        if tile.shape[0] < self.tile_size:  # zero-padded like the plain path's last tile: same product shape
            tile = torch.cat([tile, tile.new_zeros(self.tile_size - tile.shape[0], self.dim)])
        return tile

    def topk_keys(self, queries, k, plain):
        """Each query row's exact top-k keys (n, k) int64, as ``plain(queries)`` (the plain path) gives them."""
        started = time.perf_counter()
        keys, fraction, route = None, 1.0, "plain"
        if self.built and (self.pays or self.force) and k <= self.n:
            keys, fraction = self._walk(queries.contiguous(), k, give_up=not self.force)
            route = "pruned" if keys is not None else "plain (the bounds did not prune)"
        if keys is None:
            keys = plain(queries)
        self.last = {"route": route, "visited": fraction if route == "pruned" else 1.0,
                     "seconds": time.perf_counter() - started}
        return keys

    def __repr__(self):
        state = "prunes" if self.pays else "does not pay: plain path"
        return f"PrunedSearch({self.n} anchors, rank {self.build.get('rank', 0)}, {state})"


def same_bits(rows, width, seed=0):
    """Whether this machine's BLAS gives each similarity the same bits in a (m, ``width``) product of gathered rows, m
    a multiple of 16, as in the plain path's (2,048, 2,048) one (``topk.py``), checked on ``rows`` (2,048, d) float32
    in torch's memory, as queries and anchors. Narrower tiles: every m from 16 to 2,048 at the first columns, and at a
    middle and the last columns for m up to 256 (0.8 s at d=1,280); 2,048-wide ones (the plain path's): m up to 256
    and three larger. MKL's sgemm gives the same bits from 16 columns and 4 rows up (measured); where a check fails
    the walk uses 2,048-wide tiles, and where that fails too the plain path answers. The products are checked
    ``_WORKERS`` at a time from as many threads, as the walk runs them."""
    full = torch.matmul(rows, rows.T)
    rng = np.random.default_rng(seed)
    counts = range(16, len(rows) + 1, 16) if width < len(rows) else [*range(16, 257, 16), 512, 1008, len(rows)]
    cases = []
    for m in counts:
        pick = torch.from_numpy(np.sort(rng.choice(len(rows), m, replace=False)))
        starts = {0, (len(rows) // 2) // width * width, max(0, len(rows) - width)} if m <= 256 else {0}
        cases += [(pick, start) for start in sorted(starts)]

    def check(some):
        return all(torch.equal(torch.matmul(rows[pick], rows[start:start + width].T), full[pick, start:start + width])
                   for pick, start in some)

    with ThreadPoolExecutor(_WORKERS) as pool:  # products run concurrently, as the walk's do
        return all(pool.map(check, [cases[i::_WORKERS] for i in range(_WORKERS)]))


@functools.lru_cache(maxsize=None)
def bfloat16_pays(dim, rows=1024, width=256, repeats=5):
    """Whether a bfloat16 bound product of rank d/5 (+4 columns) takes at most 1.5x a float32 one of rank d/10 (+1)
    on this machine (best of ``repeats`` after one untimed round that pays oneDNN's set-up; 0.1-0.3 s, measured once
    per process and dimension, so every build in a process decides alike). Doubling the rank is worth that: on the
    real set it cuts the product visited from 0.41 to 0.33, where the whole bound costs about 0.1 of it. With
    AVX512-BF16 or AMX the two take about the same time (this machine: 0.21 s vs 0.17 s per 2,048 rows of the real
    set's 220 tiles); without (AVX2), torch's bfloat16 product took 6.6x the float32 one, and float32 is kept."""
    timings = {}
    for dtype, columns in ((torch.float32, max(8, round(dim / 10)) + 1), (torch.bfloat16, max(8, round(dim / 5)) + 4)):
        left, right = torch.ones((rows, columns), dtype=dtype), torch.ones((8 * width, columns), dtype=dtype)
        best = math.inf
        for round_ in range(repeats + 1):
            started = time.perf_counter()
            for t in range(8):
                torch.amax(left @ right[t * width:(t + 1) * width].T, dim=1)
            if round_:
                best = min(best, time.perf_counter() - started)
        timings[dtype] = best
    return timings[torch.bfloat16] <= 1.5 * timings[torch.float32]


def _bfloat16_at_least(values):
    """float64 values >= 0 as bfloat16, each rounded up: products of such columns are upper bounds."""
    out = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(torch.bfloat16)
    low = torch.from_numpy(out.double().numpy() < values)
    while low.any():  # nearest rounding went down: the next bfloat16 up (bits + 1 for a positive finite value)
        bits = out.view(torch.int16)
        bits[low] += 1
        low = torch.from_numpy(out.double().numpy() < values)
    return out


def _cells(rows, n_cells, seed):
    """k-means labels of every row and the cell centroids (scikit-learn, fitted on a sample)."""
    from sklearn.cluster import KMeans

    pick = np.random.default_rng(seed).choice(len(rows), min(len(rows), _FIT_ROWS), replace=False)
    kmeans = KMeans(n_clusters=min(n_cells, len(pick)), init="random", n_init=1, max_iter=20,
                    random_state=seed).fit(rows[pick])
    return _nearest(rows, kmeans.cluster_centers_.astype(np.float32)), kmeans.cluster_centers_


def _nearest(rows, centres):
    labels = np.empty(len(rows), dtype=np.int64)
    half = 0.5 * (centres * centres).sum(axis=1)
    for s in range(0, len(rows), 16384):
        labels[s:s + 16384] = (rows[s:s + 16384] @ centres.T - half).argmax(axis=1)
    return labels


def _layout(labels, centroids, n_groups, seed):
    """Anchor order: cells grouped by a k-means of their centroids (weighted by size), then by cell, then by index."""
    from sklearn.cluster import KMeans

    used = np.unique(labels)
    sizes = np.bincount(labels, minlength=len(centroids))[used]
    groups = np.zeros(len(used), dtype=np.int64)
    if n_groups > 1 and len(used) > n_groups:
        groups = KMeans(n_clusters=n_groups, init="random", n_init=1, max_iter=50, random_state=seed).fit(
            centroids[used], sample_weight=sizes).labels_
    rank = np.empty(len(centroids), dtype=np.int64)
    rank[used[np.lexsort((used, groups))]] = np.arange(len(used))
    order = np.lexsort((np.arange(len(labels)), rank[labels]))
    return order, rank
