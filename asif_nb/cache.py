"""The embedding cache: every (encoder features, inputs) pair is embedded once.

Embedding the anchors is the only expensive step of ASIF, and it is repeated every time a notebook runs. Each
result is stored as ``cache_dir()/embeddings/<key>--<encoder>--<features_id>--<inputs_hash[:16]>.npy`` plus a JSON
sidecar (encoder, features_id, the whole ``features`` dict, weights_id, dim, count, ids, created, inputs_sha256,
array_sha256, format_version).

The entry is keyed on what was computed, not only on the weights: ``encoder.features_id`` hashes the weights, the
exact preprocessing, the runtime, the precision and the device kind, so e.g. a ViT with the authors' preprocessing
and the same ViT with its library processor, or EfficientNet's fp16 GPU path and its CPU ONNX path, never share an
entry. A change of any of them, or of the inputs, is a miss. On a hit the array is validated (shape, dtype, finite
values, the sidecar's hashes); an entry that is stale or corrupt is reported and recomputed, while any other error
(``MemoryError``, ``KeyboardInterrupt``, a bug) propagates, so it never turns into a silent rebuild. Both files are
written atomically, the array first and the sidecar last, so a sidecar always describes a complete array.

Input files are hashed by content, once per (absolute path, size, mtime_ns): ``file-hashes.sqlite3`` beside the
entries remembers each file's sha256, so a warm call only stats the files.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import filelock
import numpy as np

from .fileio import atomic_write, sha256_file
from .settings import cache_dir

FORMAT_VERSION = 2  # v2: keyed on features_id (v1 keyed on weights_id); v1 entries simply miss
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHUNK_BYTES = 16 << 20
_MEMO_NAME = "file-hashes.sqlite3"
_MEMO_BATCH = 500  # paths per SELECT (well under SQLite's variable limit)
_ITEMS_PER_CHUNK = 4096  # inputs hashed (and their file hashes remembered) per step
# A file modified within this long of being hashed is not remembered: file systems stamp mtimes coarsely (a jiffy
# or worse), so a same-size rewrite that soon could keep the same (size, mtime_ns). Such files are rehashed.
_RACY_NS = 2_000_000_000
# Errors that mean "this entry is stale or corrupt": recompute it. Everything else propagates.
_STALE_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError)


def embeddings_dir() -> Path:
    return cache_dir() / "embeddings"


# ----------------------------------------------------------------------------------------------------------------
# Input hashes


class _FileHashMemo:
    """The file-hash memo (sqlite3): ``path -> (size, mtime_ns, sha256)``. It only saves time, so a corrupt memo
    is started again, and a locked or unwritable one is skipped (every file is then hashed)."""

    def __init__(self) -> None:
        self.path = embeddings_dir() / _MEMO_NAME
        self.con: sqlite3.Connection | None = None
        for attempt in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.con = sqlite3.connect(self.path, timeout=30)
                self.con.execute("CREATE TABLE IF NOT EXISTS file_sha256 (path TEXT PRIMARY KEY, size INTEGER NOT "
                                 "NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL) WITHOUT ROWID")
                return
            except sqlite3.DatabaseError as exc:  # "file is not a database", a corrupt page, a lock...
                self.close()
                if attempt or isinstance(exc, sqlite3.OperationalError):
                    self._give_up(exc)
                    return
                print(f"[asif_nb] the file-hash memo {self.path} is corrupt ({exc}); starting it again.")
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                self.close()
                self._give_up(exc)
                return

    def _give_up(self, exc: Exception) -> None:
        self.close()
        print(f"[asif_nb] the file-hash memo {self.path} is unusable ({exc}); hashing the files without it.")

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def lookup(self, stats: dict[str, tuple[int, int]]) -> dict[str, str]:
        """The remembered sha256 of each path whose (size, mtime_ns) is unchanged."""
        known: dict[str, str] = {}
        paths = list(stats)
        try:
            for start in range(0, len(paths) if self.con is not None else 0, _MEMO_BATCH):
                chunk = paths[start:start + _MEMO_BATCH]
                rows = self.con.execute(f"SELECT path, size, mtime_ns, sha256 FROM file_sha256 WHERE path IN "
                                        f"({','.join('?' * len(chunk))})", chunk)
                for path, size, mtime_ns, sha in rows:
                    if stats[path] == (size, mtime_ns):
                        known[path] = sha
        except sqlite3.Error as exc:
            self._give_up(exc)
        return known

    def store(self, rows: list[tuple[str, int, int, str]]) -> None:
        if self.con is None or not rows:
            return
        try:
            with self.con:
                self.con.executemany("INSERT OR REPLACE INTO file_sha256 VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            self._give_up(exc)


def _file_sha256s(paths: Iterable[str], memo: _FileHashMemo) -> dict[str, str]:
    """sha256 of each file (absolute paths), read only when the memo has no entry for its (size, mtime_ns)."""
    stats: dict[str, tuple[int, int]] = {}
    for path in dict.fromkeys(paths):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ValueError(f"Cannot read input file {path}: {exc}") from exc
        stats[path] = (st.st_size, st.st_mtime_ns)
    known = memo.lookup(stats)
    fresh = []
    for path, (size, mtime_ns) in stats.items():
        if path in known:
            continue
        try:
            known[path] = sha256_file(path)
            st = os.stat(path)
        except OSError as exc:
            raise ValueError(f"Cannot read input file {path}: {exc}") from exc
        if (st.st_size, st.st_mtime_ns) == (size, mtime_ns) and time.time_ns() - mtime_ns > _RACY_NS:
            fresh.append((path, size, mtime_ns, known[path]))
    memo.store(fresh)
    return known


def _check_items(items: Any, what: str) -> list:
    from PIL import Image

    if isinstance(items, (str, bytes, bytearray, os.PathLike, Image.Image)):
        raise TypeError(f"{what} expects a list of items, got a single {type(items).__name__} (a bare string would "
                        "be cached one row per character): wrap it as [item].")
    return list(items)


def _is_file(item: Any, modality: str) -> bool:
    return isinstance(item, os.PathLike) or (modality == "image" and isinstance(item, str))


def _item_digest(item: Any, file_sha256: str | None) -> bytes:
    """Content hash of one input; a type tag keeps e.g. the text "x" and the bytes b"x" apart."""
    from PIL import Image

    digest = hashlib.sha256()
    if file_sha256 is not None:
        digest.update(b"file:" + bytes.fromhex(file_sha256))
    elif isinstance(item, str):
        digest.update(b"text:" + item.encode("utf-8", "surrogatepass"))
    elif isinstance(item, Image.Image):
        digest.update(f"pil:{item.mode}:{item.size[0]}x{item.size[1]}:".encode())
        digest.update(item.tobytes())
    elif isinstance(item, (bytes, bytearray)):
        digest.update(b"bytes:" + bytes(item))
    else:
        raise TypeError(f"cannot hash an input of type {type(item).__name__}: use a path, PIL image, str or bytes.")
    return digest.digest()


def inputs_sha256(items: Sequence[Any], modality: str) -> str:
    """One hash for an ordered list of inputs: sha256 over the per-item hashes, in order.

    For ``modality="image"`` a ``str`` or path is a file (its bytes are hashed, at most once per size and mtime:
    see the module docstring); PIL images hash mode, size and pixels; bytes hash themselves; for ``"text"`` a
    ``str`` is the text. A type tag keeps e.g. the text "x" and the bytes b"x" apart.
    """
    items = _check_items(items, "inputs_sha256")
    combined = hashlib.sha256(f"{modality}:{len(items)}:".encode())
    memo = _FileHashMemo() if any(_is_file(item, modality) for item in items) else None
    try:
        # in chunks: bounded memory for millions of files, and an interrupted first pass keeps what it hashed
        for start in range(0, len(items), _ITEMS_PER_CHUNK):
            chunk = items[start:start + _ITEMS_PER_CHUNK]
            files = [os.path.abspath(os.fspath(item)) if _is_file(item, modality) else None for item in chunk]
            file_hashes = _file_sha256s([f for f in files if f is not None], memo) if memo is not None else {}
            for item, file in zip(chunk, files):
                combined.update(_item_digest(item, file_hashes.get(file) if file is not None else None))
    finally:
        if memo is not None:
            memo.close()
    return combined.hexdigest()


def _row_blocks(array: np.ndarray):
    """C-contiguous blocks of ``array`` along its first axis, ~16 MB each: views when the array is contiguous
    (no copy), and for a memmap only one block is paged in at a time."""
    if array.ndim == 0:
        yield np.ascontiguousarray(array).reshape(1)
        return
    row_bytes = max(1, array[:1].nbytes if len(array) else 1)
    step = max(1, _HASH_CHUNK_BYTES // row_bytes)
    for start in range(0, len(array), step):
        yield np.ascontiguousarray(array[start:start + step])


def _array_sha256(array: np.ndarray) -> str:
    """sha256 of the array's bytes in C order (as ``array.tobytes()`` would give), without a full copy."""
    digest = hashlib.sha256()
    for block in _row_blocks(array):
        digest.update(memoryview(block).cast("B"))
    return digest.hexdigest()


