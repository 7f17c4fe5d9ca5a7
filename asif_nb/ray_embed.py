"""Anchor bundles embedded on a Ray cluster: the bundle ``python -m asif_nb.embed`` writes, row for row.

    python -m asif_nb.embed wds:/data/shards/part-{shard:05d}.tar --shards 1000 --ray-address auto \\
        --image-encoder vit-b16-in21k --text-encoder all-mpnet-base-v2 --device cuda --encoders 8

``embed_collection_ray`` runs the single-process pipeline of ``asif_nb.embed`` as a Ray Data pipeline, so the same
command scales from one machine (``--ray-address local``: a Ray instance started on it) to a cluster
(``--ray-address auto`` on a node of it, or ``ray://head:10001``):

    shard URLs --flat_map(read: asif_nb.stream, one task per shard)--> samples
        --map_batches(prepare: decode + preprocess, CPU actors)--> model inputs, or why a sample is skipped
        --map_batches(layout: one actor, in stream order)--> encoder batches exactly as embed.py forms them
        --map_batches(encode: one actor per GPU / CPU slot)--> both embeddings of each batch
        --> the driver writes bundle shards + bundle.json in order, through embed.py's own code (append_shard)

Row for row, byte for byte: the order is preserved end to end (``preserve_order``), and the layout actor groups the
usable samples into the very batches ``embed.py`` feeds its encoders (``batch_size`` rows within each bundle shard of
``shard_rows``), because an encoder's output can depend on its batch (a text encoder pads to the batch's longest
caption). Skipped samples are recorded in the shard whose rows they came among, where the stream continues is recorded
per shard, and a resumed run starts reading at the last full shard's position, as ``embed.py`` does, so the two
commands may even finish each other's bundles. The encoders' identity (``features_id``) is read in a task with the
encoder actors' resources, so a GPU cluster's bundle is labelled by the GPU encoders that made it.

Between stages each row is one pickled Python object (Arrow would turn a missing string into NaN). The layout actor
passes every model input through itself: one actor moves a few GB/s of float32 pixels on a node, the
ceiling of this design, well above what a handful of GPUs embed.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import time

import numpy as np

from .bundle import BundleError, write_manifest
from .stream import HUB_DATASETS, Position, Sample, WebDataset

__all__ = ["embed_collection_ray"]

_END = "\0end"  # the key of the row that follows the last sample of the last shard


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError('embedding on Ray needs ray[data]: pip install "asif_nb[scale]".') from None
    return ray


# --------------------------------------------------------------------------------------------- the stages

def _pack(value) -> bytes:
    """One row's Python objects as one bytes column: Arrow, between stages, would turn a missing string into NaN and
    refuses a column mixing arrays and None. The pickles never leave this pipeline's own workers."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(batch):
    return [pickle.loads(item) for item in batch["item"]]


def _column(values):
    array = np.empty(len(values), dtype=object)
    array[:] = [_pack(value) for value in values]
    return {"item": array}


def _read_shard(row, urls, start, limits):
    """One shard's samples, in order, read by ``asif_nb.stream`` (retries, damage named, HTTP Range resume); one
    task per shard, so shards are read in parallel and handed on in order."""
    from .stream import _shard_samples

    shard = int(row["shard"])
    position = Position(**start) if shard == start["shard"] else Position(shard)
    for sample in _shard_samples(urls[shard], position, limits):
        yield {"item": _pack(sample)}
    if shard == len(urls) - 1:
        yield {"item": _pack(Sample(_END, None, None, shard, 0, Position(), None))}


class _Prepare:
    """Decode and preprocess each sample, or say why it cannot be used: ``embed._prepare`` itself."""

    def __init__(self, image_name, text_name, device):
        from .encoders import load_image_encoder, load_text_encoder

        self.image = load_image_encoder(image_name, device=device)
        self.text = load_text_encoder(text_name, device=device)

    def __call__(self, batch):
        from .embed import _prepare

        out = []
        for sample in _unpack(batch):
            out.append((sample, None, None, None) if sample.key == _END else
                       (sample, *_prepare(sample, self.image, self.text, "pil")))
        return _column(out)


