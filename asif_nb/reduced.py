"""Exact top-k from a reduced-precision pass: float16/bfloat16 candidates under a proven error bound, float32 rescoring.

Where the hardware multiplies float16 or bfloat16 much faster than float32 (tensor cores; CPUs with AMX or AVX-512
BF16), ``ReducedSearch`` (``model.with_index("reduced")``) does the full product at low precision and keeps, per
query, every anchor whose low-precision score s~ could still be in the top k: if |s~ - s| <= eps for every anchor
(s the float32 similarity the plain path computes), the plain top k all have s~ >= tau~ - 2 eps, tau~ being the k-th
largest s~ (k anchors have s~ >= tau~, so s >= tau~ - eps for all of them, hence the k-th largest s is too). Those
candidates are rescored in float32 with the plain path's tile shapes (a padded block of 16 query rows times tiles of
2,048 gathered anchors), so the top k, ties and values are the plain path's, bit for bit on the CPU.

The bound (``error_bound``), for unit rows of dimension d: rounding the inputs to a format with unit roundoff u_in
moves a product term by at most (2 u_in + u_in^2) |q_i a_i|; the float32 accumulation adds gamma_d of the terms'
magnitudes (Higham; any order); rounding the result to the output format u_out of its magnitude; the plain path's own
float32 product is gamma_d from the real value. Everything is relative to sum |q_i a_i| <= |q| |a|, taken from the
rows' norms. Accumulation in float32 is asked for explicitly on a GPU (no reduced-precision reductions).

Chosen at run time only when it pays: at build a micro-benchmark times one tile product at each precision; unless
the low one is at most ``max_ratio`` of float32, the plain path answers every call. Then the whole route is timed
against the plain path on a sample of anchors queried as rows, and kept only if faster. ``force=True`` skips both
(tests, benchmarks). ``build`` holds the timings and the decision; ``last`` the candidates per row of the last call.
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch

from .prune import RunningBest, gamma
from .topk import _ROW_MULTIPLE, _TILE

__all__ = ["ReducedSearch", "error_bound"]

_UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8, torch.float32: 2.0 ** -24}
_BLOCK = 1024  # query rows of the low-precision pass
_RESCORE_ROWS = 16  # query rows rescored together (their candidates' union is gathered once)
_SAMPLE = 256


def error_bound(dim, low, out, norm=1.0):
    """The largest |s~ - s| between a product of unit rows in ``low`` precision, accumulated in float32 and rounded
    to ``out``, and the plain path's float32 product (both against the real value), scaled by ``norm`` = |q| |a|."""
    u, v, g = _UNIT_ROUNDOFF[low], _UNIT_ROUNDOFF[out], gamma(dim)
    inputs = 2 * u + u * u
    accumulated = (1 + inputs) * (1 + g)  # the low-precision sum's magnitude, relative to sum |q_i a_i|
    return norm * (inputs + g * (1 + u) ** 2 + v * accumulated + g) * (1 + 1e-6) + 1e-30 * dim


@contextlib.contextmanager
def _float32_accumulation(device):
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction)
    matmul.allow_fp16_reduced_precision_reduction = matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction = saved


def _low_product(q, tile, device):
    """(float32 scores, the format they were rounded to): on a GPU asked for in float32 where torch can."""
    if device.type == "cuda":
        try:
            return torch.mm(q, tile.T, out_dtype=torch.float32), torch.float32
        except (TypeError, RuntimeError):
            pass
    return (q @ tile.T).float(), q.dtype


