"""The download manifest and the one verified downloader every fetched artifact goes through.

``asif_nb/data_manifest.json`` lists each artifact the suite can fetch (the demo's Debian and npm packages,
the authors' precomputed embeddings, the paper's datasets): its files with sha256 and size, and the sources
to try in order. The manifest and its JSON schema live inside the package so that a ``pip install`` (Colab)
carries them too.

``fetch(artifact_id)`` downloads every file of an entry into ``cache_dir()/downloads/<id>/`` and returns that
folder. A file is written to ``<name>.part`` and renamed only once its size and sha256 match the manifest, so
the folder never holds a wrong file under a final name; a mismatch deletes the file and says so. A later
call is a cache hit that re-hashes nothing unless the file changed since it was last verified.

No download can hang or fill the disk: http(s) and file:// sources stream through ``asif_nb.transfer`` (connect
and read deadlines, a minimum rate, retries with backoff for transient failures) and gdown runs as a watched
subprocess under the same limits. Every file has a byte cap: its manifest size (``bytes``), else its
``max_bytes``, else ``DEFAULT_MAX_BYTES``. One process at a time fetches into a folder (``filelock``); another
waits up to ``lock_timeout`` and then finds the files in the cache.

Nothing downloaded is ever unpickled: ``asif_nb.safeload`` (``load_tensors``, ``load_labels``) reads what was fetched.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

import filelock

from .clients import DrivePage, SourceFailed, apt_download, gdown_file, npm_pack, run_package_client
from .fileio import atomic_write, sha256_file
from .settings import cache_dir
from .transfer import Limits, TransferError, open_stream, with_retries

MANIFEST_PATH = Path(__file__).with_name("data_manifest.json")
SCHEMA_PATH = Path(__file__).with_name("data_manifest.schema.json")
SOURCE_TYPES = ("apt", "npm", "https", "file", "gdown", "hf")

_CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 16 * 2**30  # the cap of a file whose manifest gives neither bytes nor max_bytes
LOCK_TIMEOUT_S = 2 * 3600.0  # how long fetch waits for another process fetching the same artifact
_MARKER = ".verified.json"
# Google Drive answers an over-quota or too-large-to-scan file with an HTML page instead of the bytes.
_DRIVE_PAGE_MARKERS = (
    "quota exceeded",
    "too many users have viewed or downloaded this file recently",
    "can't scan this file for viruses",
    "cannot scan this file for viruses",
    "virus scan warning",
    "google drive - ",
)


class DownloadError(RuntimeError):
    """An artifact could not be fetched: every source failed (the message lists what happened with each one),
    or another process held its folder longer than ``lock_timeout``."""


# --------------------------------------------------------------------------------------------- the manifest

def load_manifest(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Read and validate a manifest: ``{artifact id: entry}`` in file order.

    ``path`` defaults to the manifest shipped in the package. The file is checked against
    ``data_manifest.schema.json`` (jsonschema) and for duplicate ids; a bad manifest raises ``ValueError``
    naming the entry and the field at fault.
    """
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"manifest path={str(path)!r} does not exist: pass the path of a data_manifest.json.") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"manifest {path} is not valid JSON ({err}): fix the file.") from None
    _validate(document, path)
    manifest: dict[str, dict] = {}
    for entry in document["artifacts"]:
        if entry["id"] in manifest:
            raise ValueError(f"manifest {path}: artifact id {entry['id']!r} appears twice: ids must be unique.")
        manifest[entry["id"]] = entry
    return manifest


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _validate(document, path: Path) -> None:
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(document), key=lambda e: list(e.path))
    if not errors:
        return
    error = errors[0]
    where = "the top level"
    if len(error.path) >= 2 and error.path[0] == "artifacts" and isinstance(error.path[1], int):
        artifacts = document.get("artifacts") if isinstance(document, dict) else None
        entry = artifacts[error.path[1]] if isinstance(artifacts, list) else None
        name = entry.get("id") if isinstance(entry, dict) else None
        where = f"artifact #{error.path[1]} (id {name!r})"
    field = "/".join(str(part) for part in error.path) or "(root)"
    raise ValueError(
        f"manifest {path} is invalid at {where}, field {field}: {error.message}. "
        f"Fix the entry to match {SCHEMA_PATH.name} ({len(errors)} problem(s) in all)."
    )


