"""Unpacking what was fetched: Debian ``.deb`` packages (read in pure Python, no dpkg), npm ``.tgz`` tarballs and
plain tar archives, into ``cache_dir()/sources/<id>/`` — nothing is installed system-wide.

Every archive goes through ``tarfile``'s ``"data"`` filter (no absolute paths, nothing outside the destination, no
devices); only regular files and folders are taken (links are left packed: a package's symlinked duplicates are
not separate pictures). An archive is unpacked into a temp folder that is renamed into place with its
``.unpacked.json`` marker, under a ``filelock`` beside the destination, so a second process waits for the first
and then reuses its folder, and a failed unpack leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import filelock

from ..fileio import atomic_write, make_temp_dir
from ..settings import cache_dir

LOCK_TIMEOUT_S = 2 * 3600.0  # how long a process waits for another one unpacking or building the same folder
MARKER = ".unpacked.json"

# What each package keeps unpacked (paths inside the package); the rest (sounds, docs) stays in the .deb.
UNPACK_FILTERS = {
    "tuxpaint-stamps-default": lambda n: n.endswith((".png", ".svg", ".txt")) or n.endswith("/copyright"),
    "openclipart-svg": lambda n: n.endswith(".svg") or n.endswith("/copyright"),
    "dataset-fashion-mnist": lambda n: n.endswith(".gz") or n.endswith("/copyright"),
    "emoji-datasource-google": lambda n: ("/img/google/64/" in n or n.endswith((".json", "LICENSE", "README.md"))),
}


# ============================================================================================ locks and folders

@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float = LOCK_TIMEOUT_S):
    """Hold the cross-process lock of ``folder`` (a ``filelock`` on ``.<name>.lock`` beside it) while it is built."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder.with_name(f".{folder.name}.lock"), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise TimeoutError(
            f"another process has been building {folder} for more than {timeout:g} s (it holds {lock.lock_file}): "
            "let it finish, then call again — its result is then reused.") from None
    try:
        yield
    finally:
        lock.release()


def replace_folder(tmp: Path, dest: Path) -> None:
    """Rename the finished folder ``tmp`` to ``dest``; an older ``dest`` is swapped out first, then deleted."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def _marker_file(folder: Path) -> str | None:
    with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
        return json.loads((folder / MARKER).read_text())["file"]
    return None


def unpacked_version(folder: str | os.PathLike) -> str:
    """The version recorded in an unpacked folder's ``.unpacked.json``."""
    return json.loads((Path(folder) / MARKER).read_text())["version"]


# ============================================================================================ .deb files

def _read_ar_members(path: Path) -> dict[str, bytes]:
    """The members of a Debian ``.deb`` (a Unix ``ar`` archive): name → bytes. Pure Python, no dpkg needed."""
    members = {}
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not a .deb (ar) archive: fetch the package again.")
        while header := handle.read(60):
            if len(header) < 60:
                break
            try:
                name = header[:16].decode("ascii").strip().rstrip("/")
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise ValueError(f"{path} is not a .deb (ar) archive: a member header is damaged; fetch the "
                                 "package again.") from None
            members[name] = handle.read(size)
            if size % 2:
                handle.read(1)  # ar pads members to an even offset
    return members


def _deb_tar(path: Path, name: str) -> tarfile.TarFile:
    members = _read_ar_members(path)
    for member, data in members.items():
        if member.startswith(name + ".tar"):
            return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    raise ValueError(f"{path} holds no {name}.tar.* member (found {sorted(members)}).")


def deb_version(path: str | os.PathLike) -> str:
    """The ``Version:`` field of a ``.deb``'s control file."""
    with _deb_tar(Path(path), "control") as control:
        for member in control.getmembers():
            if member.name in ("./control", "control") and member.isfile():
                text = control.extractfile(member).read().decode("utf-8", "replace")
                match = re.search(r"^Version:\s*(\S+)", text, re.M)
                if match:
                    return match.group(1)
    raise ValueError(f"{path}: no Version field in its control file.")


# ============================================================================================ extracting

def extract_tar(archive: tarfile.TarFile, dest: Path, keep=None, where: str = "the archive") -> None:
    """Extract the regular files and folders of ``archive`` whose name ``keep`` accepts into ``dest``, through
    ``tarfile``'s ``"data"`` filter. A member the filter refuses raises ``ValueError`` naming it."""
    def wanted(member: tarfile.TarInfo) -> bool:
        name = member.name[2:] if member.name.startswith("./") else member.name
        return bool(name) and (member.isfile() or member.isdir()) and (keep is None or keep(name))

    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError("safe tar extraction (filter='data') needs Python 3.11.4+: upgrade Python.")
    try:
        archive.extractall(dest, members=[m for m in archive if wanted(m)], filter="data")
    except tarfile.FilterError as err:
        raise ValueError(f"{where}: {err}; refusing to extract it. The file is damaged or not what the manifest "
                         "names: delete it and fetch it again.") from None


