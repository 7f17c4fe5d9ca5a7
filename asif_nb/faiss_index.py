"""Approximate top-k for millions of anchors: a FAISS index finds candidates, exact cosines rank them.

``model.with_index("ivf-pq")`` (or ``"ivf-flat"``, ``"hnsw"``, ``"faiss:<index_factory string>"``) gives a model whose
top-k step is ``FaissSearch``: per query, the index returns ``refine * k`` candidate anchors; their cosines are then
computed from the model's own anchors in float32 (a memmap's or a bundle's float16 rows read back, divided by the
plain path's row norms after the dot product), and the k best kept with the plain path's tie rule.
So the values are true cosines; only the *set* is approximate, by what the index misses (``recall``). Needs ``faiss``
(``pip install "asif_nb[scale]"``); on a machine with a GPU build of FAISS the index is searched on the GPU.

Kinds (``nlist`` inverted lists, default about 8 sqrt(N), at most 8,192: at 1.6M anchors 8,192 lists made the
index path 10.6-13x faster than exact, build about 250 s; ``nlist=16384`` 17x in one run, for a longer build):

- ``"ivf-flat"``: ``IVF{nlist},Flat``, the anchors' float32 copy inside the index (4 d bytes per anchor);
- ``"ivf-sq8"``: ``IVF{nlist},SQ8``, one byte per dimension (d bytes per anchor): near-exact scores, so ``refine``
  defaults to 1 (its k candidates rescored only for their true values: 2k raised recall by 0.001 at 1.6M anchors).
  At 1.6M synthetic anchors, 1,000 queries, k=800 (``benchmarks/bench_scale.py``): IVF8192, nprobe 136 calibrated,
  recall 0.961, accuracy unchanged, ``encode_image`` 0.96 s against 10.3 s exact on a 2-core machine (10.7x; the
  FAISS scan about 0.6 s of it, the rescoring 0.2 s);
- ``"ivf-pq"``: ``IVF{nlist},PQ{m}`` (8-bit product codes, m bytes per anchor, default m = d/8), the kind for 10M+
  anchors on one machine: 10M x 384 dims take 0.5 GB of codes while the anchors stay in the float16 memmap on disk;
  its coarse scores are why ``refine`` k candidates are rescored. (4-bit fast-scan codes, ``faiss:IVF...,PQ{m}x4fs``,
  scan 6-19x faster than SQ8 but rank coarsely: at 1.6M anchors, nprobe 128, PQ48x4fs kept 0.37 of the top-800, 0.74
  with 6,400 candidates rescored.) Above 2M anchors the coarse quantizer is an HNSW graph over the centroids
  (``IVF{nlist}_HNSW32``), which makes adding 10M rows minutes, not hours;
- ``"hnsw"``: ``HNSW32,Flat`` (no training, fast queries, the float32 copy plus the graph in memory).

``nprobe="auto"`` (IVF kinds): the smallest nprobe (powers of two, then bisection to within 1/16) whose recall of the
exact top-k, on a sample of anchors queried as rows (or ``calibration`` queries), reaches ``target_recall`` with
two standard errors to spare (the sample's mean recall less two standard errors of it).
``build`` records the seconds, the index's bytes and the chosen nprobe. ``save(path)`` / ``FaissSearch.load(path,
anchors)`` keep a built index.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .topk import _EMPTY, encode_keys

__all__ = ["FaissSearch", "KINDS"]

KINDS = ("ivf-flat", "ivf-sq8", "ivf-pq", "hnsw")
_ADD_ROWS = 65536  # rows normalised and added per step (bounded memory for a 10M-row memmap)
# queries per FAISS search call (their candidates are then rescored 8 rows at a time): at 1.6M anchors, 1,000
# queries took 0.40 s in one call against 0.73 s in 256-row calls with 16,384 lists, 0.66 against 0.75 s with 8,192
_SEARCH_ROWS = 1024
_CALIBRATION = 256
_RESCORE_ROWS = 8  # queries rescored together: 8 x 2k candidates x d float32 fit in cache (2 to 8: 0.20-0.23 s)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError('the FAISS index backend needs faiss: pip install "asif_nb[scale]" (faiss-cpu), or '
                          "faiss-gpu from conda-forge on a GPU machine.") from None
    return faiss


def factory_string(kind, n, dim, nlist=None, m=None):
    """The ``faiss.index_factory`` string for ``kind`` over n anchors of ``dim``."""
    if kind.startswith("faiss:"):
        return kind[len("faiss:"):]
    if kind not in KINDS:
        raise ValueError(f"index {kind!r} is not known: use one of {KINDS} or 'faiss:<index_factory string>'.")
    if kind == "hnsw":
        return "HNSW32,Flat"
    nlist = int(nlist or min(8192, max(16, 2 ** round(math.log2(8 * math.sqrt(n))))))
    nlist = min(nlist, max(1, n // 39))  # FAISS wants >= 39 training rows per list
    quantizer = f"IVF{nlist}_HNSW32" if n > 2_000_000 else f"IVF{nlist}"
    if kind in ("ivf-flat", "ivf-sq8"):
        return f"{quantizer},{'Flat' if kind == 'ivf-flat' else 'SQ8'}"
    m = int(m or max(1, dim // 8))
    if dim % m:
        raise ValueError(f"m={m} must divide the anchor dimension {dim} (PQ splits each vector into m parts).")
    return f"{quantizer},PQ{m}"


def gather_rows(anchors, index):
    """Normalised float32 rows ``index`` (1-D, any order) of ``topk.Anchors``, with the plain path's arithmetic."""
    index = np.asarray(index, dtype=np.int64)
    if anchors.data is not None:
        return anchors.data[torch.from_numpy(index).to(anchors.data.device)].cpu()
    norms = anchors.norms.cpu()[torch.from_numpy(index)]
    if anchors.half is not None:
        return (anchors.half[torch.from_numpy(index).to(anchors.half.device)].cpu().to(torch.float32) / norms[:, None])
    return _read(anchors.raw, index) / norms[:, None]


