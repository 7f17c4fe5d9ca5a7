"""Figure 4 of the paper: zero-shot accuracy for many (number of anchor pairs, k, p) in one pass over the anchors.

Each point equals ``metrics.accuracy`` of ``AsifModel(anchor_images[:n], anchor_texts[:n], k, p).classify(...)``
(and so ``evaluate(...)["acc1"]``), bit for bit on the CPU: the same exact top-k, weights and scipy products.
With ``index="ivf-sq8"`` (or another FAISS kind, ``pip install "asif_nb[scale]"``) the images' top-k of every prefix
comes from one index over all the anchors, searched with the prefix as a limit: the index path at scale, where each
point equals ``AsifModel(...).with_index(...)``'s answer up to what the index misses.
"""
from __future__ import annotations

import inspect
import numbers

import numpy as np

from .metrics import predict
from .model import (by_index, check_k, check_p, check_positive_int, check_reduce, check_templates, class_scores,
                    scaled, to_csr)
from .settings import resolve_device
from .topk import _EMPTY, Anchors, count_rows, plan, prepare_queries, running_topk

__all__ = ["sweep"]


def _as_list(values, name, check):
    if isinstance(values, (numbers.Number, np.number)):
        values = [values]
    values = [check(v) for v in values]
    if not values:
        raise ValueError(f"{name} is empty: pass at least one value.")
    return sorted(set(values))


