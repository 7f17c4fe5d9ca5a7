"""The embedding cache: every (encoder, weights, inputs) triple is embedded once.

Embedding the anchors is the only expensive step of ASIF, and it is repeated every time a notebook runs. Each
result is stored as ``cache_dir()/embeddings/<key>--<encoder>--<weights_id[:12]>--<inputs_hash[:16]>.npy``
plus a JSON sidecar (encoder, weights_id, dim, count, ids, created, inputs_sha256, array_sha256,
format_version). The file name already pins encoder, weights and inputs, so a change in any of them is a miss;
on a hit the array is validated (shape, dtype, finite values, the sidecar's hashes) and recomputed, with a
message, when anything is off. Both files are written atomically, the array first and the sidecar last, so a
sidecar always describes a complete array.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fileio import atomic_write, sha256_file
from .settings import cache_dir

FORMAT_VERSION = 1
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def embeddings_dir() -> Path:
    return cache_dir() / "embeddings"


def _item_sha256(item: Any) -> str:
    """Content hash of one non-text input: file bytes for paths (no decoding), mode+size+pixels for PIL images,
    the bytes themselves for bytes. A type tag keeps e.g. the text "x" and the bytes b"x" apart."""
    from PIL import Image

    digest = hashlib.sha256()
    if isinstance(item, os.PathLike):
        try:
            digest.update(b"file:" + bytes.fromhex(sha256_file(item)))
        except OSError as exc:
            raise ValueError(f"Cannot read input file {os.fspath(item)}: {exc}") from exc
    elif isinstance(item, Image.Image):
        digest.update(f"pil:{item.mode}:{item.size[0]}x{item.size[1]}:".encode())
        digest.update(item.tobytes())
    elif isinstance(item, (bytes, bytearray)):
        digest.update(b"bytes:" + bytes(item))
    else:
        raise TypeError(f"cannot hash an input of type {type(item).__name__}: use a path, PIL image, str or bytes.")
    return digest.hexdigest()


def inputs_sha256(items: Sequence[Any], modality: str) -> str:
    """One hash for an ordered list of inputs: sha256 over the per-item hashes, in order.

    For ``modality="image"`` a ``str`` is a file path (its bytes are hashed); for ``"text"`` it is the text.
    """
    combined = hashlib.sha256(f"{modality}:{len(items)}:".encode())
    for item in items:
        if isinstance(item, str):
            if modality == "image":
                item_hash = _item_sha256(Path(item))
            else:
                item_hash = hashlib.sha256(b"text:" + item.encode("utf-8")).hexdigest()
        else:
            item_hash = _item_sha256(item)
        combined.update(bytes.fromhex(item_hash))
    return combined.hexdigest()


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _slug(text: str) -> str:
    """Encoder names such as 'timm:resnet18' or 'sentence-transformers:/a/folder' made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "encoder"


def _paths(key: str, encoder, inputs_hash: str) -> tuple[Path, Path]:
    weights = encoder.weights_id.split(":")[-1][:12]
    stem = f"{key}--{_slug(encoder.name)}--{weights}--{inputs_hash[:16]}"
    base = embeddings_dir() / stem
    return base.with_suffix(".npy"), base.with_suffix(".json")


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_PATTERN.match(key) or "--" in key:
        raise ValueError(f"key={key!r}: use a short label of letters, digits, '.', '_' or '-' (no path "
                         "separators, no '--'), e.g. key='demo-images'.")
    return key