def torch_view(raw):
    """A torch tensor over a memmap's pages (no copy), or None (a bundle, or strides torch cannot take). Make it on one
    thread and pass it to ``cosines``: silencing torch's read-only warning swaps the process's warning filters."""
    if not isinstance(raw, np.ndarray) or any(stride < 0 for stride in raw.strides):
        return None
    with warnings.catch_warnings():  # a read-only memmap: the view is only read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(raw)


def _read(raw, index, view=None):
    """Raw rows ``index`` of a memmap / bundle as float32. A memmap is read by torch's ``index_select`` on a view of it
    (0.18 s for 1,000 queries' 800 rows at 1.6M anchors, one thread, against 0.36 s for numpy's sorted ``take``)."""
    view = torch_view(raw) if view is None else view
    if view is not None:
        return view.index_select(0, torch.from_numpy(index)).to(torch.float32)
    order = np.argsort(index, kind="stable")  # a bundle's take reads its shards in order
    chunk = np.asarray(raw[index[order]]) if isinstance(raw, np.ndarray) else raw.take(index[order])
    rows = np.empty_like(chunk)
    rows[order] = chunk
    return torch.from_numpy(rows).to(torch.float32)


def cosines(anchors, ids, queries, view=None):
    """float32 cosines (r, c) of unit ``queries`` (r, d) with anchors ``ids`` (r, c) of ``topk.Anchors`` (``view``:
    ``torch_view`` of a memmap's raw rows, made once by the caller); a memmap's rows are divided by their norms after
    the dot product (r c divisions, not r c d). The r c rows meet all r queries in one GEMM and each keeps its own
    query's column: r times the products of r matrix-vector ones, yet faster (0.15 against 0.32 s for 1,000 queries'
    800 rows, d=384, r=8, one thread)."""
    r, c = ids.shape
    flat = np.ascontiguousarray(ids, dtype=np.int64).ravel()
    rows = gather_rows(anchors, flat) if anchors.raw is None else _read(anchors.raw, flat, view)
    dots = (rows @ queries.T).reshape(r, c, r).diagonal(dim1=0, dim2=2).T
    if anchors.raw is not None:
        dots = dots / anchors.norms.cpu()[torch.from_numpy(flat)].reshape(r, c)
    return dots.numpy()


