"""The search backends an ``AsifModel``'s top-k step can go through (``AsifModel.with_index``), one module each.

A backend is built over one modality's ``topk.Anchors`` and answers ``topk_keys(queries, k, plain)``: the (n, k)
int64 keys of each unit float32 query row's top k (``topk.encode_keys``), where ``plain(queries)`` is the plain
path, to fall back on. ``exact`` says whether its answer is always the plain path's, bit for bit; ``last`` what its
last call did; ``build`` what building it cost.

| index | module | exact | what |
|---|---|---|---|
| ``"pruned"`` | ``prune.PrunedSearch`` | yes | a low-rank projection bounds each anchor's cosine; tiles no row needs are skipped |
| ``"reduced"`` | ``reduced.ReducedSearch`` | yes | a float16/bfloat16 pass with a proven error bound, exact float32 rescoring; used only where a micro-benchmark says it is faster |
| ``"ivf-flat"``, ``"ivf-sq8"``, ``"ivf-pq"``, ``"hnsw"``, ``"faiss:<factory>"`` | ``faiss_index.FaissSearch`` | no | FAISS candidates, exact cosines (``pip install "asif_nb[scale]"``) |
"""
from __future__ import annotations

import importlib

__all__ = ["build_search", "INDEXES"]

INDEXES = {"pruned": ("prune", "PrunedSearch"), "reduced": ("reduced", "ReducedSearch"),
           "ivf-flat": ("faiss_index", "FaissSearch"), "ivf-sq8": ("faiss_index", "FaissSearch"),
           "ivf-pq": ("faiss_index", "FaissSearch"),
           "hnsw": ("faiss_index", "FaissSearch")}


def _backend(index):
    name = "ivf-pq" if index.startswith("faiss:") else index
    if name not in INDEXES:
        raise ValueError(f"index={index!r} is not known: use one of {', '.join(INDEXES)}, 'faiss:<index_factory "
                         "string>', or a built backend (e.g. FaissSearch.load(...)).")
    module, cls = INDEXES[name]
    return getattr(importlib.import_module(f"asif_nb.{module}"), cls)


def build_search(index, anchors, k, options):
    """A backend over ``anchors`` (``topk.Anchors``): ``index`` is a name from ``INDEXES`` / ``faiss:<factory>``,
    built with ``options`` and the model's ``k``, or a built backend, checked to cover these anchors."""
    if isinstance(index, str):
        cls = _backend(index)
        if cls.__name__ == "FaissSearch":
            options = {"kind": index, **options}
        return cls(anchors, k=k, **options)
    if not hasattr(index, "topk_keys"):
        raise ValueError(f"index={index!r} is neither a name nor a search backend (an object with topk_keys): "
                         f"use one of {', '.join(INDEXES)}.")
    if getattr(index, "n", anchors.n) != anchors.n or getattr(index, "dim", anchors.dim) != anchors.dim:
        raise ValueError(f"that backend covers {index.n} anchors of dimension {index.dim}, not the model's "
                         f"{anchors.n} x {anchors.dim}: build it over this model's anchors.")
    if options:
        raise ValueError(f"options {sorted(options)} apply when building a backend by name, not to a built one.")
    return index
