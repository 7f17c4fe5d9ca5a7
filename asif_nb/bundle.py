"""Anchor bundles: a collection's two halves embedded once, stored in verified shards, shareable with a class.

An anchor bundle is a folder::

    bundle.json            what it is: collection, source (URLs pinned to a revision), both encoders with their
                           features identity, dtype, rows, per-shard sha256, `complete`, the pairs skipped and why
    images-00000.npy       the image half of rows 0 .. R-1 (float16 or float32), R = shard_rows
    texts-00000.npy        the caption half of the same rows
    pairs-00000.jsonl      the key and caption of each of those rows, one JSON object a line
    images-00001.npy ...

``python -m asif_nb.embed`` writes one (streamed, resumable: see ``asif_nb.embed``); ``load_bundle`` opens one
from a folder, an https URL or an HF hub dataset repo, checks every shard's sha256 and returns an ``AnchorSet``
whose anchors are memory-mapped (``ShardedRows``), so 1.6M pairs never need to fit in RAM; ``push_bundle``
uploads one to the hub so whoever embedded 1.6M pairs once can share them.

Only shards listed in ``bundle.json`` exist as far as any reader is concerned: a shard is written (atomically)
before ``bundle.json`` names it, so a half-written shard is never mistaken for a whole one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import atomic_write, sha256_file
from .settings import cache_dir

BUNDLE_FORMAT = "asif_nb.anchor-bundle"
BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
DTYPES = ("float16", "float32")
_FILE = re.compile(r"^(images|texts)-\d{5}\.npy$|^pairs-\d{5}\.jsonl$")


class BundleError(ValueError):
    """A bundle is incomplete, damaged, or not the one asked for; the message says which and what to do."""


@dataclass
class AnchorSet:
    """The anchors of a model: the collection and both halves of its embeddings (row i = pair i).

    ``image_encoder`` / ``text_encoder`` describe the encoders that made them (their ``features`` with
    ``features_id``) when known, e.g. from a bundle.
    """

    collection: object
    anchor_images: object
    anchor_texts: object
    image_encoder: dict | None = None
    text_encoder: dict | None = None


def shard_files(index: int) -> dict[str, str]:
    return {"images": f"images-{index:05d}.npy", "texts": f"texts-{index:05d}.npy", "pairs": f"pairs-{index:05d}.jsonl"}


# --------------------------------------------------------------------------------------------- writing

def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The folder's ``bundle.json``, checked to be a bundle of this format; ``None`` when there is none."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path} is unreadable ({err}): delete the folder and embed again.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an asif_nb anchor bundle (no format {BUNDLE_FORMAT!r}).")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{path} is bundle format version {manifest.get('version')!r}; this asif_nb reads "
                          f"version {BUNDLE_VERSION}: upgrade asif_nb (or embed again).")
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    with atomic_write(Path(folder) / MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


def write_shard(folder: str | os.PathLike, index: int, images: np.ndarray, texts: np.ndarray, keys: list[str],
                captions: list[str], dtype: str) -> dict:
    """Write one shard's three files atomically; return its record for ``bundle.json`` (rows, files, sha256)."""
    folder = Path(folder)
    names = shard_files(index)
    arrays = {}
    for half, array in (("images", images), ("texts", texts)):
        stored = np.ascontiguousarray(array, dtype=dtype)
        if not np.isfinite(stored).all():
            raise BundleError(f"{half} of shard {index} overflow {dtype}: embed with dtype='float32'.")
        arrays[half] = stored
    for half, stored in arrays.items():
        with atomic_write(folder / names[half]) as handle:
            np.save(handle, stored, allow_pickle=False)
    with atomic_write(folder / names["pairs"], "w") as handle:
        for key, caption in zip(keys, captions):
            handle.write(json.dumps({"key": key, "caption": caption}, ensure_ascii=False) + "\n")
    return {"index": index, "rows": int(len(keys)), "files": names,
            "bytes": {half: (folder / name).stat().st_size for half, name in names.items()},
            "sha256": {half: sha256_file(folder / name) for half, name in names.items()}}


# --------------------------------------------------------------------------------------------- reading