class FaissSearch:
    """The approximate top-k step of an ``AsifModel`` over one modality's ``topk.Anchors`` (see the module docstring).

    ``kind``, ``nlist``, ``m``: the index (``factory_string``). ``nprobe``: lists searched per query, or "auto".
    ``refine``: candidates per kept anchor (rescored exactly). ``train_rows``: rows k-means is trained on (default
    ~64 per list, spread evenly over the anchors). ``gpu``: "auto" (a GPU build of FAISS with a GPU present), True or
    False. ``k``: the k calibration assumes (the model's). ``calibration``: queries (raw embeddings of this modality)
    that "auto" calibrates nprobe on; default 256 anchors queried as rows, which overestimates the recall of queries
    unlike the anchors (``calibrate``).
    """

    exact = False

    def __init__(self, anchors, kind="ivf-pq", nlist=None, m=None, nprobe="auto", refine=None, target_recall=0.95,
                 train_rows=None, gpu="auto", k=800, calibration=None, seed=0, _index=None):
        faiss = _faiss()
        self.anchors, self.n, self.dim = anchors, anchors.n, anchors.dim
        if refine is not None and (isinstance(refine, bool) or not isinstance(refine, (int, float)) or refine < 1):
            raise ValueError(f"refine={refine!r} must be a number >= 1 (candidates per kept anchor) or None.")
        if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) \
                or not 0 < target_recall <= 1:
            raise ValueError(f"target_recall={target_recall!r} must be a number in (0, 1].")
        self.target_recall, self.last = float(target_recall), {}
        started = time.perf_counter()
        if _index is None:
            self.factory = factory_string(kind, self.n, self.dim, nlist, m)
            index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
            self._train(index, train_rows, seed)
            for start in range(0, self.n, _ADD_ROWS):
                index.add(anchors.rows(start, min(start + _ADD_ROWS, self.n)).cpu().numpy())
        else:
            index, self.factory = _index
        self.kind = kind if _index is None else "loaded"
        # a compressed index's scores are estimates: rescore its candidates exactly (2k of them; SQ8's ranking is
        # near-exact, so its k candidates, measured: recall 0.937 vs 0.939 with 2k at 1.6M); a flat one's are cosines
        compressed = any(part in self.factory for part in ("PQ", "SQ", "LSH", "RaBitQ"))
        near_exact = compressed and self.factory.endswith(("SQ8", "SQfp16"))
        self.refine = float(refine if refine is not None else (1 if near_exact or not compressed else 2))
        self.rescore = compressed or self.refine > 1
        self.cpu_index = index
        self.index = _to_gpu(faiss, index, gpu)
        self.ivf = faiss.try_extract_index_ivf(index) if "IVF" in self.factory else None
        self.build = {"factory": self.factory, "seconds_train_add": time.perf_counter() - started,
                      "index_bytes": _index_bytes(faiss, index), "gpu": self.index is not index}
        if nprobe == "auto":
            nprobe = self.calibrate(min(k, self.n), calibration) if self.ivf is not None else None
        self.nprobe = nprobe
        if nprobe is not None and self.ivf is not None:
            self._set_nprobe(nprobe)
        self.build.update(nprobe=self.nprobe, seconds=time.perf_counter() - started)

    def _train(self, index, train_rows, seed):
        if index.is_trained:
            return
        ivf = _faiss().try_extract_index_ivf(index)
        want = int(train_rows or min(self.n, max(20_000, 64 * (ivf.nlist if ivf is not None else 256))))
        step = 2048
        starts = np.unique(np.linspace(0, max(0, self.n - step), max(1, math.ceil(want / step))).astype(np.int64))
        sample = np.concatenate([self.anchors.rows(s, min(s + step, self.n)).cpu().numpy() for s in starts])
        index.train(np.ascontiguousarray(sample[:want]))

    def _set_nprobe(self, nprobe):
        if isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1:
            raise ValueError(f"nprobe={nprobe!r} must be a positive int or 'auto'.")
        self.nprobe = min(nprobe, self.ivf.nlist)
        faiss = _faiss()
        faiss.extract_index_ivf(self.index).nprobe = self.nprobe
        for ivf in (self.ivf, faiss.try_extract_index_ivf(self.index)):  # the searched one too: a GPU clone's
            quantizer = faiss.downcast_index(ivf.quantizer) if ivf is not None else None
            if hasattr(quantizer, "hnsw"):  # an HNSW coarse graph finds only ~efSearch lists: recall stalled at 0.77
                quantizer.hnsw.efSearch = max(16, 2 * self.nprobe)

    def calibrate(self, k, queries=None):
        """The smallest nprobe whose recall of the exact top-k reaches ``target_recall`` on ``queries`` (default: 256
        anchors spread over the collection, queried as rows): powers of two up, then bisection between the last two
        to within 1/16, so nprobe is not overshot by up to 2x (search time grows with nprobe). "Reaches" means the
        sample's mean recall less two standard errors of it (over its queries' own recalls): a sample's mean alone
        would put the recall of the queries it stands for below the target about half the time (demo, Tux Paint: 32
        queries calibrated at 0.95 gave 0.953 on the other 95, a one-query accuracy change).

        Anchors queried as rows are easy queries: their top k sit around them, in few lists. Queries unlike the
        anchors spread theirs over more lists; over the demo's 5,016 anchors, nprobe 68 of 128 gave recall 0.957 on
        anchor rows but 0.915 on the held-out Tux Paint drawings and 0.863 on the ImageNet samples (over 56k real
        anchors, nprobe 68 of 1,438: 0.94 against 0.74 and 0.62). So pass a sample of the queries you will run
        (``with_index(kind, calibration=embeddings)``, raw embeddings are fine) when they differ from the anchors."""
        from .topk import running_topk  # the plain path, for the reference sets

        if queries is None:
            pick = np.linspace(0, self.n - 1, min(_CALIBRATION, self.n)).round().astype(np.int64)
            queries = gather_rows(self.anchors, pick)
        queries = (queries.detach().cpu() if isinstance(queries, torch.Tensor) else torch.from_numpy(np.asarray(
            queries))).to(torch.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim or not len(queries):
            raise ValueError(f"calibration queries must be a non-empty (n, {self.dim}) array of this modality's "
                             f"embeddings, not shape {tuple(queries.shape)}.")
        exact = next(iter(running_topk(queries.to(self.anchors.device), self.anchors, k, [self.n])))[1]

        def reaches(nprobe):  # the sample's mean less two standard errors: unseen queries reach the target too
            self._set_nprobe(nprobe)
            each = recall(self.topk_keys(queries, k, None), exact, per_query=True)
            spread = 2 * each.std(ddof=1) / math.sqrt(len(each)) if len(each) > 1 else 0.0
            return each.mean() - spread >= self.target_recall

        high = 1
        while high < self.ivf.nlist and not reaches(high):
            high *= 2
        high, low = min(high, self.ivf.nlist), high // 2  # low fell short (or is 0); high reached, or is every list
        while high - low > max(1, high // 16):
            middle = (low + high) // 2
            low, high = (low, middle) if reaches(middle) else (middle, high)
        if high == self.ivf.nlist and not reaches(high):
            warnings.warn(f"nprobe calibration: even all {high} lists do not reach recall {self.target_recall} (with two "
                          "standard errors to spare) on these queries; pass a lower target_recall, a finer kind "
                          "('ivf-flat', or refine=) or more calibration queries.", stacklevel=2)
        self._set_nprobe(high)
        return self.nprobe

    def candidates(self, queries, count, limit=None):
        """FAISS's ``count`` best anchor ids per query (-1 where it found fewer), among anchors < ``limit`` if given."""
        faiss = _faiss()
        params = None
        if limit is not None and limit < self.n:
            selector = faiss.IDSelectorRange(0, int(limit))
            params = (faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe) if self.ivf is not None
                      else faiss.SearchParameters(sel=selector))
            params._selector = selector  # keep it alive as long as the parameters
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), int(count), params=params)

    def topk_keys(self, queries, k, plain, limit=None):
        """Approximate top-k keys (n, k) int64 of unit float32 ``queries`` among anchors < ``limit`` (default all):
        candidates from the index, exact cosines, the plain path's tie rule. A row with fewer than k candidates is
        answered by ``plain`` (the exact path), or left with empty slots when ``plain`` is None."""
        started = time.perf_counter()
        stop = self.n if limit is None else int(limit)
        count = min(stop, max(k, math.ceil(self.refine * k)))
        q = queries.detach().cpu().to(torch.float32)
        keys = np.full((q.shape[0], k), _EMPTY, dtype=np.int64)
        short = []
        for r0 in range(0, q.shape[0], _SEARCH_ROWS):
            block = q[r0:r0 + _SEARCH_ROWS]
            values, ids = self.candidates(block.numpy(), count, stop)
            found = (ids >= 0).sum(axis=1)
            short.extend((r0 + np.flatnonzero(found < k)).tolist())
            good = np.flatnonzero(found >= k)
            if good.size and self.rescore:
                values = self._rescore(block, ids, good)
            if good.size:
                ids, values = ids[good], values[good]
                both = encode_keys(values.astype(np.float32), np.where(ids >= 0, ids, 0))
                both[ids < 0] = _EMPTY
                keys[r0 + good] = np.partition(both, -k, axis=1)[:, -k:] if both.shape[1] > k else both
        if short and plain is not None:
            keys[short] = plain(queries[torch.as_tensor(short)])
        self.last = {"route": self.factory, "nprobe": self.nprobe, "rows_answered_exactly": len(short),
                     "seconds": time.perf_counter() - started}
        return keys

    def _rescore(self, block, ids, good):
        """float32 cosines (len(block), count) of the candidates of rows ``good`` from the model's own anchors (-inf
        where there is no candidate); ``_RESCORE_ROWS`` rows' candidates at a time, so they stay in cache, on as many
        threads as torch uses on the CPU (the gathers and products release the GIL: 0.33 -> 0.21-0.25 s per 1,000
        queries at 1.6M anchors on two cores)."""
        values = np.full(ids.shape, -np.inf, dtype=np.float32)
        view = torch_view(self.anchors.raw)  # here, not in the workers (see torch_view)

        def rescore(rows):
            chosen = ids[rows]
            filled = np.where(chosen >= 0, chosen, chosen[:, :1])  # a missing candidate repeats the row's first
            sims = cosines(self.anchors, filled, block[torch.from_numpy(rows)], view)
            values[rows] = np.where(chosen >= 0, sims, -np.inf)

        groups = [good[s:s + _RESCORE_ROWS] for s in range(0, good.size, _RESCORE_ROWS)]
        workers = torch.get_num_threads() if self.anchors.device.type == "cpu" else 1
        with ThreadPoolExecutor(max(1, min(workers, len(groups)))) as pool:
            list(pool.map(rescore, groups))
        return values

    def save(self, path):
        """Write the index (``faiss.write_index``) and its settings beside it (``<path>.json``); returns the path."""
        faiss = _faiss()
        path = Path(path)
        faiss.write_index(self.cpu_index, str(path))
        Path(str(path) + ".json").write_text(json.dumps({
            "factory": self.factory, "nprobe": self.nprobe, "refine": self.refine, "n": self.n, "dim": self.dim,
            "target_recall": self.target_recall}))
        return path

    @classmethod
    def load(cls, path, anchors, gpu="auto"):
        """A ``FaissSearch`` over ``anchors`` (the model's ``topk.Anchors``) from ``save``'s files."""
        faiss = _faiss()
        settings = json.loads(Path(str(path) + ".json").read_text())
        index = faiss.read_index(str(path))
        if (settings["n"], settings["dim"]) != (anchors.n, anchors.dim) or index.ntotal != anchors.n:
            raise ValueError(f"{path} indexes {settings['n']} anchors of dimension {settings['dim']}, not these "
                             f"{anchors.n} x {anchors.dim}: build the index again over these anchors.")
        return cls(anchors, nprobe=settings["nprobe"], refine=settings["refine"], gpu=gpu,
                   target_recall=settings["target_recall"], _index=(index, settings["factory"]))

    def __repr__(self):
        return f"FaissSearch({self.factory!r}, {self.n} anchors, nprobe={self.nprobe}, refine={self.refine:g})"


def recall(approx_keys, exact_keys, per_query=False):
    """Mean fraction of each row's exact top-k anchors that ``approx_keys`` holds (keys from ``encode_keys``); with
    ``per_query``, each row's fraction (an array)."""
    low = np.int64(0xFFFFFFFF)
    a, e = approx_keys & low, exact_keys & low
    each = np.array([np.intersect1d(x, y).size / y.size for x, y in zip(a, e)])
    return each if per_query else float(each.mean())


def _to_gpu(faiss, index, gpu):
    if gpu is False or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        if gpu is True:
            raise ValueError("gpu=True but this FAISS has no GPU support or sees no GPU: install faiss-gpu, or "
                             "pass gpu='auto'.")
        return index
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


def _index_bytes(faiss, index):
    return int(faiss.serialize_index(index).nbytes) if index.ntotal <= 2_000_000 else _estimate_bytes(faiss, index)


def _estimate_bytes(faiss, index):
    """Codes, ids and centroids of a large IVF index (serialising 10M rows just to weigh them would double memory)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return int(index.ntotal * index.d * 4)
    return int(index.ntotal * (ivf.code_size + 8) + ivf.nlist * index.d * 4)