def _nonfinite_rows(array: np.ndarray) -> int:
    return sum(int((~np.isfinite(block)).reshape(len(block), -1).any(axis=1).sum()) for block in _row_blocks(array))


# ----------------------------------------------------------------------------------------------------------------
# Entries


def _slug(text: str) -> str:
    """Encoder names such as 'timm:resnet18' or 'sentence-transformers:/a/folder' made safe for a file name."""
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "_", text))
    return slug.strip("_.-")[:80] or "encoder"


def _paths(key: str, encoder, inputs_hash: str) -> tuple[Path, Path]:
    # Plain string concatenation: Path.with_suffix would cut a stem at its last '.' (keys and encoder names such as
    # 'timm:vit_base_patch16_224.augreg_in21k' have dots), and the entry would never hit.
    stem = f"{key}--{_slug(encoder.name)}--{encoder.features_id}--{inputs_hash[:16]}"
    folder = embeddings_dir()
    return folder / (stem + ".npy"), folder / (stem + ".json")


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
    if not isinstance(meta, dict):
        raise ValueError("its sidecar is not a JSON object")
    expected = {"format_version": FORMAT_VERSION, "encoder": encoder.name, "features_id": encoder.features_id,
                "features": encoder.features, "dim": encoder.dim, "count": count, "inputs_sha256": inputs_hash}
    for field, value in expected.items():
        if meta.get(field) != value:
            raise ValueError(f"sidecar {field} is {meta.get(field)!r}, expected {value!r}")
    array = np.load(npy, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise ValueError("the file is not a single .npy array")
    if array.dtype != np.float32:
        raise ValueError(f"dtype is {array.dtype}, expected float32")
    if array.shape != (count, encoder.dim):
        raise ValueError(f"shape is {array.shape}, expected {(count, encoder.dim)}")
    bad = _nonfinite_rows(array)
    if bad:
        raise ValueError(f"{bad} row(s) hold NaN or inf")
    if meta.get("array_sha256") != _array_sha256(array):
        raise ValueError("the array does not match the sidecar's array_sha256")
    return array


def embed_cached(encoder, items: Sequence[Any], key: str, ids: Sequence[str] | None = None, batch_size: int = 32,
                 progress: bool = True, refresh: bool = False) -> np.ndarray:
    """``encoder.encode(items)``, computed once and then read from the cache. Returns float32 ``(len(items), dim)``.

    ``items`` is a list (a bare str or bytes is refused with a ``TypeError``: wrap it as ``[item]``). ``key`` is a
    human-readable label for the set of inputs (e.g. "demo-images"); the entry is also tied to the encoder's name
    and ``features_id`` (weights, preprocessing, runtime, precision, device kind) and to a content hash of
    ``items``, so changing any of them computes a new entry. ``ids`` (default "0", "1", ...) are stored in the
    sidecar so a notebook can tell which row is which. A cached entry that is stale or corrupt is reported and
    recomputed; ``refresh=True`` recomputes unconditionally. Every item must be readable (the encoder runs with
    ``on_error="raise"``): a cache row per item keeps row i meaning item i.
    """
    key = _check_key(key)
    items = _check_items(items, "embed_cached")
    if ids is None:
        ids = [str(i) for i in range(len(items))]
    else:
        ids = [str(i) for i in ids]
        if len(ids) != len(items):
            raise ValueError(f"ids has {len(ids)} entries but items has {len(items)}: pass one id per item.")
    inputs_hash = inputs_sha256(items, encoder.modality)
    npy, sidecar = _paths(key, encoder, inputs_hash)
    # Two processes asking for the same entry (two notebooks, two students on one machine): the second waits for
    # the first and then reads its entry instead of embedding everything a second time.
    locks = cache_dir() / "locks" / "embeddings"
    locks.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(locks / (npy.name + ".lock"))):
        return _load_or_compute(encoder, items, key, ids, batch_size, progress, refresh, inputs_hash, npy, sidecar)