class ShardedRows:
    """The rows of one half of a bundle, spread over memory-mapped shard files, read as one (N, d) array.

    Supports ``len``, ``.shape``, ``.dtype``, integer and contiguous-slice indexing (returning numpy arrays),
    ``take(rows)`` (any rows), ``prefix(n)`` and ``np.asarray`` (which loads everything). ``AsifModel`` streams it chunk by chunk.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], n_rows: int | None = None):
        self.arrays = [np.load(path, mmap_mode="r", allow_pickle=False) for path in paths]
        if not self.arrays:
            raise BundleError("a bundle half needs at least one shard file.")
        dims = {a.shape[1] if a.ndim == 2 else None for a in self.arrays}
        dtypes = {a.dtype for a in self.arrays}
        if len(dims) != 1 or None in dims or len(dtypes) != 1:
            raise BundleError(f"shard files {list(map(str, paths))[:3]}… disagree in shape or dtype.")
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        total = int(self.starts[-1])
        self.n = total if n_rows is None else int(n_rows)
        if not 0 <= self.n <= total:
            raise BundleError(f"asked for {n_rows} rows but the shards hold {total}.")
        self.dim, self.dtype = dims.pop(), dtypes.pop()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.dim)

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"ShardedRows({self.n} x {self.dim}, {self.dtype}, {len(self.arrays)} shard(s))"

    def prefix(self, n: int) -> "ShardedRows":
        view = object.__new__(ShardedRows)
        view.arrays, view.starts, view.dim, view.dtype = self.arrays, self.starts, self.dim, self.dtype
        if not 0 <= n <= self.n:
            raise BundleError(f"asked for the first {n} rows of {self.n}.")
        view.n = int(n)
        return view

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            i = int(index) + (self.n if index < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"row {index} of {self.n}")
            shard = int(np.searchsorted(self.starts, i, side="right") - 1)
            return np.array(self.arrays[shard][i - self.starts[shard]])
        if not isinstance(index, slice):
            raise TypeError("ShardedRows takes an int or a contiguous slice (use np.asarray for fancy indexing).")
        start, stop, step = index.indices(self.n)
        if step != 1:
            raise TypeError("ShardedRows takes contiguous slices only.")
        parts = []
        for shard, array in enumerate(self.arrays):
            lo, hi = max(start, self.starts[shard]), min(stop, self.starts[shard + 1])
            if lo < hi:
                parts.append(array[lo - self.starts[shard]:hi - self.starts[shard]])
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=self.dtype)

    def take(self, rows) -> np.ndarray:
        """The rows at integer positions ``rows`` (1-D, any order, repeats allowed), read shard by shard."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"rows outside 0..{self.n - 1}")
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((rows.size, self.dim), dtype=self.dtype)
        for s in np.unique(shard):
            where = np.flatnonzero(shard == s)
            out[where] = self.arrays[s][rows[where] - self.starts[s]]
        return out

    def __array__(self, dtype=None, copy=None):
        array = self[0:self.n]
        return array if dtype is None else array.astype(dtype)


class BundleCollection(Sequence):
    """The pairs of a bundle (keys and captions; images stay where the source is): reads like a ``Collection``."""

    def __init__(self, name: str, ids: list[str], captions: list[str], sources=(), licence: str = ""):
        self.name, self.ids, self.captions, self.sources, self.licence = name, ids, captions, list(sources), licence
        self.split = {}

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        from .data import Pair

        if isinstance(index, slice):
            return BundleCollection(self.name, self.ids[index], self.captions[index], self.sources, self.licence)
        return Pair(self.ids[index], self.captions[index], None, self.name, self.licence)

    def __repr__(self):
        return f"BundleCollection({self.name!r}, {len(self)} pairs)"

    @property
    def images(self):
        return [None] * len(self)

    @property
    def categories(self):
        return [None] * len(self)


def _verify(folder: Path, manifest: dict, shards: list[dict]) -> None:
    for shard in shards:
        for half, name in shard["files"].items():
            if not _FILE.match(name):
                raise BundleError(f"{folder / MANIFEST} names an unexpected file {name!r}.")
            path = folder / name
            if not path.is_file():
                raise BundleError(f"{path} is missing: the bundle is incomplete; download or embed it again.")
            if sha256_file(path) != shard["sha256"][half]:
                raise BundleError(f"{path} does not match the sha256 in {MANIFEST}: it is damaged; delete it and "
                                  "download or embed the bundle again.")


def open_bundle(folder: str | os.PathLike, n_pairs: int | None = None, verify: bool = True) -> AnchorSet:
    """An ``AnchorSet`` over a bundle folder (see ``load_bundle``)."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    if manifest is None:
        raise BundleError(f"{folder} holds no {MANIFEST}: pass a bundle folder (python -m asif_nb.embed writes one).")
    rows = int(manifest["rows"])
    if n_pairs is not None and (isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer))
                                or n_pairs <= 0):
        raise ValueError(f"n_pairs={n_pairs!r}: pass a positive int, or None for the whole bundle.")
    want = rows if n_pairs is None else int(n_pairs)
    if want > rows or (n_pairs is None and not manifest["complete"]):
        state = "complete" if manifest["complete"] else f"incomplete ({rows} of {manifest.get('n_pairs')} rows)"
        raise BundleError(f"{folder} is {state}: it cannot give {want} pairs. Run python -m asif_nb.embed with the "
                          f"same arguments (and --n-pairs {want}) to finish it, or ask for at most {rows}.")
    shards, covered = [], 0
    for shard in manifest["shards"]:
        if covered >= want:
            break
        shards.append(shard)
        covered += shard["rows"]
    if verify:
        _verify(folder, manifest, shards)
    ids, captions = [], []
    for shard in shards:
        with open(folder / shard["files"]["pairs"], encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                ids.append(record["key"])
                captions.append(record["caption"])
    images = ShardedRows([folder / s["files"]["images"] for s in shards], want)
    texts = ShardedRows([folder / s["files"]["texts"] for s in shards], want)
    collection = BundleCollection(manifest["collection"], ids[:want], captions[:want],
                                  [{"source": manifest["collection"], **manifest["source"], "count": want,
                                    "licence": manifest.get("licence", "")}], manifest.get("licence", ""))
    return AnchorSet(collection, images, texts, manifest["encoders"]["image"], manifest["encoders"]["text"])