def _entry(artifact_id: str, manifest) -> dict:
    if manifest is None or isinstance(manifest, (str, os.PathLike)):
        manifest = load_manifest(manifest)
    if artifact_id not in manifest:
        known = ", ".join(sorted(manifest))
        raise ValueError(f"artifact_id={artifact_id!r} is not in the manifest: use one of {known}.")
    return manifest[artifact_id]


# --------------------------------------------------------------------------------------------- fetch

def fetch(
    artifact_id: str,
    *,
    dest: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    manifest: dict | str | os.PathLike | None = None,
    limits: Limits = Limits(),
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> Path:
    """Download and verify every file of a manifest entry; return the folder that holds them.

    The folder is ``dest`` or ``cache_dir()/downloads/<artifact_id>/``; the files keep the names the manifest
    gives them (``fetch_file`` returns one file's path). Sources are tried in manifest order until one
    delivers files whose byte size and sha256 match; a file that does not match is deleted and the next
    source tried. Entries marked ``"verify": "on-first-download"`` have no published hash: the first
    download's hash is recorded in the folder and enforced on every later download and cache hit.

    ``force=True`` downloads again even when verified files are present. ``manifest`` is a loaded manifest,
    a path to one, or ``None`` for the packaged one. ``limits`` (``asif_nb.transfer.Limits``) bounds every
    transfer: deadlines, minimum rate, retries of transient failures. ``lock_timeout`` is how many seconds to wait
    while another process fetches the same artifact into the same folder. Raises ``DownloadError`` listing each
    source's failure (a stall, a cap broken, a timeout, an HTTP status, a mismatch).
    """
    entry = _entry(artifact_id, manifest)
    if entry["kind"] == "bundle":
        raise ValueError(f"{artifact_id!r} is an anchor bundle: open it with asif_nb.load_bundle({artifact_id!r}), "
                         "which fetches and verifies its shards.")
    if not isinstance(limits, Limits):
        raise ValueError(f"limits={limits!r}: pass an asif_nb.transfer.Limits(...).")
    if not lock_timeout >= 0:
        raise ValueError(f"lock_timeout={lock_timeout!r}: pass a number of seconds >= 0.")
    folder = Path(dest) if dest is not None else cache_dir() / "downloads" / artifact_id
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder, lock_timeout):
        return _fetch_locked(artifact_id, entry, folder, force, progress, limits)


