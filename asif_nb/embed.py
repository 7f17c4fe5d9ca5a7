"""Embed a collection's anchors at scale into an anchor bundle: streamed, resumable, honest about bad data.

    python -m asif_nb.embed COLLECTION --image-encoder NAME --text-encoder NAME [--n-pairs N] [--out DIR]
                            [--shard-rows R] [--batch-size B] [--device auto|cpu|cuda] [--dtype float16|float32]

and the same as a function, ``embed_collection``. ``COLLECTION`` is ``cc12m`` / ``cc3m`` (the HF hub
webdatasets, streamed: see ``asif_nb.stream``), a local collection (``demo``, ``folder:<path>``), or shards of
your own (``wds:<glob, URL or template with {shard}>``, with ``--shards N`` for a template).

How it runs: samples stream in order; images are decoded and preprocessed in worker threads (PIL releases the
GIL), a few batches ahead of the model; both halves are embedded batch by batch; every ``shard_rows`` rows become
one bundle shard (``asif_nb.bundle``), written atomically, and only then recorded in ``bundle.json`` together
with where the source stream continues. So:

- **no image file is ever written**: disk use is the bundle plus the shard in flight;
- **resumable**: killed at any moment, the same command continues from the last recorded shard, and the result
  is byte-identical to an uninterrupted run (a model batch never straddles two shards, so every batch is the
  same in both runs);
- **honest**: undecodable images and empty captions are skipped and listed in ``bundle.json`` with their key and
  reason; a shard that cannot be read to its end stops the run with its name (nothing partial is recorded).

``n_pairs`` counts usable pairs: the bundle holds the first ``n_pairs`` usable pairs in stream order. Asking an
existing bundle for more pairs extends it; asking for fewer returns it unchanged (``load_bundle(n_pairs=...)``
takes the prefix).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .bundle import (BUNDLE_FORMAT, BUNDLE_VERSION, DTYPES, BundleError, read_manifest, write_manifest,
                     write_shard)
from .settings import cache_dir, resolve_device
from .stream import HUB_DATASETS, Position, Sample, ShardError, WebDataset, hub_webdataset, local_webdataset
from .transfer import Limits

DEFAULT_SHARD_ROWS = 50_000
DEFAULT_BATCH_SIZE = 64
DECODES = ("auto", "pil", "torchvision")


# --------------------------------------------------------------------------------------------- sources

class _CollectionSource:
    """A local collection (``demo``, ``folder:``) read as a stream of samples (one pseudo-shard)."""

    def __init__(self, collection):
        self.name = collection.name
        self.pairs = collection.pairs
        digest = hashlib.sha256()
        for pair in self.pairs:
            digest.update(f"{pair.id}\0{pair.caption}\0".encode("utf-8"))
            digest.update(bytes.fromhex(_file_sha256(pair.image)))
        self.identity = {"kind": "collection", "name": collection.name, "pairs": len(self.pairs),
                         "sha256": digest.hexdigest()}
        self.licence = "; ".join(sorted({pair.licence for pair in self.pairs}))

    def samples(self, start: Position = Position(), limits=None):
        for index in range(start.sample, len(self.pairs)):
            pair = self.pairs[index]
            try:
                image, skip = Path(pair.image).read_bytes(), None
            except OSError as err:
                image, skip = None, f"cannot read {pair.image}: {err}"
            yield Sample(pair.id, image, pair.caption, 0, index, Position(0, index + 1), skip)


def _file_sha256(path) -> str:
    from .fileio import sha256_file

    return sha256_file(path)


def resolve_source(collection, n_shards: int | None = None, revision: str | None = None, limits=None):
    """A sample source for ``collection``: a hub webdataset name, ``wds:<shards>``, a ``WebDataset``, or any name
    ``load_collection`` knows."""
    if isinstance(collection, WebDataset):
        return collection
    if not isinstance(collection, str) or not collection:
        raise ValueError(f"collection={collection!r}: pass cc12m, cc3m, demo, folder:<path> or wds:<shards>.")
    if collection in HUB_DATASETS:
        return hub_webdataset(collection, revision=revision, limits=limits)
    if collection.startswith("wds:"):
        return local_webdataset(collection[4:], name="webdataset", n_shards=n_shards)
    from .data import load_collection

    return _CollectionSource(load_collection(collection))


# --------------------------------------------------------------------------------------------- identity

def _identity(encoder, decode: str = "pil") -> dict:
    """What decides an encoder's numbers, for ``bundle.json``: its ``features``, ``features_id`` and ``dim``. Images
    decoded by torchvision (nvjpeg on a GPU) are not bit-identical to PIL's: that decode gets its own identity."""
    features = {**encoder.features, "dim": int(encoder.dim)}
    if decode == "pil":
        return {**features, "features_id": encoder.features_id}
    features["decode"] = f"torchvision.io.decode_jpeg on {features['device']}"
    digest = hashlib.sha256(json.dumps(features, sort_keys=True).encode()).hexdigest()[:16]
    return {**features, "features_id": f"f-{digest}"}


