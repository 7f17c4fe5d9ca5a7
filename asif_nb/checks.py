"""Argument checks shared by ``AsifModel``, ``sweep`` and the search backends: each bad value is refused with a
message naming the fix. (Importable from ``asif_nb.model`` too, where they were first defined.)"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch


def check_k(k, n_anchors=None, name="k"):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{name}={k!r} must be a positive integer (the number of non-zeros kept per row).")
    if n_anchors is not None and k > n_anchors:
        raise ValueError(f"{name}={k} is larger than the number of anchor pairs ({n_anchors}): "
                         f"use k <= {n_anchors} or add pairs.")
    return int(k)


def check_p(p, clamp_negative):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or p <= 0:
        raise ValueError(f"p={p!r} must be a finite number > 0 (the exponent applied to kept similarities).")
    if not clamp_negative and not float(p).is_integer():
        raise ValueError(f"p={p!r} with clamp_negative=False: a negative similarity raised to a fractional power "
                         "is undefined; use an integer p or clamp_negative=True.")
    return float(p)


def check_positive_int(value, name, fix):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer or None: {fix}")
    return int(value)


def _check_id(i, name):
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (numbers.Integral, str)):
        raise ValueError(f"{name} entry {i!r} is a {type(i).__name__}: ids are ints or strings "
                         "(a boolean mask needs one entry per pair).")
    return i if isinstance(i, str) else int(i)


def _check_ids(ids, n, name="ids"):
    """Ids are ints or strings (kept as given, JSON-serialisable), unique; None means 0..n-1."""
    if ids is None:
        return list(range(n))
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of ids, one per pair, not a single string.")
    ids = [_check_id(i, name) for i in (ids.tolist() if isinstance(ids, (np.ndarray, torch.Tensor)) else ids)]
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} entries but there are {n} pairs: pass one id per pair.")
    seen = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{name} contains {i!r} more than once: ids must be unique.")
        seen.add(i)
    return ids


def check_templates(n_prompts, n_templates):
    n_templates = check_positive_int(n_templates, "n_templates", "the number of prompt templates per class.")
    if n_prompts % n_templates:
        raise ValueError(f"there are {n_prompts} prompt embeddings, not a multiple of n_templates={n_templates}: "
                         "pass class-major prompts (class c, template t at row c*T + t) for every class.")
    return n_templates


def check_reduce(reduce):
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce={reduce!r} is not known: use 'max' (the class of the best prompt, the authors' "
                         "rule) or 'mean' (the mean template representation per class, CLIP's rule).")
    return reduce