def sweep(image_embeddings, labels, prompt_embeddings, anchor_images, anchor_texts, n_pairs=None, k=(800,),
          p=(8,), n_templates=1, reduce="max", clamp_negative=True, chunk_size=None, device="auto",
          memory_budget=None, index=None, index_options=None):
    """Zero-shot top-1 accuracy for every (anchor-prefix size, k, p) in one pass over the anchors.

    A prefix of size n uses the first n pairs, as the paper's Figure 4. Returns a list of dicts
    ``{n_pairs, k, p, accuracy, applicable}`` ordered by n_pairs, k, p; where k > n_pairs the point does not
    exist (``accuracy=None, applicable=False``). Accuracy counts a tied best score as no answer
    (``metrics.predict``), as ``evaluate`` does. ``n_pairs`` defaults to 8 sizes spaced geometrically from
    the smallest k to N.

    How: both modalities' anchors are streamed once, side by side, keeping each query's running top-k_max
    (``topk.running_topk``); at each prefix size the images' and prompts' top-k_max are at hand, and each
    (k, p) of that size costs a sort, the weights and one scipy product, reduced to classes at once. That pass
    costs about one evaluation at the largest size with k = k_max. ``memory_budget`` (bytes of working memory)
    bounds it: more image rows than fit go in several passes.

    ``index``: None (exact), or a search backend for the images' side that answers anchor prefixes (a FAISS kind
    name such as ``"ivf-sq8"``, built over all the anchors with ``index_options``, or a built ``FaissSearch``).
    """
    device = resolve_device(device)
    ks = _as_list(k, "k", check_k)
    ps = _as_list(p, "p", lambda v: check_p(v, clamp_negative))
    reduce = check_reduce(reduce)
    chunk_size = check_positive_int(chunk_size, "chunk_size", "anchors per step, e.g. 32768.")
    memory_budget = check_positive_int(memory_budget, "memory_budget", "bytes of working memory, e.g. 2**29.")
    n_total = count_rows(anchor_images, "anchor_images")
    if count_rows(anchor_texts, "anchor_texts") != n_total:
        raise ValueError("anchor_images and anchor_texts have different numbers of rows: row i of each must be "
                         "the two embeddings of pair i.")
    if n_pairs is None:
        n_pairs = np.unique(np.geomspace(min(ks[0], n_total), n_total, 8).round().astype(int)).tolist()
    sizes = _as_list(n_pairs, "n_pairs", lambda v: check_k(v, n_total, name="n_pairs entry"))
    n_prompts = count_rows(prompt_embeddings, "prompt_embeddings")
    n_templates = check_templates(n_prompts, n_templates)
    n_images = count_rows(image_embeddings, "image_embeddings")
    n_classes = n_prompts // n_templates
    labels = np.asarray(labels)
    if labels.shape != (n_images,) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be {n_images} integer class indices in [0, {n_classes}), one per image.")
    images_a = Anchors(anchor_images, "anchor_images", device)
    texts_a = Anchors(anchor_texts, "anchor_texts", device)
    images = prepare_queries(image_embeddings, "image_embeddings", images_a.dim, device)
    prompts = prepare_queries(prompt_embeddings, "prompt_embeddings", texts_a.dim, device)

    k_run = min(ks[-1], n_total)
    search = _prefix_search(index, images_a, k_run, index_options)
    snapshots = len(sizes)  # at most this many prefix sizes end inside one tile of anchors
    per_pass, image_block = plan(n_images, k_run, memory_budget, snapshots)
    _, prompt_block = plan(n_prompts, k_run, memory_budget, snapshots)
    correct = {}
    for q0 in range(0, n_images, per_pass):
        block = images[q0:q0 + per_pass]
        image_pass = (running_topk(block, images_a, k_run, sizes, chunk_size, image_block) if search is None else
                      _index_pass(search, block, images_a, k_run, sizes, chunk_size, image_block))
        prompt_pass = running_topk(prompts, texts_a, k_run, sizes, chunk_size, prompt_block)
        for (size, image_keys), (_, prompt_keys) in zip(image_pass, prompt_pass):
            # best first (empty slots, beyond the prefix, sort last): each k takes the first k columns
            image_best = np.sort(image_keys, axis=1)[:, ::-1]
            prompt_best = np.sort(prompt_keys, axis=1)[:, ::-1]
            for k_value in ks:
                if k_value > size:
                    continue
                image_rows = scaled(*by_index(image_best[:, :k_value]), clamp_negative, size)
                prompt_rows = scaled(*by_index(prompt_best[:, :k_value]), clamp_negative, size)
                for p_value in ps:
                    scores = class_scores(to_csr(*image_rows, p_value, size), to_csr(*prompt_rows, p_value, size),
                                          n_templates, reduce)
                    hits = int(np.sum(predict(scores) == labels[q0:q0 + per_pass]))
                    correct[size, k_value, p_value] = correct.get((size, k_value, p_value), 0) + hits
    return [{"n_pairs": size, "k": k_value, "p": p_value, "applicable": k_value <= size,
             "accuracy": correct[size, k_value, p_value] / n_images if k_value <= size else None}
            for size in sizes for k_value in ks for p_value in ps]


def _index_pass(search, block, anchors, k_run, sizes, chunk_size, image_block):
    """(size, keys) as ``running_topk`` yields them, from the index searched with each prefix as a limit; a row the
    index finds fewer than k candidates for is answered exactly over that prefix (never an empty slot below k)."""
    for size in sizes:
        k = min(k_run, size)

        def plain(rows, size=size, k=k):
            return dict(running_topk(rows, anchors, k, [size], chunk_size, image_block))[size]

        keys = search.topk_keys(block, k, plain, limit=size)
        if k < k_run:  # as running_topk: empty slots beyond a prefix smaller than k
            keys = np.concatenate([keys, np.full((len(keys), k_run - k), _EMPTY, dtype=np.int64)], axis=1)
        yield size, keys


def _prefix_search(index, anchors, k, options):
    if index is None:
        if options:
            raise ValueError("index_options apply only with an index.")
        return None
    from .search import build_search

    search = build_search(index, anchors, k, dict(options or {}))
    if "limit" not in inspect.signature(search.topk_keys).parameters:
        raise ValueError(f"index={index!r} cannot answer anchor prefixes: use a FAISS kind (e.g. 'ivf-sq8'), or "
                         "index=None for the exact pass (with_index('pruned') is exact anyway).")
    return search