def _decode_choice(decode: str, device: str, image_encoder) -> str:
    """``auto``: JPEGs are decoded on the GPU (nvjpeg, batched) when the model runs there and its preprocessing is
    tensor arithmetic (the authors' ViT/DINO); otherwise by PIL in the worker threads."""
    if decode not in DECODES:
        raise ValueError(f"decode={decode!r}: use one of {DECODES}.")
    gpu_ready = getattr(image_encoder, "tensor_preprocess", None) is not None
    if decode == "auto":
        return "torchvision" if gpu_ready and str(device).startswith("cuda") else "pil"
    if decode == "torchvision" and not gpu_ready:
        raise ValueError(f"decode='torchvision' needs an image encoder whose preprocessing is tensor arithmetic "
                         f"(the authors' ViT/DINO); {image_encoder.name} preprocesses with PIL: use decode='pil'.")
    return decode


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:60] or "collection"


def default_out(source_name: str, image: dict, text: dict, dtype: str) -> Path:
    """``cache_dir()/bundles/<collection>--<image features_id>--<text features_id>--<dtype>``."""
    return cache_dir() / "bundles" / f"{_slug(source_name)}--{image['features_id']}--{text['features_id']}--{dtype}"


def _header(source, image: dict, text: dict, dtype: str, shard_rows: int, n_pairs) -> dict:
    return {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "collection": source.name,
            "source": source.identity, "licence": getattr(source, "licence", ""),
            "encoders": {"image": image, "text": text}, "dtype": dtype, "shard_rows": shard_rows,
            "n_pairs": n_pairs, "rows": 0, "complete": False, "exhausted": False, "skipped": 0, "shards": []}


def _check_same(existing: dict, header: dict, out: Path) -> None:
    """Refuse to continue a bundle made from other data or by other encoders (never mix two in one folder)."""
    for key in ("collection", "source", "dtype", "shard_rows"):
        if existing.get(key) != header[key]:
            raise BundleError(f"{out} holds a bundle with another {key} ({existing.get(key)!r}, asked "
                              f"{header[key]!r}): pass another --out, or delete that folder to start again.")
    for half in ("image", "text"):
        old, new = existing["encoders"][half]["features_id"], header["encoders"][half]["features_id"]
        if old != new:
            raise BundleError(f"{out} was embedded with another {half} encoder ({existing['encoders'][half]['name']}, "
                              f"features {old}; now {header['encoders'][half]['name']}, features {new}): pass another "
                              "--out, or delete that folder to start again.")


# --------------------------------------------------------------------------------------------- the pipeline

def _prepare(sample: Sample, image_encoder, text_encoder, decode: str):
    """(image, caption, None) or (None, None, reason) for one sample, in a worker thread: decoded and preprocessed
    by PIL, or — for GPU decoding — a JPEG checked and kept as bytes (any other format decoded to uint8 pixels)."""
    if sample.skip is not None:
        return None, None, sample.skip
    try:
        caption = text_encoder.prepare(sample.caption)
        if decode == "pil":
            return image_encoder.prepare(sample.image), caption, None
        return _jpeg_or_pixels(sample.image), caption, None
    except ValueError as err:
        return None, None, str(err)


