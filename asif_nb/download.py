"""The download manifest and the one verified downloader every fetched artifact goes through.

``asif_nb/data_manifest.json`` lists each artifact the suite can fetch (the demo's Debian and npm packages,
the authors' precomputed embeddings, the paper's datasets): its files with sha256 and size, and the sources
to try in order. The manifest and its JSON schema live inside the package so that a ``pip install`` (Colab)
carries them too.

``fetch(artifact_id)`` downloads every file of an entry into ``cache_dir()/downloads/<id>/`` and returns that
folder. A file is written to ``<name>.part`` and renamed only once its size and sha256 match the manifest, so
the folder never holds a wrong file under a final name; a mismatch deletes the file and says so. A later
call is a cache hit that re-hashes nothing unless the file changed since it was last verified.

Nothing downloaded is ever unpickled: ``load_tensors`` and ``load_labels`` are the only readers offered.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .fileio import atomic_write, sha256_file
from .settings import cache_dir

MANIFEST_PATH = Path(__file__).with_name("data_manifest.json")
SCHEMA_PATH = Path(__file__).with_name("data_manifest.schema.json")
SOURCE_TYPES = ("apt", "npm", "https", "file", "gdown")

_TIMEOUT_S = 60
_CHUNK = 1 << 20
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
    """Every source of an artifact failed; the message lists what happened with each one."""


class _SourceFailed(Exception):
    """One source could not deliver a correct file; the next source is tried."""


class _DrivePage(_SourceFailed):
    """Google Drive sent its quota / virus-scan HTML page instead of the file."""


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
) -> Path:
    """Download and verify every file of a manifest entry; return the folder that holds them.

    The folder is ``dest`` or ``cache_dir()/downloads/<artifact_id>/``; the files keep the names the manifest
    gives them (``fetch_file`` returns one file's path). Sources are tried in manifest order until one
    delivers files whose byte size and sha256 match; a file that does not match is deleted and the next
    source tried. Entries marked ``"verify": "on-first-download"`` have no published hash: the first
    download's hash is recorded in the folder and enforced on every later download and cache hit.

    ``force=True`` downloads again even when verified files are present. ``manifest`` is a loaded manifest,
    a path to one, or ``None`` for the packaged one. Raises ``DownloadError`` listing each source's failure.
    """
    entry = _entry(artifact_id, manifest)
    folder = Path(dest) if dest is not None else cache_dir() / "downloads" / artifact_id
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        return _fetch_locked(artifact_id, entry, folder, force, progress)


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """Hold an exclusive lock on the folder, so two processes never write the same .part file at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent fetches of one artifact are then the user's care
        yield
        return
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_locked(artifact_id: str, entry: dict, folder: Path, force: bool, progress: bool) -> Path:
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
            _fetch_from(source, entry, missing, folder, marker, progress)
        except _SourceFailed as err:
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
    """Verify a downloaded file and rename it to its final name, or delete it and raise ``_SourceFailed``."""
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
        raise _SourceFailed(
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
    """Raise (after deleting ``path``) if the file is an HTML page, ``_DrivePage`` if it is Google Drive's."""
    if name.lower().endswith((".html", ".htm")):
        return
    with open(path, "rb") as handle:
        head = handle.read(65536).decode("utf-8", errors="replace").lower()
    if not head.lstrip().startswith(("<!doctype html", "<html")):
        return
    path.unlink()
    if any(marker in head for marker in _DRIVE_PAGE_MARKERS):
        raise _DrivePage("Google Drive answered with its quota-exceeded / virus-scan page instead of the file")
    raise _SourceFailed("the server answered with an HTML page instead of the file")


# --------------------------------------------------------------------------------------------- sources

def _fetch_from(source: dict, entry: dict, specs: list[dict], folder: Path, marker: dict, progress: bool) -> None:
    kind = source["type"]
    if kind in ("apt", "npm", "gdown") and len(entry["files"]) != 1:
        raise _SourceFailed(f"a {kind} source delivers one file, but the entry lists {len(entry['files'])}")
    for spec in specs:
        part = folder / (spec["name"] + ".part")
        if kind == "apt":
            _run_package_client(_apt_download, source, part, progress)
        elif kind == "npm":
            _run_package_client(_npm_pack, source, part, progress)
        elif kind == "gdown":
            _gdown(source["id"], part, progress)
        else:
            url = source["url"].replace("{name}", spec["name"])
            resumed_from = _download_url(url, part, spec, progress)
            try:
                _accept(part, spec, folder, marker)
            except _SourceFailed:
                if not resumed_from:
                    raise
                # The bytes kept from an earlier attempt may have been the bad ones: one fresh try from byte 0.
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                _download_url(url, part, spec, progress)
                _accept(part, spec, folder, marker)
            continue
        _accept(part, spec, folder, marker)


def _download_url(url: str, part: Path, spec: dict, progress: bool) -> int:
    """Stream ``url`` into ``part``, resuming from its current size when the server allows (HTTP Range,
    or a seek for ``file://``). Returns the byte offset the download resumed from (0: from the start)."""
    offset = part.stat().st_size if part.exists() else 0
    expected_bytes = spec.get("bytes")
    if expected_bytes is not None and offset >= expected_bytes:
        offset = 0  # a .part this long cannot be the start of the file; begin again
    request = urllib.request.Request(url, headers={"User-Agent": "asif_nb"})
    if offset and url.startswith(("https:", "http:")):
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            status = getattr(response, "status", None)
            content_type = response.headers.get("Content-Type", "")
            if url.startswith("file:"):
                if offset:
                    response.seek(offset)
            elif offset and status != 206:
                offset = 0  # the server ignored Range: it is sending the whole file
            if "text/html" in content_type and not spec["name"].endswith((".html", ".htm")):
                page = response.read(65536).decode("utf-8", errors="replace").lower()
                if any(marker in page for marker in _DRIVE_PAGE_MARKERS):
                    raise _DrivePage("Google Drive answered with its quota-exceeded / virus-scan page instead of the file")
                raise _SourceFailed(f"the server sent an HTML page (Content-Type {content_type}) instead of the file")
            with open(part, "ab" if offset else "wb") as handle:
                _copy(response, handle, offset, expected_bytes, spec["name"], progress)
                handle.flush()
                os.fsync(handle.fileno())
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # The .part already reaches (or passes) the end of the file on the server: start again from byte 0.
            part.unlink()
            return _download_url(url, part, spec, progress)
        raise _SourceFailed(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise _SourceFailed(f"{type(err).__name__}: {err}") from None
    return offset


def _copy(response, handle, done: int, total: int | None, name: str, progress: bool) -> None:
    shown = time.monotonic()
    for block in iter(lambda: response.read(_CHUNK), b""):
        handle.write(block)
        done += len(block)
        if progress and time.monotonic() - shown > 1:
            shown = time.monotonic()
            of = f" of {total / 1e6:.1f}" if total else ""
            print(f"\r{name}: {done / 1e6:.1f}{of} MB", end="", file=sys.stderr, flush=True)
    if progress:
        print(f"\r{name}: {done / 1e6:.1f} MB done", file=sys.stderr, flush=True)


def _run_package_client(client, source: dict, part: Path, progress: bool) -> None:
    """Let apt-get / npm download one package into a scratch folder beside ``part``, then move it there."""
    scratch = Path(tempfile.mkdtemp(prefix=".client-", dir=part.parent))
    try:
        produced = client(source["package"], source["version"], scratch, progress)
        os.replace(produced, part)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(command: list[str], cwd: Path, progress: bool) -> subprocess.CompletedProcess:
    if progress:
        print("$ " + " ".join(command), file=sys.stderr, flush=True)
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise _SourceFailed(f"{command[0]} did not finish within 30 minutes") from None


def _single_output(scratch: Path, pattern: str, command: str) -> Path:
    produced = sorted(scratch.glob(pattern))
    if len(produced) != 1:
        raise _SourceFailed(f"{command} produced {len(produced)} files matching {pattern}, expected one")
    return produced[0]


_apt_lists_updated = False


def _apt_download(package: str, version: str, scratch: Path, progress: bool) -> Path:
    """``apt-get download package=version``; runs ``apt-get update`` once if the package lists lack it."""
    global _apt_lists_updated
    if shutil.which("apt-get") is None:
        raise _SourceFailed("apt-get is not available here (not Debian/Ubuntu): the https mirror is the next source")
    command = ["apt-get", "download", f"{package}={version}"]
    result = _run(command, scratch, progress)
    lists_lack_it = any(
        text in result.stderr for text in ("Unable to locate package", "was not found", "Can't find a source")
    )
    if result.returncode != 0 and lists_lack_it and not _apt_lists_updated:
        _apt_lists_updated = True
        update = _run(["apt-get", "update"], scratch, progress)
        if update.returncode != 0:
            raise _SourceFailed(
                f"apt-get could not find {package}={version} and `apt-get update` failed "
                f"(run it as root, then retry): {_last_line(update.stderr)}"
            )
        result = _run(command, scratch, progress)
    if result.returncode != 0:
        raise _SourceFailed(f"`{' '.join(command)}` failed: {_last_line(result.stderr)}")
    return _single_output(scratch, "*.deb", "apt-get download")


def _npm_pack(package: str, version: str, scratch: Path, progress: bool) -> Path:
    """``npm pack package@version`` into ``scratch`` (``--pack-destination`` exists from npm 7.18 on)."""
    if shutil.which("npm") is None:
        raise _SourceFailed("npm is not available here: the https mirror (registry tarball) is the next source")
    command = ["npm", "pack", f"{package}@{version}", "--loglevel=error"]
    if _npm_version() >= (7, 18):
        command += ["--pack-destination", str(scratch)]
    result = _run(command, scratch, progress)
    if result.returncode != 0:
        raise _SourceFailed(f"`{' '.join(command)}` failed: {_last_line(result.stderr)}")
    return _single_output(scratch, "*.tgz", "npm pack")


def _npm_version() -> tuple[int, ...]:
    try:
        text = subprocess.run(["npm", "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    numbers = re.findall(r"\d+", text.strip().splitlines()[-1] if text.strip() else "")
    return tuple(int(n) for n in numbers[:3]) or (0,)


def _gdown(file_id: str, part: Path, progress: bool) -> None:
    try:
        import gdown
    except ImportError:
        raise _SourceFailed("gdown is not installed: pip install gdown") from None
    with contextlib.suppress(FileNotFoundError):
        part.unlink()  # gdown keeps its own partial files; ours would only confuse it
    try:
        gdown.download(id=file_id, output=str(part), quiet=not progress)
    except Exception as err:  # gdown raises several types (FileURLRetrievalError, requests errors...)
        text = str(err).lower()
        if any(marker in text for marker in ("too many users", "quota", "cannot retrieve the public link")):
            raise _DrivePage(f"Google Drive refused the download ({_last_line(str(err))})") from None
        raise _SourceFailed(f"gdown failed: {type(err).__name__}: {_last_line(str(err))}") from None
    if not part.exists():
        raise _SourceFailed("gdown finished without writing the file")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