def _load_or_compute(encoder, items, key, ids, batch_size, progress, refresh, inputs_hash, npy, sidecar):
    if npy.exists() and not refresh:
        try:
            return _validate(npy, sidecar, encoder, len(items), inputs_hash)
        except _STALE_ERRORS as exc:  # truncated .npy, bad JSON, NaN rows, wrong dim, stale sidecar...
            print(f"[asif_nb] cached embeddings {npy.name} are unusable ({type(exc).__name__}: {exc}); recomputing.")

    array = encoder.encode(items, batch_size=batch_size, progress=progress, on_error="raise")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape != (len(items), encoder.dim) or _nonfinite_rows(array):
        raise RuntimeError(f"{encoder.name} returned {array.shape} with non-finite values or the wrong shape; "
                           "nothing was cached.")
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "encoder": encoder.name,
        "features_id": encoder.features_id,
        "features": encoder.features,
        "weights_id": encoder.features.get("weights_id"),
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
    """What the cache holds, one dict per entry (key, encoder, features_id, dim, count, created, MB, file, valid),
    newest first.

    ``valid`` is a quick check (sidecar readable and of this format version, .npy present with the recorded
    shape); ``embed_cached`` does the full validation when the entry is used. Entries of an older format are
    listed as not valid: they are never used and can be deleted.
    """
    rows = []
    folder = embeddings_dir()
    for sidecar in sorted(folder.glob("*.json")) if folder.exists() else []:
        npy = sidecar.parent / (sidecar.name[:-len(".json")] + ".npy")
        row: dict[str, Any] = {"file": npy.name, "key": sidecar.name.split("--")[0], "encoder": None,
                               "features_id": None, "dim": None, "count": None, "created": None,
                               "MB": round(npy.stat().st_size / 1e6, 2) if npy.exists() else 0.0, "valid": False}
        try:
            meta = json.loads(sidecar.read_text())
            row.update({k: meta.get(k) for k in ("key", "encoder", "features_id", "dim", "count", "created")})
            shape = np.load(npy, mmap_mode="r", allow_pickle=False).shape
            row["valid"] = meta.get("format_version") == FORMAT_VERSION and shape == (meta["count"], meta["dim"])
        except (*_STALE_ERRORS, AttributeError, TypeError):
            pass
        rows.append(row)
    return sorted(rows, key=lambda r: r["created"] or "", reverse=True)