def _jpeg_or_pixels(data: bytes):
    from PIL import Image

    from .encoders import load_image
    from .encoders.base import error_text

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
    except Exception as err:  # PIL raises many kinds on a file it cannot identify
        raise ValueError(f"Cannot read image <{len(data)} bytes>: {error_text(err)}") from None
    if kind == "JPEG":
        return ("jpeg", data)
    return ("pixels", np.asarray(load_image(data), dtype=np.uint8).transpose(2, 0, 1).copy())


def _gpu_pixels(items, image_encoder):
    """Decode a batch's JPEGs together with torchvision (nvjpeg on a GPU) and preprocess them on the device."""
    import warnings

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    device = image_encoder.device
    decoded = [None] * len(items)
    jpegs = [i for i, (kind, _) in enumerate(items) if kind == "jpeg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        if jpegs:
            data = [torch.frombuffer(bytearray(items[i][1]), dtype=torch.uint8) for i in jpegs]
            try:
                out = decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
            except RuntimeError:  # one bad JPEG fails the batch: decode one by one, PIL for those it cannot
                out = [_decode_one(d, device) for d in data]
            for i, pixels in zip(jpegs, out):
                decoded[i] = pixels
    for i, (kind, value) in enumerate(items):
        if kind == "pixels":
            decoded[i] = torch.from_numpy(value).to(device)
    with torch.no_grad():
        return torch.stack([image_encoder.tensor_preprocess(pixels) for pixels in decoded])


def _decode_one(data, device):
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from .encoders import load_image

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    except RuntimeError:
        pixels = np.asarray(load_image(bytes(data.numpy())), dtype=np.uint8).transpose(2, 0, 1).copy()
        return torch.from_numpy(pixels).to(device)



def _prepared(samples, image_encoder, text_encoder, decode, pool, window: int):
    """(sample, image, caption, reason) in stream order, preparing up to ``window`` samples ahead."""
    pending = collections.deque()
    try:
        for sample in samples:
            pending.append((sample, pool.submit(_prepare, sample, image_encoder, text_encoder, decode)))
            if len(pending) >= window:
                sample, future = pending.popleft()
                yield (sample, *future.result())
    except (ShardError, OSError) as err:
        # A failure while reading ahead only matters if the samples before it were not enough: hand those out first.
        while pending:
            sample, future = pending.popleft()
            yield (sample, *future.result())
        raise err
    while pending:
        sample, future = pending.popleft()
        yield (sample, *future.result())


def _embed_shard(rows, image_encoder, text_encoder, batch_size: int, decode: str):
    images, texts = [], []
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        pixels = [row[1] for row in batch]
        images.append(image_encoder.forward(pixels if decode == "pil" else _gpu_pixels(pixels, image_encoder)))
        texts.append(text_encoder.forward([row[2] for row in batch]))
    return np.concatenate(images), np.concatenate(texts)


def embed_collection(collection, image_encoder, text_encoder, *, n_pairs: int | None = None,
                     out: str | os.PathLike | None = None, shard_rows: int = DEFAULT_SHARD_ROWS,
                     batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", dtype: str = "float16",
                     workers: int | None = None, n_shards: int | None = None, limits: Limits | None = None,
                     decode: str = "auto", progress: bool = True) -> Path:
    """Embed the first ``n_pairs`` usable pairs of ``collection`` into an anchor bundle; return its folder.

    ``image_encoder`` / ``text_encoder`` are names (loaded on ``device``) or loaded encoders. ``out`` defaults to
    ``default_out(...)`` in the cache. Resumes and extends an existing bundle of the same source and encoders;
    refuses one made from anything else. ``decode``: "pil" (worker threads), "torchvision" (batched on the
    model's device: nvjpeg on a GPU) or "auto" (torchvision on a GPU when the preprocessing allows). See the module
    docstring.
    """
    from .progress import bar as tqdm

    from .encoders import load_image_encoder, load_text_encoder

    check_options(shard_rows=shard_rows, batch_size=batch_size, n_pairs=n_pairs, dtype=dtype)
    device = resolve_device(device)
    if isinstance(image_encoder, str):
        image_encoder = load_image_encoder(image_encoder, device=device)
    if isinstance(text_encoder, str):
        text_encoder = load_text_encoder(text_encoder, device=device)
    decode = _decode_choice(decode, device, image_encoder)
    image_id, text_id = _identity(image_encoder, decode), _identity(text_encoder)
    limits = limits or Limits()

    source, out, header = open_source(collection, image_id, text_id, dtype, shard_rows, n_pairs, out, n_shards,
                                      limits)
    with bundle_lock(out):
        manifest, position = resume(out, header)
        if position is None:
            return out
        return _run(source, manifest, out, position, image_encoder, text_encoder, batch_size, workers, limits,
                    decode, progress, tqdm)


# --------------------------------------------------------------------------------------------- the bundle's record
# One code path for both pipelines: this process's (_run) and Ray's (asif_nb.ray_embed) write a bundle through these.

def open_source(collection, image_id: dict, text_id: dict, dtype: str, shard_rows: int, n_pairs, out, n_shards,
                limits):
    """(source, bundle folder, the header a bundle of them starts from). A bundle already at ``out`` pins the
    source's revision: a resumed run reads the very same data."""
    source_name = collection if isinstance(collection, str) else collection.name
    out = Path(out).expanduser() if out is not None else default_out(source_name, image_id, text_id, dtype)
    existing = read_manifest(out) if out.exists() else None
    revision = (existing or {}).get("source", {}).get("revision")
    source = resolve_source(collection, n_shards=n_shards, revision=revision, limits=limits)
    out.mkdir(parents=True, exist_ok=True)
    return source, out, _header(source, image_id, text_id, dtype, shard_rows, None if n_pairs is None else int(n_pairs))


def check_options(*, shard_rows, batch_size, n_pairs, dtype) -> None:
    for name, value in (("shard_rows", shard_rows), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r}: pass a positive int.")
    if n_pairs is not None and (isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs <= 0):
        raise ValueError(f"n_pairs={n_pairs!r}: pass a positive int, or None for the whole collection.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {DTYPES}.")


@contextlib.contextmanager
def bundle_lock(out: Path):
    """One writer per bundle folder, whichever pipeline it runs."""
    import filelock

    lock = filelock.FileLock(str(out) + ".lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise BundleError(f"another process is embedding into {out} right now: wait for it, or pass another "
                          "--out.") from None
    try:
        yield
    finally:
        lock.release()


def resume(out: Path, header: dict) -> tuple[dict, Position | None]:
    """The bundle's manifest (``header`` for a new one), cut back to its last full shard, and where the source
    stream continues; None when the bundle already holds what is asked. A short last shard is redone: its batches
    would differ."""
    manifest = read_manifest(out) or header
    _check_same(manifest, header, out)
    n_pairs = header["n_pairs"]
    if manifest["complete"] and (manifest["exhausted"] or (n_pairs is not None and manifest["rows"] >= n_pairs)):
        return manifest, None
    shards = [s for s in manifest["shards"] if s["rows"] == header["shard_rows"]]
    manifest.update(n_pairs=n_pairs, shards=shards, complete=False, exhausted=False,
                    rows=sum(s["rows"] for s in shards), skipped=sum(len(s["skipped"]) for s in shards))
    return manifest, Position(**shards[-1]["source_end"]) if shards else Position()


def append_shard(out: Path, manifest: dict, images, texts, samples, skipped: list) -> None:
    """Write the next bundle shard (rows = ``samples``, in order) and record it, with the samples skipped among them
    and where the stream continues after its last row."""
    record = write_shard(out, len(manifest["shards"]), images, texts, [s.key for s in samples],
                         [s.caption for s in samples], manifest["dtype"])
    record["source_end"] = samples[-1].after.as_dict()
    record["skipped"] = skipped
    manifest["shards"].append(record)
    manifest["rows"] += len(samples)
    manifest["skipped"] += len(skipped)


def append_trailing(manifest: dict, skipped: list) -> None:
    """Bad samples after the last row go to the last shard's record."""
    if skipped and manifest["shards"]:
        manifest["shards"][-1]["skipped"].extend(skipped)
        manifest["skipped"] += len(skipped)


def finish(out: Path, manifest: dict, seconds: float, first_rows: int, progress: bool, where: str = "") -> Path:
    manifest["complete"] = True
    write_manifest(out, manifest)
    if progress:
        done = manifest["rows"] - first_rows
        rate = f", {done / seconds:.1f} pairs/s{where}" if seconds > 0 and done else ""
        print(f"{out}: {manifest['rows']} pairs, {manifest['skipped']} skipped{rate}", file=sys.stderr)
    return out


def _run(source, manifest, out, position, image_encoder, text_encoder, batch_size, workers, limits, decode, progress,
         tqdm):
    target, shard_rows = manifest["n_pairs"], manifest["shard_rows"]
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    bar = tqdm(total=target, initial=manifest["rows"], unit="img", disable=not progress,
               desc=f"embed {source.name}", smoothing=0.05)
    started, first_rows = time.perf_counter(), manifest["rows"]
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            stream = _prepared(source.samples(position, limits), image_encoder, text_encoder, decode, pool,
                               window=max(2 * batch_size, 4 * workers))
            while target is None or manifest["rows"] < target:
                want = shard_rows if target is None else min(shard_rows, target - manifest["rows"])
                rows, skipped = [], []
                for sample, image, caption, reason in stream:
                    if reason is not None:
                        skipped.append({"key": sample.key, "shard": sample.shard, "reason": reason})
                        continue
                    rows.append((sample, image, caption))
                    if len(rows) == want:
                        break
                exhausted = len(rows) < want
                if rows:
                    images, texts = _embed_shard(rows, image_encoder, text_encoder, batch_size, decode)
                    append_shard(out, manifest, images, texts, [r[0] for r in rows], skipped)
                    bar.update(len(rows))
                    bar.set_postfix(skipped=manifest["skipped"], refresh=False)
                else:
                    append_trailing(manifest, skipped)
                if exhausted:
                    manifest["exhausted"] = True
                    break
                write_manifest(out, manifest)
    finally:
        bar.close()
    return finish(out, manifest, time.perf_counter() - started, first_rows, progress)


# --------------------------------------------------------------------------------------------- the command

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asif_nb.embed", description=__doc__.split("\n")[0])
    parser.add_argument("collection", help="cc12m, cc3m, demo, folder:<path> or wds:<shards>")
    parser.add_argument("--image-encoder", required=True)
    parser.add_argument("--text-encoder", required=True)
    parser.add_argument("--n-pairs", type=int, default=None, help="usable pairs to embed (default: all)")
    parser.add_argument("--out", default=None, help="bundle folder (default: in the cache, named by the inputs)")
    parser.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="float16", choices=list(DTYPES))
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: the CPU count, ≤ 8)")
    parser.add_argument("--shards", type=int, default=None, help="number of shards of a wds: template")
    parser.add_argument("--decode", default="auto", choices=list(DECODES),
                        help="auto: on the GPU (nvjpeg) when possible, else PIL in worker threads")
    parser.add_argument("--ray-address", default=None,
                        help="embed on Ray (pip install asif_nb[scale]): auto (the cluster this node belongs to), "
                             "local (start one here) or ray://HOST:PORT; wds:/cc12m/cc3m shards only")
    parser.add_argument("--encoders", type=int, default=1, help="with --ray-address: encoder actors (one per GPU)")
    args = parser.parse_args(argv)
    try:
        if args.ray_address is not None:
            from .ray_embed import embed_collection_ray

            out = embed_collection_ray(args.collection, args.image_encoder, args.text_encoder, n_pairs=args.n_pairs,
                                       out=args.out, shard_rows=args.shard_rows, batch_size=args.batch_size,
                                       device=args.device, dtype=args.dtype, n_shards=args.shards,
                                       address=None if args.ray_address == "local" else args.ray_address,
                                       encoders=args.encoders)
        else:
            out = embed_collection(args.collection, args.image_encoder, args.text_encoder, n_pairs=args.n_pairs,
                                   out=args.out, shard_rows=args.shard_rows, batch_size=args.batch_size,
                                   device=args.device, dtype=args.dtype, workers=args.workers,
                                   n_shards=args.shards, decode=args.decode)
    except (ShardError, BundleError, ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
