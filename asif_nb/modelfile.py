"""The file format of ``AsifModel.save`` / ``AsifModel.load``: the normalised float32 anchors and the settings,
without pickle. ``.npz``: a numpy archive with a JSON ``meta`` entry; any other suffix: a safetensors file
with the settings in its string metadata. Every meta value is a string (safetensors allows nothing else)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_write

FORMAT = "asif_nb.AsifModel"
VERSION = "1"
FIX = "re-save the model with AsifModel.save, or rebuild it from its anchors"
_FIELDS = ("format", "version", "k", "p", "clamp_negative", "ids")


def save(path, images, texts, ids, k, p, clamp_negative):
    """Write unit-length float32 anchors ``images`` (N, d1) and ``texts`` (N, d2) and the settings atomically."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, "k": str(k), "p": repr(float(p)),
            "clamp_negative": str(bool(clamp_negative)), "ids": json.dumps(list(ids))}
    if path.suffix == ".npz":
        with atomic_write(path) as handle:
            np.savez(handle, anchor_images=images, anchor_texts=texts, meta=np.array(json.dumps(meta)))
    else:
        import safetensors.torch

        data = safetensors.torch.save({"anchor_images": torch.from_numpy(np.ascontiguousarray(images)),
                                       "anchor_texts": torch.from_numpy(np.ascontiguousarray(texts))},
                                      metadata=meta)
        with atomic_write(path) as handle:
            handle.write(data)
    return path


def load(path):
    """``(images, texts, settings)`` read from ``path``; ``settings`` holds ``k``, ``p``, ``clamp_negative``
    and ``ids``. Anything unreadable, foreign or damaged is a ValueError naming what and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}: check the path or save a model there first.")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "meta" not in archive.files:
                    raise KeyError("meta")
                meta = json.loads(str(archive["meta"]))
                images, texts = archive["anchor_images"], archive["anchor_texts"]
        else:
            import safetensors

            with safetensors.safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                images, texts = handle.get_tensor("anchor_images"), handle.get_tensor("anchor_texts")
    except Exception as error:  # every reader error means the same thing to the user
        raise ValueError(f"{path} is not a readable ASIF model file ({type(error).__name__}: {error}): "
                         f"{FIX}.") from error
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has model metadata that is a JSON {type(meta).__name__}, not an object: {FIX}.")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by AsifModel.save (no '{FORMAT}' format tag): {FIX}.")
    for field in _FIELDS:
        if not isinstance(meta.get(field), str):
            what = "missing" if field not in meta else f"the {type(meta[field]).__name__} {meta[field]!r}"
            raise ValueError(f"{path} has model metadata field {field!r} {what}; AsifModel.save writes a string "
                             f"there: {FIX}.")
    if meta["version"] != VERSION:
        raise ValueError(f"{path} has model format version {meta['version']!r}; this code reads version "
                         f"{VERSION!r} only: {FIX}.")
    try:
        k, p = int(meta["k"]), float(meta["p"])
        clamp_negative = {"True": True, "False": False}[meta["clamp_negative"]]
        ids = json.loads(meta["ids"])
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path} has damaged model metadata ({type(error).__name__}: {error}): {FIX}.") from error
    if not isinstance(ids, list):
        raise ValueError(f"{path} has model metadata 'ids' that is a JSON {type(ids).__name__}, not a list of "
                         f"one id per pair: {FIX}.")
    for name, rows in (("anchor_images", images), ("anchor_texts", texts)):
        if rows.ndim != 2 or rows.shape[0] != len(ids):
            raise ValueError(f"{path} holds {name} of shape {tuple(rows.shape)} for {len(ids)} ids: {FIX}.")
    return images, texts, {"k": k, "p": p, "clamp_negative": clamp_negative, "ids": ids}