class ReducedSearch:
    """The exact top-k step of an ``AsifModel`` (``model.with_index("reduced")``) with a low-precision candidate pass.

    ``precision``: "auto" (float16 on a GPU, bfloat16 on a CPU), "float16" or "bfloat16". ``max_ratio``: the low
    product's time over float32's above which it is never chosen. ``force``: use it without measuring.
    """

    kind, exact = "reduced", True

    def __init__(self, anchors, precision="auto", max_ratio=0.6, force=False, k=800, seed=0):
        if precision not in ("auto", "float16", "bfloat16"):
            raise ValueError(f"precision={precision!r}: use 'auto', 'float16' or 'bfloat16'.")
        self.anchors, self.n, self.dim, self.device = anchors, anchors.n, anchors.dim, anchors.device
        self.low = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
            precision, torch.float16 if self.device.type == "cuda" else torch.bfloat16)
        self.max_ratio, self.force, self.last = float(max_ratio), bool(force), {}
        started = time.perf_counter()
        self.rows = anchors.materialise()
        self.low_rows = self.rows.to(self.low)
        norms = torch.linalg.vector_norm(self.rows.double(), dim=1)
        self.norm_max = float(norms.max())
        self.build = {"precision": str(self.low).replace("torch.", ""), "device": self.device.type}
        if self.force:
            self.chosen = True
        else:
            ratio = self._tile_ratio()
            self.build["tile_time_ratio"] = ratio
            self.chosen = ratio <= self.max_ratio and self._route_pays(min(k, self.n))
        self.build.update(chosen=self.chosen, seconds=time.perf_counter() - started)

    def _tile_ratio(self):
        """Best-of-3 time of a (512, d) x (d, 2,048) product at low precision over float32's."""
        q = self.rows[:512] if self.n >= 512 else self.rows[torch.arange(512) % self.n]
        tile = self._tile(self.rows, 0)
        times = {}
        for name, a, b in (("low", q.to(self.low), tile.to(self.low)), ("float32", q, tile)):
            best = math.inf
            for _ in range(4):
                self._sync()
                t0 = time.perf_counter()
                a @ b.T
                self._sync()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        return times["low"] / times["float32"]

    def _route_pays(self, k):
        from .model import _plain_keys

        sample = self.rows[np.linspace(0, self.n - 1, min(_SAMPLE, self.n)).round().astype(np.int64)]
        t0 = time.perf_counter()
        _plain_keys(sample, self.anchors, k, None, None)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._route(sample, k)
        route = time.perf_counter() - t0
        self.build.update(sample_plain_seconds=plain, sample_route_seconds=route)
        return route < 0.9 * plain

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _tile(self, rows, t):
        tile = rows[t * _TILE:(t + 1) * _TILE]
        if tile.shape[0] < _TILE:
            tile = torch.cat([tile, tile.new_zeros(_TILE - tile.shape[0], self.dim)])
        return tile

    def topk_keys(self, queries, k, plain):
        """Each query row's exact top-k keys (n, k) int64, as ``plain(queries)`` gives them."""
        started = time.perf_counter()
        if not self.chosen or k > self.n:
            keys, stats = plain(queries), {"route": "plain"}
        else:
            keys, stats = self._route(queries, k)
        self.last = {**stats, "seconds": time.perf_counter() - started}
        return keys

    def _route(self, queries, k):
        qnorm = float(torch.linalg.vector_norm(queries.double(), dim=1).max())
        keys = np.empty((queries.shape[0], k), dtype=np.int64)
        counts = []
        for r0 in range(0, queries.shape[0], _BLOCK):
            block = queries[r0:r0 + _BLOCK]
            rows, columns = self._candidates(block, k, qnorm)
            keys[r0:r0 + len(block)] = self._rescore(block, rows, columns, k)
            counts.append(np.bincount(rows, minlength=len(block)))
        counts = np.concatenate(counts)
        return keys, {"route": "reduced", "candidates_mean": float(counts.mean()), "candidates_max": int(counts.max())}

    def _candidates(self, block, k, qnorm):
        """(rows, columns) of every anchor whose low-precision score is within 2 eps of its row's k-th best."""
        n = block.shape[0]
        low = block.to(self.low)
        best = RunningBest(n, k)
        everyone = np.arange(n)
        kept_rows, kept_cols, kept_vals = [], [], []
        out = None
        with _float32_accumulation(self.device):
            for t in range(math.ceil(self.n / _TILE)):
                width = min(_TILE, self.n - t * _TILE)
                sims, out = _low_product(low, self.low_rows[t * _TILE:t * _TILE + width], self.device)
                sims = sims.cpu().numpy()
                columns = np.arange(t * _TILE, t * _TILE + width)
                best.add(everyone, sims, columns)
                eps2 = 2 * error_bound(self.dim, self.low, out, qnorm * self.norm_max)
                rr, cc = np.nonzero(sims >= (best.kth.astype(np.float64) - eps2)[:, None])
                kept_rows.append(rr)
                kept_cols.append(cc + t * _TILE)
                kept_vals.append(sims[rr, cc])
        best.result()
        eps2 = 2 * error_bound(self.dim, self.low, out, qnorm * self.norm_max)
        rows, columns, values = (np.concatenate(x) for x in (kept_rows, kept_cols, kept_vals))
        keep = values >= best.kth.astype(np.float64)[rows] - eps2
        return rows[keep], columns[keep]

    def _rescore(self, block, rows, columns, k):
        """Exact top-k keys of ``block`` among its candidates, products shaped as the plain path's."""
        n = block.shape[0]
        by_row = np.lexsort((columns, rows))
        rows, columns = rows[by_row], columns[by_row]
        bounds = np.searchsorted(rows, np.arange(n + 1))
        first = np.where(bounds[1:] > bounds[:-1], columns[np.minimum(bounds[:-1], len(columns) - 1)], self.n)
        order = np.argsort(first, kind="stable")  # rows with similar candidates side by side
        best = RunningBest(n, k)
        buffer = block.new_zeros((_ROW_MULTIPLE, self.dim))
        for g0 in range(0, n, _RESCORE_ROWS):
            group = np.sort(order[g0:g0 + _RESCORE_ROWS])
            union = np.unique(np.concatenate([columns[bounds[r]:bounds[r + 1]] for r in group]))
            buffer.zero_()
            buffer[:len(group)] = block[torch.from_numpy(group)]
            for t0 in range(0, union.size, _TILE):
                part = union[t0:t0 + _TILE]
                tile = self._tile(self.rows[torch.from_numpy(part).to(self.rows.device)], 0)
                sims = (buffer @ tile.T)[:len(group), :part.size].cpu().numpy()
                best.add(group, sims, part)
        return best.result()

    def __repr__(self):
        state = "chosen" if self.chosen else "not faster here: plain path"
        return f"ReducedSearch({self.n} anchors, {self.build['precision']} on {self.device.type}, {state})"
