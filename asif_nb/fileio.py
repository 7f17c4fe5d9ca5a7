"""Atomic writes and hashing: nothing the suite writes is ever seen half-written."""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``, on error delete it.

    A reader therefore sees either the old file or the complete new one, never a partial write. Permissions are
    those a plain ``open(path, "w")`` gives: a new file gets ``0o666`` minus the process umask (``0o644`` under
    the usual ``022``), and a file that is replaced keeps its mode (a file you made private stays private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, mode) as handle:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(handle.fileno(), stat.S_IMODE(os.stat(path).st_mode))  # replacing: keep the old mode
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _create_beside(path: Path) -> tuple[int, str]:
    """Create ``.<name>.<random>.part`` beside ``path`` exclusively, with mode 0o666 so the kernel applies the
    umask (``tempfile.mkstemp`` would make it 0o600 whatever the umask)."""
    for _ in range(100):
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(6)}.part"))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix><random>`` created like ``os.mkdir`` (0o777 minus the umask), for a
    build that is renamed into place when complete (``tempfile.mkdtemp`` would leave the result 0o700)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        folder = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            folder.mkdir(mode=0o777)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary folder in {parent}")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large files need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