class _Layout:
    """The single actor that sees every sample in stream order and cuts embed.py's batches: ``batch_size`` usable rows
    at a time within bundle shards of ``shard_rows`` (the last shard shorter when ``n_pairs`` ends it), each batch one
    output row carrying the samples skipped since the previous batch."""

    def __init__(self, shard_rows, batch_size, first_shard, rows_done, target):
        self.shard_rows, self.batch_size, self.target = shard_rows, batch_size, target
        self.shard, self.in_shard, self.rows = first_shard, 0, rows_done
        self.pending, self.skipped, self.done = [], [], False

    def _shard_size(self):  # as embed.py: a shard is cut short only by n_pairs
        return self.shard_rows if self.target is None else min(self.shard_rows, self.target - (self.rows - self.in_shard))

    def __call__(self, batch):
        out = []
        for sample, image, caption, reason in _unpack(batch):
            if self.done:
                break
            if sample.key == _END:  # the stream ended: what is pending is the last (short) shard's last batch
                if self.pending:
                    out.append(self._emit())
                out.append(self._emit(end=True))
                self.done = True
                break
            if reason is not None:
                self.skipped.append({"key": sample.key, "shard": sample.shard, "reason": reason})
                continue
            self.pending.append((sample, image, caption))
            self.in_shard += 1
            self.rows += 1
            size = self._shard_size()
            if len(self.pending) == self.batch_size or self.in_shard == size:
                out.append(self._emit(final=self.in_shard == size))
            if self.in_shard == size:
                self.shard, self.in_shard = self.shard + 1, 0
                if self.target is not None and self.rows >= self.target:
                    out.append(self._emit(end=True))
                    self.done = True
        return _column(out)

    def _emit(self, final=False, end=False):
        row = {"rows": self.pending, "skipped": self.skipped, "final": final, "end": end}
        self.pending, self.skipped = [], []
        return row


class _Encode:
    """One encoder pair per actor (one per GPU, or per CPU slot): embeds each layout batch as ``embed._embed_shard``."""

    def __init__(self, image_name, text_name, device):
        from .encoders import load_image_encoder, load_text_encoder

        if device == "cpu":
            # Ray gives an actor OMP_NUM_THREADS=1; torch's float sums depend on the thread count, so a CPU encoder
            # uses the node's cores, as a plain process (embed.py) does, to give the same bits.
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        self.image = load_image_encoder(image_name, device=device)
        self.text = load_text_encoder(text_name, device=device)

    def __call__(self, batch):
        from .embed import _embed_shard

        out = []
        for row in _unpack(batch):
            rows = row.pop("rows")
            if rows:
                row["images"], row["texts"] = _embed_shard(rows, self.image, self.text, len(rows), "pil")
            row["samples"] = [dataclasses.replace(sample, image=None) for sample, _, _ in rows]
            out.append(row)
        return _column(out)


def _identities(image_name, text_name, device):
    from .embed import _identity
    from .encoders import load_image_encoder, load_text_encoder

    return (_identity(load_image_encoder(image_name, device=device)),
            _identity(load_text_encoder(text_name, device=device)))


# --------------------------------------------------------------------------------------------- the driver

