"""Image–caption pairs streamed from webdataset tar shards: the paper's CC12M / CC3M, or shards of your own.

A webdataset shard is a plain tar whose members are grouped into samples by key: ``000123.jpg``,
``000123.txt`` and ``000123.json`` are the image, the caption and the metadata of sample ``000123`` (the key is
the member's path up to the first dot of its base name, webdataset's ``__key__``). Nothing is written to disk:
each sample's members are read from the network stream into memory and handed on.

The paper's collections are the HF hub datasets ``pixparse/cc12m-wds`` and ``pixparse/cc3m-wds``. Their URLs
are built with ``huggingface_hub.hf_hub_url``, so the standard ``HF_ENDPOINT`` variable points them at a mirror,
and they are pinned to the commit the hub names on first contact (``X-Repo-Commit``), so a resumed run reads
the very same bytes.

Honest about bad data:

- a sample without an image, or with a missing, empty or non-UTF-8 caption, is yielded with ``skip`` set to the
  reason (the caller lists it; it never silently disappears);
- a shard that cannot be read to its end — a corrupt member header (which ``tarfile`` on its own takes for the
  end of the archive, cutting the shard short), a truncated download, a stalled server — is read again from
  the last good sample (an HTTP ``Range`` request at that sample's byte offset) with backoff, and after the
  retries a ``ShardError`` names the shard. A shard is never cut short.

Reading is done by the standard library's ``tarfile`` in stream mode; the only thing added is telling a real end
of archive (a zero block) apart from a header ``tarfile`` could not parse.
"""
from __future__ import annotations

import glob
import io
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .transfer import Limits, TransferError, is_transient, open_stream

# The paper's collections on the HF hub (pixparse's webdataset conversions of CC3M / CC12M).
HUB_DATASETS = {
    "cc12m": {"repo": "pixparse/cc12m-wds", "pattern": "cc12m-train-{shard:04d}.tar", "n_shards": 2176,
              "licence": "CC12M: image URLs and captions from Google's Conceptual 12M; images belong to their owners"},
    "cc3m": {"repo": "pixparse/cc3m-wds", "pattern": "cc3m-train-{shard:04d}.tar", "n_shards": 576,
             "licence": "CC3M: Google's Conceptual Captions terms; images belong to their owners"},
}
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")
# Members larger than these are not read into memory: the sample is skipped and listed.
MAX_IMAGE_BYTES = 64 * 2**20
MAX_TEXT_BYTES = 2**20


class ShardError(RuntimeError):
    """A shard could not be read to its end after the retries; the message names it and what happened."""


@dataclass(frozen=True)
class Position:
    """Where a stream continues: shard ``shard``, after ``sample`` samples, at byte ``offset`` of the shard."""

    shard: int = 0
    sample: int = 0
    offset: int = 0

    def as_dict(self) -> dict:
        return {"shard": self.shard, "sample": self.sample, "offset": self.offset}


@dataclass(frozen=True)
class Sample:
    """One sample of a shard. ``skip`` is None for a usable pair, else why it cannot be used."""

    key: str
    image: bytes | None
    caption: str | None
    shard: int
    index: int
    after: Position  # the position right after this sample
    skip: str | None = None


@dataclass(frozen=True)
class WebDataset:
    """An ordered list of webdataset shards. ``identity`` describes exactly which bytes these are (for bundles)."""

    name: str
    urls: tuple
    identity: dict = field(default_factory=dict)
    licence: str = "see the dataset's terms"

    def __len__(self) -> int:
        return len(self.urls)

    def samples(self, start: Position = Position(), limits: Limits | None = None) -> Iterator[Sample]:
        """Every sample from ``start`` on, shard after shard, in order (retries inside; see the module docstring)."""
        limits = limits or Limits()
        position = start
        while position.shard < len(self.urls):
            for sample in _shard_samples(self.urls[position.shard], position, limits):
                yield sample
            position = Position(position.shard + 1)


# --------------------------------------------------------------------------------------------- sources