@contextlib.contextmanager
def _folder_lock(folder: Path, timeout: float):
    """Hold an exclusive lock on the folder, so two processes never write the same .part file at once."""
    lock = filelock.FileLock(folder / ".lock", timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DownloadError(
            f"another process (or thread) is fetching the same artifact into {folder}: it has held "
            f"{folder / '.lock'} for more than lock_timeout={timeout:g} s. Let it finish, then call fetch again "
            "(its files are then a cache hit), or pass a larger lock_timeout."
        ) from None
    try:
        yield
    finally:
        lock.release()


def _fetch_locked(artifact_id: str, entry: dict, folder: Path, force: bool, progress: bool, limits: Limits) -> Path:
    marker = _read_marker(folder)
    recorded = json.dumps(marker, sort_keys=True)
    missing = [spec for spec in entry["files"] if force or not _cache_hit(folder / spec["name"], spec, marker)]
    if not missing:
        if json.dumps(marker, sort_keys=True) != recorded:
            _write_marker(folder, marker)  # a re-hashed file: remember it, so the next hit is cheap again
        return folder

    failures = []
    for source in entry["sources"]:
        try:
            _fetch_from(source, entry, missing, folder, marker, progress, limits)
        except SourceFailed as err:
            failures.append(f"  - {_describe(source)}: {err}")
            missing = [spec for spec in missing if not _cache_hit(folder / spec["name"], spec, marker)]
            continue
        finally:
            _write_marker(folder, marker)  # files verified so far stay known, even if a later one fails
        return folder
    raise DownloadError(_all_failed_message(artifact_id, entry, folder, failures))


def fetch_file(artifact_id: str, name: str | None = None, **kwargs) -> Path:
    """``fetch`` an entry and return the path of one of its files (``name`` may be left out for single-file entries)."""
    entry = _entry(artifact_id, kwargs.get("manifest"))
    names = [spec["name"] for spec in entry["files"]]
    if name is None:
        if len(names) != 1:
            raise ValueError(f"artifact {artifact_id!r} holds {len(names)} files: pass name= one of {names}.")
        name = names[0]
    elif name not in names:
        raise ValueError(f"name={name!r} is not a file of artifact {artifact_id!r}: use one of {names}.")
    return fetch(artifact_id, **kwargs) / name


def _all_failed_message(artifact_id, entry, folder, failures) -> str:
    names = ", ".join(spec["name"] for spec in entry["files"])
    lines = [f"could not fetch {artifact_id!r}: every source failed:", *failures]
    if any("Google Drive" in line for line in failures):
        lines.append(
            "Google Drive limits how often a shared file may be downloaded: wait 24 hours and try again, "
            f"or download the file in a browser and place it in {folder}."
        )
    lines.append(f"To provide it by hand, put {names} into {folder}; fetch() verifies and uses it.")
    return "\n".join(lines)


def _describe(source: dict) -> str:
    if source["type"] in ("apt", "npm"):
        return f"{source['type']} {source['package']}={source['version']}"
    if source["type"] == "gdown":
        return f"gdown id {source['id']}"
    return f"{source['type']} {source['url']}"


# --------------------------------------------------------------------------------------------- verification

def _read_marker(folder: Path) -> dict:
    """Per-file records ``{name: {size, mtime_ns, sha256}}`` of files already verified in this folder."""
    try:
        return json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_marker(folder: Path, marker: dict) -> None:
    with atomic_write(folder / _MARKER, "w") as handle:
        json.dump(marker, handle, indent=1, sort_keys=True)


def _expected_sha(spec: dict, marker: dict) -> str | None:
    # A trust-on-first-use entry has no published hash; the one recorded at its first download stands in.
    return spec.get("sha256") or marker.get(spec["name"], {}).get("sha256")


def _cache_hit(path: Path, spec: dict, marker: dict) -> bool:
    """True if ``path`` holds the right bytes: cheap when size and mtime match the last verification."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if spec.get("bytes") is not None and stat.st_size != spec["bytes"]:
        return False
    record = marker.get(path.name, {})
    expected = _expected_sha(spec, marker)
    if record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns and record.get("sha256") == expected:
        return expected is not None
    if expected is None or sha256_file(path) != expected:
        return False
    marker[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    return True


def _accept(candidate: Path, spec: dict, folder: Path, marker: dict) -> None:
    """Verify a downloaded file and rename it to its final name, or delete it and raise ``SourceFailed``."""
    final = folder / spec["name"]
    size = candidate.stat().st_size
    actual = sha256_file(candidate)
    expected = _expected_sha(spec, marker)
    matches = (spec.get("bytes") is None or size == spec["bytes"]) and (expected is None or actual == expected)
    if spec.get("md5") and _md5_file(candidate) != spec["md5"]:
        matches = False
    if expected is None or not matches:
        # With no hash to compare (trust on first use) an HTML error page must still never be accepted.
        _sniff_drive_page(candidate, spec["name"])
    if not matches:
        md5_note = f", md5 {spec['md5']}" if spec.get("md5") else ""
        candidate.unlink()
        raise SourceFailed(
            f"{spec['name']} did not match the manifest and was deleted "
            f"(expected {spec.get('bytes')} bytes, sha256 {expected}{md5_note}; got {size} bytes, sha256 {actual}). "
            "The source may be truncated or changed: the next source is tried; if all fail, "
            "check the network or report the changed file."
        )
    os.replace(candidate, final)
    stat = final.stat()
    marker[spec["name"]] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": actual}


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _sniff_drive_page(path: Path, name: str) -> None:
    """Raise (after deleting ``path``) if the file is an HTML page, ``DrivePage`` if it is Google Drive's."""
    if name.lower().endswith((".html", ".htm")):
        return
    with open(path, "rb") as handle:
        head = handle.read(65536).decode("utf-8", errors="replace").lower()
    if not head.lstrip().startswith(("<!doctype html", "<html")):
        return
    path.unlink()
    if any(marker in head for marker in _DRIVE_PAGE_MARKERS):
        raise DrivePage("Google Drive answered with its quota-exceeded / virus-scan page instead of the file")
    raise SourceFailed("the server answered with an HTML page instead of the file")


# --------------------------------------------------------------------------------------------- sources

def _cap(spec: dict) -> int:
    """The most bytes a file may have: its exact size, else its ``max_bytes``, else ``DEFAULT_MAX_BYTES``."""
    for field in ("bytes", "max_bytes"):
        if spec.get(field) is not None:
            return spec[field]
    return DEFAULT_MAX_BYTES


def _fetch_from(
    source: dict, entry: dict, specs: list[dict], folder: Path, marker: dict, progress: bool, limits: Limits
) -> None:
    kind = source["type"]
    if kind in ("apt", "npm", "gdown") and len(entry["files"]) != 1:
        raise SourceFailed(f"a {kind} source delivers one file, but the entry lists {len(entry['files'])}")
    for spec in specs:
        part = folder / (spec["name"] + ".part")
        try:
            if kind == "apt":
                run_package_client(apt_download, source, part, progress)
            elif kind == "npm":
                run_package_client(npm_pack, source, part, progress)
            elif kind == "gdown":
                gdown = functools.partial(gdown_file, source["id"], part, name=spec["name"], max_bytes=_cap(spec),
                                          progress=progress, limits=limits)
                with_retries(gdown, limits, spec["name"], log=_retry_log(progress))
            else:
                url = source["url"].replace("{name}", spec["name"])
                resumed_from = _download_url(url, part, spec, progress, limits)
                try:
                    _accept(part, spec, folder, marker)
                except SourceFailed:
                    if not resumed_from:
                        raise
                    # The bytes kept from an earlier attempt may have been the bad ones: one fresh try from byte 0.
                    with contextlib.suppress(FileNotFoundError):
                        part.unlink()
                    _download_url(url, part, spec, progress, limits)
                    _accept(part, spec, folder, marker)
                continue
        except TransferError as err:
            raise SourceFailed(err.summary + (f"; {err.advice}" if err.advice else "")) from None
        _accept(part, spec, folder, marker)


def _retry_log(progress: bool):
    return (lambda line: print(line, file=sys.stderr, flush=True)) if progress else None


def _download_url(url: str, part: Path, spec: dict, progress: bool, limits: Limits) -> int:
    """Stream ``url`` into ``part`` under ``limits``, resuming from the .part's size where the mirror allows
    (HTTP Range, or a seek for ``file://``) and retrying transient failures. Returns the byte offset the last
    attempt resumed from (0: from the start)."""
    return with_retries(lambda: _stream_once(url, part, spec, progress, limits), limits, spec["name"],
                        log=_retry_log(progress))


def _stream_once(url: str, part: Path, spec: dict, progress: bool, limits: Limits) -> int:
    cap = _cap(spec)
    offset = part.stat().st_size if part.exists() else 0
    if offset >= cap:
        offset = 0  # a .part this long cannot be the start of the file; begin again
    try:
        stream = open_stream(url, offset=offset, expected_bytes=spec.get("bytes"), max_bytes=cap, limits=limits,
                             what=spec["name"])
    except TransferError as err:
        if err.status == 416 and offset:
            # The .part already reaches (or passes) the end of the file on the server: start again from byte 0.
            part.unlink()
            return _stream_once(url, part, spec, progress, limits)
        raise
    with stream:
        _refuse_html(stream, spec["name"])
        try:
            _write(stream, part, spec["name"], progress)
        except TransferError as err:
            if err.kind == "cap":
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()  # it holds a cap's worth of a wrong file: never resume from it
            if err.kind != "size":
                raise
            # The mirror's answer was complete but of another size: _accept compares it and says what it was.
    return stream.offset


def _refuse_html(stream, name: str) -> None:
    """Raise if the answer is an HTML page instead of the file, ``DrivePage`` if it is Google Drive's."""
    content_type = stream.headers.get("Content-Type", "") or ""
    if "text/html" not in content_type or name.lower().endswith((".html", ".htm")):
        return
    head = b""
    with contextlib.suppress(TransferError):  # the page is refused anyway: a short or slow one changes nothing
        while len(head) < 65536 and (block := stream.read1(65536 - len(head))):
            head += block
    page = head.decode("utf-8", errors="replace").lower()
    if any(marker in page for marker in _DRIVE_PAGE_MARKERS):
        raise DrivePage("Google Drive answered with its quota-exceeded / virus-scan page instead of the file")
    raise SourceFailed(f"the server sent an HTML page (Content-Type {content_type}) instead of the file")


def _write(stream, part: Path, name: str, progress: bool) -> None:
    from .progress import bar as tqdm

    bar = tqdm(total=stream.total, initial=stream.offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
               disable=not progress)
    with bar, open(part, "ab" if stream.offset else "wb") as handle:
        try:
            for block in iter(lambda: stream.read1(_CHUNK), b""):
                handle.write(block)
                bar.update(len(block))
        finally:  # the bytes that did arrive are kept for the next attempt to resume from
            handle.flush()
            os.fsync(handle.fileno())