def embed_collection_ray(collection, image_encoder: str, text_encoder: str, *, n_pairs=None, out=None,
                         shard_rows=None, batch_size=None, device="auto", dtype="float16", n_shards=None,
                         limits=None, address=None, encoders=1, gpus_per_encoder=None, preparers=None,
                         progress=True):
    """``embed.embed_collection`` on Ray (see the module docstring); returns the bundle folder.

    ``collection``: ``cc12m`` / ``cc3m`` / ``wds:<shards>`` (a local collection has no shards to spread: use
    ``embed_collection``). Encoders are given by name (each actor loads its own). ``address``: a Ray cluster
    (``"auto"``, ``"ray://head:10001"``); None starts or joins a local one. ``encoders``: encoder actors;
    ``gpus_per_encoder``: default 1 when ``device`` is cuda (or auto on a cluster with GPUs), else 0 (then each
    actor takes a CPU). ``preparers``:
    decoding actors, an int or a (min, max) range (default: 1 up to the cluster's CPU count, scaled by Ray).
    """
    from .embed import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_ROWS, bundle_lock, check_options, finish, open_source, resume
    from .transfer import Limits

    shard_rows = DEFAULT_SHARD_ROWS if shard_rows is None else shard_rows
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    check_options(shard_rows=shard_rows, batch_size=batch_size, n_pairs=n_pairs, dtype=dtype)
    if isinstance(encoders, bool) or not isinstance(encoders, int) or encoders <= 0:
        raise ValueError(f"encoders={encoders!r}: pass a positive int.")
    if not isinstance(image_encoder, str) or not isinstance(text_encoder, str):
        raise ValueError("on Ray the encoders are given by name (each actor loads its own), e.g. "
                         "image_encoder='efficientnet-lite2'.")
    ray = _ray()
    limits = limits or Limits()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    if gpus_per_encoder is None:  # auto: a GPU per encoder when the cluster has GPUs
        wants_gpu = device == "cuda" or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        gpus_per_encoder = 1 if wants_gpu else 0
    gpus = gpus_per_encoder
    actor_device = "cuda" if gpus else "cpu"
    image_id, text_id = ray.get(ray.remote(num_gpus=gpus, num_cpus=0 if gpus else 1)(_identities).remote(
        image_encoder, text_encoder, actor_device))

    if not isinstance(collection, WebDataset) and not (isinstance(collection, str) and (
            collection.startswith("wds:") or collection in HUB_DATASETS)):
        raise ValueError(f"{collection!r} is a local collection, not shards: embed it with embed_collection "
                         "(python -m asif_nb.embed without --ray-address).")
    source, out, header = open_source(collection, image_id, text_id, dtype, shard_rows, n_pairs, out, n_shards,
                                      limits)
    with bundle_lock(out):
        manifest, start = resume(out, header)
        if start is None:
            return out
        if start.shard >= len(source.urls):  # the stream ended exactly at the last full shard
            manifest["exhausted"] = True
            return finish(out, manifest, 0.0, manifest["rows"], False)
        ds = _pipeline(ray, source.urls, start, limits, manifest, batch_size, image_encoder, text_encoder,
                       actor_device, gpus, encoders, preparers)
        return _write(ds, manifest, out, progress)


def _pipeline(ray, urls, start, limits, manifest, batch_size, image_encoder, text_encoder, actor_device, gpus,
              encoders, preparers):
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    urls = list(urls)
    first = start.shard
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items([{"shard": i} for i in range(first, len(urls))])  # a block per shard, up to 200
    ds = ds.flat_map(_read_shard, fn_args=(urls, start.as_dict(), limits), num_cpus=0.5)
    ds = ds.map_batches(_Prepare, fn_constructor_args=(image_encoder, text_encoder, "cpu"), batch_size=batch_size,
                        batch_format="numpy", compute=_pool(ray, preparers or (1, cpus)), num_cpus=0.5)
    ds = ds.map_batches(_Layout, fn_constructor_args=(manifest["shard_rows"], batch_size, len(manifest["shards"]),
                                                      manifest["rows"], manifest["n_pairs"]),
                        batch_size=None, batch_format="numpy", compute=_pool(ray, 1), num_cpus=0)
    return ds.map_batches(_Encode, fn_constructor_args=(image_encoder, text_encoder, actor_device), batch_size=1,
                          batch_format="numpy", compute=_pool(ray, encoders), num_gpus=gpus,
                          num_cpus=0 if gpus else 1)


def _pool(ray, size):
    low, high = (size, size) if isinstance(size, int) else size
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def _write(ds, manifest, out, progress):
    """Collect the encoded batches in order into bundle shards, through embed.py's own record-keeping."""
    from .embed import append_shard, append_trailing, finish

    started, first_rows = time.perf_counter(), manifest["rows"]
    parts, skipped, ended = [], [], False
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        for row in _unpack(batch):
            skipped.extend(row["skipped"])
            if row["samples"]:
                parts.append(row)
            if row["final"] or (row["end"] and parts):
                append_shard(out, manifest, np.concatenate([p["images"] for p in parts]),
                             np.concatenate([p["texts"] for p in parts]),
                             [sample for p in parts for sample in p["samples"]], skipped)
                parts, skipped = [], []
                write_manifest(out, manifest)
            ended = ended or row["end"]
        if ended:
            break
    if not ended:
        raise BundleError(f"the Ray pipeline stopped before the end of the stream: run the same command again to "
                          f"resume {out}.")
    append_trailing(manifest, skipped)
    target = manifest["n_pairs"]
    manifest["exhausted"] = target is None or manifest["rows"] < target
    return finish(out, manifest, time.perf_counter() - started, first_rows, progress, " on Ray")