def hub_webdataset(name: str, revision: str | None = None, limits: Limits | None = None) -> WebDataset:
    """``cc12m`` / ``cc3m`` on the HF hub (or the mirror ``HF_ENDPOINT`` names), pinned to one commit.

    ``revision`` None asks the hub which commit ``main`` is now (one HEAD request); a bundle passes the commit it
    recorded, so resuming never mixes two versions of the dataset.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    if name not in HUB_DATASETS:
        raise ValueError(f"{name!r} is not a hub webdataset: use one of {sorted(HUB_DATASETS)}.")
    spec = HUB_DATASETS[name]
    endpoint = os.environ.get("HF_ENDPOINT") or None
    limits = limits or Limits()

    def url(shard: int, rev: str) -> str:
        return hf_hub_url(spec["repo"], spec["pattern"].format(shard=shard), repo_type="dataset", revision=rev,
                          endpoint=endpoint)

    if revision is None or not _is_commit(revision):
        first = url(0, revision or "main")
        try:
            commit = get_hf_file_metadata(first, timeout=limits.connect_timeout).commit_hash
        except Exception as err:  # httpx / hub errors of many kinds; all mean "not reachable from here"
            raise ShardError(
                f"could not reach {first} to pin the revision of {spec['repo']} ({type(err).__name__}: {err}). "
                "Check the connection, or set HF_ENDPOINT to a hub mirror.") from None
        if not commit or not _is_commit(commit):
            raise ShardError(f"{first} answered without an X-Repo-Commit header: is HF_ENDPOINT a hub mirror?")
        revision = commit
    urls = tuple(url(i, revision) for i in range(spec["n_shards"]))
    identity = {"kind": "hf-hub-webdataset", "repo": spec["repo"], "revision": revision,
                "pattern": spec["pattern"], "n_shards": spec["n_shards"]}
    return WebDataset(name, urls, identity, spec["licence"])


def local_webdataset(shards, name: str = "webdataset", n_shards: int | None = None) -> WebDataset:
    """Shards you have: a list of paths or URLs, a glob (``/data/cc/*.tar``, sorted) or a template with
    ``{shard}`` (``https://host/part-{shard:05d}.tar``) and ``n_shards``."""
    if isinstance(shards, (str, os.PathLike)):
        text = os.fspath(shards)
        if "{shard" in text:
            if not isinstance(n_shards, int) or n_shards <= 0:
                raise ValueError(f"{text!r} is a template: pass n_shards=<number of shards>.")
            shards = [text.format(shard=i) for i in range(n_shards)]
        elif "://" in text:
            shards = [text]
        else:
            shards = sorted(glob.glob(os.path.expanduser(text))) if any(c in text for c in "*?[") else [text]
    urls = []
    for item in shards:
        text = os.fspath(item)
        if "://" not in text:
            path = Path(text).expanduser().resolve()
            if not path.is_file():
                raise ValueError(f"shard {text} does not exist: pass existing .tar files, a glob or URLs.")
            text = path.as_uri()
        urls.append(text)
    if not urls:
        raise ValueError(f"no shards found for {shards!r}: pass .tar paths, a glob or URLs.")
    identity = {"kind": "webdataset", "urls": list(urls)}
    return WebDataset(name, tuple(urls), identity)


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


# --------------------------------------------------------------------------------------------- reading one shard

class _CorruptShard(Exception):
    """The tar stream ended somewhere other than at an end-of-archive block."""


class _CheckedTarInfo(tarfile.TarInfo):
    """Remembers why ``tarfile`` stopped: a zero block is the end of the archive, anything else is damage."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as err:  # invalid, truncated or empty header: not a proper end
            tar.asif_damage = f"{type(err).__name__}: {err}"
            raise


def _split(name: str) -> tuple[str, str]:
    """webdataset's convention: ``dir/000123.seg.jpg`` → key ``dir/000123``, field ``seg.jpg``."""
    folder, _, base = name.rpartition("/")
    stem, _, suffix = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), suffix.lower()


def _read_shard(url: str, start: Position, limits: Limits, what: str) -> Iterator[Sample]:
    """The samples of one shard from ``start`` (a sample boundary). Raises on any damage (see ``_shard_samples``)."""
    stream = open_stream(url, offset=start.offset, limits=limits, what=what)
    try:
        skip = start.offset - stream.offset  # the server ignored Range: drop the bytes before our offset
        while skip > 0:
            chunk = stream.read(min(skip, 1 << 20))
            if not chunk:
                raise _CorruptShard(f"the shard ends before byte {start.offset}")
            skip -= len(chunk)
        archive = tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedTarInfo)
        archive.asif_damage = None
        key, fields, index = None, {}, start.sample
        for member in archive:
            member_key, suffix = _split(member.name)
            if member_key != key:
                if key is not None:
                    yield _sample(key, fields, start.shard, index, Position(start.shard, index + 1,
                                                                              start.offset + member.offset))
                    index += 1
                key, fields = member_key, {}
            if not member.isfile():
                continue
            limit = MAX_IMAGE_BYTES if suffix in IMAGE_FIELDS else MAX_TEXT_BYTES if suffix == "txt" else 0
            if not limit:
                continue
            if member.size > limit:
                fields.setdefault("_too_big", f"member {member.name} has {member.size} bytes (cap {limit})")
                continue
            fields[suffix] = archive.extractfile(member).read()
        if archive.asif_damage:
            raise _CorruptShard(f"a member header after byte {start.offset + archive.offset} is damaged "
                                f"({archive.asif_damage})")
        # After the end-of-archive block only zero padding may follow (reading it also lets the transfer notice
        # a download that stopped short of its announced length).
        while chunk := archive.fileobj.read(1 << 16):
            if chunk.strip(b"\0"):
                raise _CorruptShard(f"data follows the end-of-archive block at byte {start.offset + archive.offset}")
        if key is not None:
            yield _sample(key, fields, start.shard, index, Position(start.shard + 1))
    finally:
        stream.close()


def _sample(key: str, fields: dict, shard: int, index: int, after: Position) -> Sample:
    image = next((fields[f] for f in IMAGE_FIELDS if f in fields), None)
    raw = fields.get("txt")
    caption, skip = None, fields.get("_too_big")
    if raw is not None:
        try:
            caption = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            skip = skip or "the caption is not UTF-8"
    if skip is None:
        if image is None:
            skip = "no image member (.jpg/.jpeg/.png/.webp)"
        elif raw is None:
            skip = "no caption member (.txt)"
        elif not caption:
            skip = "empty caption"
    return Sample(key, image, caption, shard, index, after, skip)


def _shard_samples(url: str, start: Position, limits: Limits) -> Iterator[Sample]:
    """``_read_shard`` with retries: after a failure the shard is read again from the last sample handed out."""
    position, failures = start, []
    what = f"shard {start.shard} ({url})"
    while True:
        try:
            for sample in _read_shard(url, position, limits, what):
                yield sample
                position = sample.after
                failures = []  # progress was made: the retry budget starts again
            return
        except (TransferError, tarfile.TarError, _CorruptShard, EOFError) as err:
            failures.append(f"{type(err).__name__}: {err}")
            permanent = isinstance(err, TransferError) and not is_transient(err)
            if permanent or len(failures) > limits.retries:
                raise ShardError(
                    f"{what} could not be read to its end (at sample {position.sample}, byte {position.offset}); "
                    f"{len(failures)} attempt(s): {'; '.join(failures)}. Nothing after its last complete sample "
                    "was used: fix the connection (or the shard) and run the same command again to resume."
                ) from None
            time.sleep(limits.backoff * 2 ** (len(failures) - 1))


def peek(source: WebDataset, n: int = 12, limits: Limits | None = None) -> list[tuple[object, str]]:
    """The first ``n`` usable pairs as ``(PIL image, caption)``, decoded in memory (for a look at a collection)."""
    from .images import to_rgb
    from PIL import Image

    pairs = []
    for sample in source.samples(limits=limits):
        if sample.skip is None:
            try:
                with Image.open(io.BytesIO(sample.image)) as image:
                    pairs.append((to_rgb(image), sample.caption))
            except Exception:  # an undecodable image is simply not shown
                continue
        if len(pairs) >= n:
            break
    return pairs