def unpack_archive(archive_file: str | os.PathLike, dest: str | os.PathLike, *, keep=None, inside: str | None = None,
                   lock_timeout: float = LOCK_TIMEOUT_S) -> Path:
    """Unpack a ``.deb`` (its ``data.tar.*``), an npm ``.tgz`` or a tar archive into ``dest`` once.

    ``keep(name)`` selects members by their path in the archive; ``inside`` names a folder of the archive that
    becomes ``dest`` (e.g. ``"cifar-100-python"``). ``dest/.unpacked.json`` records the archive's file name and
    version; a folder whose marker names the same file is reused. Returns ``dest``.
    """
    archive_file, dest = Path(archive_file), Path(dest)
    if _marker_file(dest) == archive_file.name:
        return dest
    if not archive_file.is_file():
        raise FileNotFoundError(f"{archive_file} does not exist: pass the path of a fetched .deb, .tgz or .tar file.")
    with folder_lock(dest, lock_timeout):
        if _marker_file(dest) == archive_file.name:  # another process unpacked it while this one waited
            return dest
        tmp = make_temp_dir(dest.parent, f".{dest.name}.")
        try:
            version = _extract_into(archive_file, tmp, keep)
            result = tmp / inside if inside else tmp
            if not result.is_dir():
                raise ValueError(f"{archive_file} holds no folder {inside!r}: it is not the archive expected here.")
            with atomic_write(result / MARKER, "w") as handle:
                json.dump({"file": archive_file.name, "version": version}, handle)
            replace_folder(result, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract_into(archive_file: Path, tmp: Path, keep) -> str:
    """Extract ``archive_file`` into ``tmp``; return its version (a .deb's control field, an npm package's
    ``package.json`` version, else "unknown")."""
    if archive_file.suffix == ".deb":
        version = deb_version(archive_file)
        with _deb_tar(archive_file, "data") as archive:
            extract_tar(archive, tmp, keep, str(archive_file))
        return version
    try:
        archive = tarfile.open(archive_file, mode="r:*")
    except tarfile.TarError as err:
        raise ValueError(f"archive_file={str(archive_file)!r} is not a .deb or a tar archive ({err}): fetch it "
                         "again.") from None
    with archive:
        extract_tar(archive, tmp, keep, str(archive_file))
    package_json = tmp / "package" / "package.json"
    if package_json.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return str(json.loads(package_json.read_text(encoding="utf-8"))["version"])
    return "unknown"


def unpack_package(package_file: str | os.PathLike, artifact_id: str, dest: Path | None = None) -> Path:
    """Unpack a fetched ``.deb`` or npm ``.tgz`` into ``cache_dir()/sources/<artifact_id>/`` (nothing system-wide).

    Only what the demo reads is unpacked (``UNPACK_FILTERS``). A folder whose marker names the same package
    file is reused as is; two processes unpacking at once share one unpack. Returns the folder.
    """
    package_file = Path(package_file)
    if package_file.suffix != ".deb" and not package_file.name.endswith((".tgz", ".tar.gz")):
        raise ValueError(f"package_file={str(package_file)!r}: expected a .deb or an npm .tgz.")
    dest = Path(dest) if dest is not None else cache_dir() / "sources" / artifact_id
    return unpack_archive(package_file, dest, keep=UNPACK_FILTERS.get(artifact_id))


def package_source(artifact_id: str, packages: dict | None = None) -> Path:
    """The unpacked folder of a package: from ``packages[artifact_id]`` (a local .deb/.tgz) or ``fetch``."""
    if packages and artifact_id in packages:
        package_file = Path(packages[artifact_id])
        if not package_file.is_file():
            raise FileNotFoundError(f"packages[{artifact_id!r}]={str(package_file)!r} does not exist: pass the path "
                                    "of the package file, or leave the id out to fetch it.")
    else:
        from ..download import fetch, load_manifest

        # Already unpacked from the file the manifest names: no need to ask fetch (which re-checks the download).
        unpacked = cache_dir() / "sources" / artifact_id
        with contextlib.suppress(OSError, ValueError, KeyError):
            names = {spec["name"] for spec in load_manifest()[artifact_id]["files"]}
            if _marker_file(unpacked) in names:
                return unpacked
        folder = fetch(artifact_id)
        files = sorted(p for p in folder.iterdir() if p.name.endswith((".deb", ".tgz", ".tar.gz")))
        if len(files) != 1:
            raise ValueError(f"fetch({artifact_id!r}) gave {folder} holding {len(files)} package files; expected one.")
        package_file = files[0]
    return unpack_package(package_file, artifact_id)
