"""Exact top-k that skips most of the product: anchors grouped into cells whose bound says which can matter.

Only each query's k best anchors enter a relative representation; an anchor whose cosine provably cannot beat
the query's current k-th best value never needs multiplying. ``PrunedSearch(anchors)`` builds, once:

- **cells**: scikit-learn's k-means splits the unit anchors into cells of about ``cell_size``; each keeps its
  centroid direction mu, its radius (the largest angle from mu to a member) and its members' largest and smallest
  norms;
- **layout**: cells are placed next to similar cells (a second k-means, over the centroids, weighted by cell size)
  and the anchors copied in that order. The unit of work stays the plain path's (``topk.py``): a tile of exactly
  2,048 consecutive anchors, the last one zero-padded, times a block of query rows padded to a multiple of 16, so
  every similarity has the bits the plain fp32 path gives it.

Per query, a tile's bound is the largest of its cells' bounds. Queries are grouped by their best tile; for each
group the tiles are visited in decreasing order of the group's largest bound, and a tile is multiplied only by
the rows whose bound reaches their running k-th value (rows gathered into a padded block). The running top-k keys
sort like the plain path's (value desc, index asc) and take a similarity equal to the k-th value too (anchors
arrive out of index order), so the result — set, ties, values — is the plain path's, bit for bit.

**The bound** (rigorous for the float32 similarity, not only the real one): for q and a with angle(q, mu) = theta and
a within radius r of mu, the triangle inequality on the sphere gives angle(q, a) >= theta - r, so
q.a <= |q| |a| cos(max(0, theta - r)). theta comes from a float32 product q.mu, whose error is at most
gamma_d |q| |mu| (gamma_d = d u / (1 - d u), u = 2**-24, any summation order); the similarity the plain path
computes is within gamma_d |q| |a| of the real q.a. Both margins are added; everything else is float64. A tile is
skipped for a row only when its bound is *below* the row's k-th value, so nothing it holds could enter.

**When it does not pay** (unclustered anchors: every cell's radius is large and every bound near 1): at build a
sample of anchors, queried as rows, measures the fraction of the product the pruned walk would do; above
``max_visited`` the search answers every call by the plain path, at no extra cost. Each call also checks its first
group, and hands the rest to the plain path if the queries at hand do not prune. ``last`` reports what the last call
did (route, fraction of (query, anchor) products computed).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from .topk import _EMPTY, _ROW_MULTIPLE, _TILE, decode_keys, encode_keys

__all__ = ["PrunedSearch"]

_GROUP = 256  # query rows walked together: similar rows need the same tiles; 16x that keeps products efficient
_SAMPLE = 256  # anchors queried at build to decide whether pruning pays
_KMEANS_SAMPLE = 32768  # rows k-means is fitted on (all rows are then assigned)


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
        rr, cc = np.divmod(np.flatnonzero(sims >= self.kth[rows, None]), sims.shape[1])
        self.seen[rows] += sims.shape[1]
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

    def result(self):
        self._merge()
        return self.keys


class PrunedSearch:
    """The exact top-k step of an ``AsifModel`` (``model.with_index("pruned")``), skipping anchors by cell bounds.

    ``anchors``: the model's ``topk.Anchors`` of one modality. ``cell_size``: anchors per k-means cell (smaller:
    tighter bounds, more bounds to compute). ``max_visited``: the fraction of the product above which pruning does not
    pay and the plain path answers. ``k``: the k the build-time check assumes (the model's). ``force=True`` keeps
    the pruned walk even where it does not pay (for tests and benchmarks). Only on the CPU: on a GPU the plain
    path answers (its product is cheap there, and its kernels are chosen by shape, so bits would not be pinned).
    """

    kind, exact = "pruned", True

    def __init__(self, anchors, cell_size=128, max_visited=0.5, k=800, force=False, seed=0):
        self.n, self.dim, self.max_visited, self.force = anchors.n, anchors.dim, float(max_visited), bool(force)
        self.last = {}
        started = time.perf_counter()
        self.cpu = anchors.device.type == "cpu"
        self.built = self.cpu and self.n > _TILE
        if not self.built:
            self.pays, self.build = False, {"seconds": 0.0, "reason": "GPU or a single tile: the plain path answers"}
            return
        rows = anchors.materialise().numpy()
        labels, centroids = _cells(rows, max(1, round(self.n / cell_size)), seed)
        order, cell_order = _layout(labels, centroids, math.ceil(self.n / _TILE), seed)
        self.order = order  # position -> anchor index
        self.rows = torch.from_numpy(np.ascontiguousarray(rows[order]))
        sorted_labels = labels[order]
        # cells in layout order, each a contiguous run of positions
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        self._cell_stats(starts)
        # the cells each tile covers: [first[t], last[t]] in layout order
        tile_starts = np.arange(0, self.n, _TILE)
        self.first = np.searchsorted(starts, tile_starts, side="right") - 1
        self.last_cell = np.searchsorted(starts, np.minimum(tile_starts + _TILE, self.n) - 1, side="right") - 1
        self.build = {"seconds": 0.0, "cells": len(starts), "tiles": len(tile_starts)}
        sample = torch.from_numpy(rows[np.linspace(0, self.n - 1, min(_SAMPLE, self.n)).round().astype(np.int64)])
        _, fraction = self._walk(sample, min(k, self.n), stop_above=None)
        self.pays = fraction <= self.max_visited
        self.build.update(seconds=time.perf_counter() - started, sample_visited=fraction)

    def _cell_stats(self, starts):
        a64 = self.rows.numpy().astype(np.float64)
        sizes = np.diff(np.r_[starts, self.n])
        sums = np.add.reduceat(a64, starts, axis=0)
        norms = np.linalg.norm(sums, axis=1)
        self.centroids = torch.from_numpy((sums / np.where(norms > 0, norms, 1)[:, None]).astype(np.float32))
        mu = self.centroids.numpy().astype(np.float64)
        mu_norm = np.linalg.norm(mu, axis=1)
        cell = np.repeat(np.arange(len(starts)), sizes)
        a_norm = np.linalg.norm(a64, axis=1)
        cos = np.einsum("ij,ij->i", a64, mu[cell]) / (a_norm * mu_norm[cell])
        self.radius = np.arccos(np.clip(np.minimum.reduceat(cos, starts), -1, 1)) + 1e-9
        self.norm_max = np.maximum.reduceat(a_norm, starts) * (1 + 1e-12)
        self.norm_min = np.minimum.reduceat(a_norm, starts) * (1 - 1e-12)
        self.mu_norm = mu_norm

    def tile_bounds(self, queries):
        """(n, tiles) float64: an upper bound on every float32 similarity of each query row to each tile's anchors."""
        g = gamma(self.dim)
        q64 = np.linalg.norm(queries.numpy().astype(np.float64), axis=1)[:, None]
        dots = (queries @ self.centroids.T).numpy().astype(np.float64)
        cos_hi = np.clip((dots + g * q64 * self.mu_norm) / (q64 * self.mu_norm), -1.0, 1.0)
        angle = np.maximum(0.0, np.arccos(cos_hi) - 1e-12 - self.radius)
        c = np.cos(angle)
        bound = q64 * np.where(c >= 0, self.norm_max * c, self.norm_min * c) + g * q64 * self.norm_max + 1e-12
        tiles = np.maximum.reduceat(bound, self.first, axis=1)
        straddle = self.last_cell != self.first  # a tile ending inside the next tile's first cell
        tiles[:, straddle] = np.maximum(tiles[:, straddle], bound[:, self.last_cell[straddle]])
        return tiles

    def _walk(self, queries, k, stop_above):
        """(keys (n, k) or None, fraction of the product computed). With ``stop_above``, gives up (None) after the
        first group if that group computed more than that fraction."""
        n = queries.shape[0]
        bounds = self.tile_bounds(queries)
        best_tile = bounds.argmax(axis=1)
        order = np.lexsort((-bounds.max(axis=1), best_tile))
        queries, bounds = queries[torch.from_numpy(order)], bounds[order]
        best = RunningBest(n, k)
        buffer = torch.zeros((_GROUP, self.dim))
        sims = torch.empty((_GROUP, _TILE))
        done = 0
        # groups: rows sharing their best tile, at most _GROUP of them
        cuts = np.flatnonzero(np.diff(best_tile[order])) + 1
        starts = np.unique(np.r_[0, cuts, np.arange(0, n, _GROUP)])
        for g0, g1 in zip(starts, np.r_[starts[1:], n]):
            group = np.arange(g0, g1)
            for t in np.argsort(-bounds[group].max(axis=0), kind="stable"):
                need = group[bounds[group, t] >= best.kth[group]]
                if need.size == 0:
                    continue
                m = _ROW_MULTIPLE * math.ceil(need.size / _ROW_MULTIPLE)
                buffer[:need.size] = queries[torch.from_numpy(need)]
                buffer[need.size:m] = 0
                start, stop = t * _TILE, min((t + 1) * _TILE, self.n)
                torch.matmul(buffer[:m], self._tile(t).T, out=sims[:m])
                best.add(need, sims[:need.size, :stop - start].numpy(), self.order[start:stop])
                done += need.size * (stop - start)
            if stop_above is not None and g1 >= min(n, _GROUP) and done > stop_above * g1 * self.n:
                return None, done / (g1 * self.n)
            if g1 >= min(n, _GROUP):
                stop_above = None  # checked once, over the first _GROUP rows
        keys = np.empty((n, k), dtype=np.int64)
        keys[order] = best.result()
        return keys, done / (n * self.n)

    def _tile(self, t):
        tile = self.rows[t * _TILE:(t + 1) * _TILE]
        if tile.shape[0] < _TILE:  # zero-padded like the plain path's last tile: same product shape, same rounding
            tile = torch.cat([tile, tile.new_zeros(_TILE - tile.shape[0], self.dim)])
        return tile

    def topk_keys(self, queries, k, plain):
        """Each query row's exact top-k keys (n, k) int64, as ``plain(queries)`` (the plain path) gives them."""
        started = time.perf_counter()
        keys, fraction, route = None, 1.0, "plain"
        if self.built and (self.pays or self.force) and k <= self.n:
            keys, fraction = self._walk(queries, k, None if self.force else self.max_visited)
            route = "pruned" if keys is not None else "plain (first group did not prune)"
        if keys is None:
            keys = plain(queries)
        self.last = {"route": route, "visited": fraction if route == "pruned" else 1.0,
                     "seconds": time.perf_counter() - started}
        return keys

    def __repr__(self):
        state = "prunes" if self.pays else "does not pay: plain path"
        return f"PrunedSearch({self.n} anchors, {self.build.get('cells', 0)} cells, {state})"


def _cells(rows, n_cells, seed):
    """k-means labels of every row and the cell centroids (scikit-learn, fitted on a sample)."""
    from sklearn.cluster import KMeans

    pick = np.random.default_rng(seed).choice(len(rows), min(len(rows), _KMEANS_SAMPLE), replace=False)
    kmeans = KMeans(n_clusters=min(n_cells, len(pick)), init="random", n_init=1, max_iter=20, random_state=seed).fit(rows[pick])
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