def _validate(npy: Path, sidecar: Path, encoder, count: int, inputs_hash: str) -> np.ndarray:
    """Load a cached array, raising ValueError with the reason when it cannot be trusted."""
    if not sidecar.exists():
        raise ValueError("its JSON sidecar is missing")
    meta = json.loads(sidecar.read_text())
    expected = {"format_version": FORMAT_VERSION, "encoder": encoder.name, "weights_id": encoder.weights_id,
                "dim": encoder.dim, "count": count, "inputs_sha256": inputs_hash}
    for field, value in expected.items():
        if meta.get(field) != value:
            raise ValueError(f"sidecar {field} is {meta.get(field)!r}, expected {value!r}")
    array = np.load(npy, allow_pickle=False)
    if array.dtype != np.float32:
        raise ValueError(f"dtype is {array.dtype}, expected float32")
    if array.shape != (count, encoder.dim):
        raise ValueError(f"shape is {array.shape}, expected {(count, encoder.dim)}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"{bad} row(s) hold NaN or inf")
    if meta.get("array_sha256") != _array_sha256(array):
        raise ValueError("the array does not match the sidecar's array_sha256")
    return array


def embed_cached(encoder, items: Sequence[Any], key: str, ids: Sequence[str] | None = None, batch_size: int = 32,
                 progress: bool = True, refresh: bool = False) -> np.ndarray:
    """``encoder.encode(items)``, computed once and then read from the cache. Returns float32 ``(len(items), dim)``.

    ``key`` is a human-readable label for the set of inputs (e.g. "demo-images"); the cache entry is also tied to
    the encoder's name and ``weights_id`` and to a content hash of ``items``, so changing any of them computes a
    new entry. ``ids`` (default "0", "1", ...) are stored in the sidecar so a notebook can tell which row is which.
    A cached entry that fails validation is reported and recomputed; ``refresh=True`` recomputes unconditionally.
    Every item must be readable (the encoder runs with ``on_error="raise"``): a cache row per item keeps row i
    meaning item i.
    """
    key = _check_key(key)
    items = list(items)
    if ids is None:
        ids = [str(i) for i in range(len(items))]
    else:
        ids = [str(i) for i in ids]
        if len(ids) != len(items):
            raise ValueError(f"ids has {len(ids)} entries but items has {len(items)}: pass one id per item.")
    inputs_hash = inputs_sha256(items, encoder.modality)
    npy, sidecar = _paths(key, encoder, inputs_hash)
    if npy.exists() and not refresh:
        try:
            return _validate(npy, sidecar, encoder, len(items), inputs_hash)
        except Exception as exc:  # truncated .npy, bad JSON, NaN rows, wrong dim, stale sidecar...
            print(f"[asif_nb] cached embeddings {npy.name} are unusable ({exc}); recomputing.")

    array = encoder.encode(items, batch_size=batch_size, progress=progress, on_error="raise")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape != (len(items), encoder.dim) or not np.isfinite(array).all():
        raise RuntimeError(f"{encoder.name} returned {array.shape} with non-finite values or the wrong shape; "
                           "nothing was cached.")
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "encoder": encoder.name,
        "weights_id": encoder.weights_id,
        "dim": int(encoder.dim),
        "count": len(items),
        "ids": ids,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs_sha256": inputs_hash,
        "array_sha256": _array_sha256(array),
    }
    sidecar.unlink(missing_ok=True)  # a sidecar never describes an array other than the one beside it
    with atomic_write(npy) as handle:
        np.save(handle, array, allow_pickle=False)
    with atomic_write(sidecar, "w") as handle:
        json.dump(meta, handle, indent=1)
    return array


def cache_info() -> list[dict]:
    """What the cache holds, one dict per entry (key, encoder, dim, count, created, MB, file, valid), newest first.

    ``valid`` is a quick check (sidecar readable, .npy present with the recorded shape); ``embed_cached`` does the
    full validation when the entry is used.
    """
    rows = []
    folder = embeddings_dir()
    for sidecar in folder.glob("*.json") if folder.exists() else []:
        npy = sidecar.with_suffix(".npy")
        row: dict[str, Any] = {"file": npy.name, "key": sidecar.name.split("--")[0], "encoder": None,
                               "dim": None, "count": None, "created": None,
                               "MB": round(npy.stat().st_size / 1e6, 2) if npy.exists() else 0.0, "valid": False}
        try:
            meta = json.loads(sidecar.read_text())
            row.update({k: meta.get(k) for k in ("key", "encoder", "dim", "count", "created")})
            shape = np.load(npy, mmap_mode="r", allow_pickle=False).shape
            row["valid"] = shape == (meta["count"], meta["dim"])
        except Exception:
            pass
        rows.append(row)
    return sorted(rows, key=lambda r: r["created"] or "", reverse=True)
