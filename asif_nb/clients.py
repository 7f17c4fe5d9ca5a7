"""The external tools a manifest source may name — ``apt-get download``, ``npm pack``, ``gdown`` — each asked for
one file, which lands in ``part`` for ``asif_nb.download`` to verify.

apt-get and npm run with a 30-minute deadline. gdown gives no control over its transfer, so it runs as a
subprocess under ``asif_nb.transfer.run_watched``: killed (with its children) when its file passes the cap,
stops growing or grows slower than the minimum rate.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .transfer import Limits, run_watched

# gdown is run as: GDOWN_COMMAND + [<id>, "-O", <file>, "--quiet"]. Tests put a stand-in script here.
GDOWN_COMMAND = [sys.executable, "-m", "gdown"]


class SourceFailed(Exception):
    """One source could not deliver a correct file; the next source is tried."""


class DrivePage(SourceFailed):
    """Google Drive sent its quota / virus-scan HTML page instead of the file."""


def run_package_client(client, source: dict, part: Path, progress: bool) -> None:
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
        raise SourceFailed(f"{command[0]} did not finish within 30 minutes") from None


def _single_output(scratch: Path, pattern: str, command: str) -> Path:
    produced = sorted(scratch.glob(pattern))
    if len(produced) != 1:
        raise SourceFailed(f"{command} produced {len(produced)} files matching {pattern}, expected one")
    return produced[0]


_apt_lists_updated = False


def apt_download(package: str, version: str, scratch: Path, progress: bool) -> Path:
    """``apt-get download package=version``; runs ``apt-get update`` once if the package lists lack it."""
    global _apt_lists_updated
    if shutil.which("apt-get") is None:
        raise SourceFailed("apt-get is not available here (not Debian/Ubuntu): the https mirror is the next source")
    command = ["apt-get", "download", f"{package}={version}"]
    result = _run(command, scratch, progress)
    lists_lack_it = any(
        text in result.stderr for text in ("Unable to locate package", "was not found", "Can't find a source")
    )
    if result.returncode != 0 and lists_lack_it and not _apt_lists_updated:
        _apt_lists_updated = True
        update = _run(["apt-get", "update"], scratch, progress)
        if update.returncode != 0:
            raise SourceFailed(
                f"apt-get could not find {package}={version} and `apt-get update` failed "
                f"(run it as root, then retry): {last_line(update.stderr)}"
            )
        result = _run(command, scratch, progress)
    if result.returncode != 0:
        raise SourceFailed(f"`{' '.join(command)}` failed: {last_line(result.stderr)}")
    return _single_output(scratch, "*.deb", "apt-get download")


def npm_pack(package: str, version: str, scratch: Path, progress: bool) -> Path:
    """``npm pack package@version`` into ``scratch`` (``--pack-destination`` exists from npm 7.18 on)."""
    if shutil.which("npm") is None:
        raise SourceFailed("npm is not available here: the https mirror (registry tarball) is the next source")
    command = ["npm", "pack", f"{package}@{version}", "--loglevel=error"]
    if _npm_version() >= (7, 18):
        command += ["--pack-destination", str(scratch)]
    result = _run(command, scratch, progress)
    if result.returncode != 0:
        raise SourceFailed(f"`{' '.join(command)}` failed: {last_line(result.stderr)}")
    return _single_output(scratch, "*.tgz", "npm pack")


def _npm_version() -> tuple[int, ...]:
    try:
        text = subprocess.run(["npm", "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    numbers = re.findall(r"\d+", text.strip().splitlines()[-1] if text.strip() else "")
    return tuple(int(n) for n in numbers[:3]) or (0,)


def gdown_file(file_id: str, part: Path, *, name: str, max_bytes: int, progress: bool, limits: Limits) -> None:
    """Run ``GDOWN_COMMAND <id> -O <file> --quiet`` in a scratch folder beside ``part``, watched by
    ``run_watched`` (killed at the cap or when it stalls), then move its file to ``part``."""
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    scratch = Path(tempfile.mkdtemp(prefix=".gdown-", dir=part.parent))
    try:
        output = scratch / name
        command = [*GDOWN_COMMAND, file_id, "-O", str(output), "--quiet"]
        result = run_watched(command, watch=scratch, max_bytes=max_bytes, limits=limits, what=name,
                             url=f"https://drive.google.com/uc?id={file_id}", progress=progress, cwd=scratch)
        text = result.stdout.lower()
        if result.returncode != 0:
            if "no module named gdown" in text:
                raise SourceFailed("gdown is not installed: pip install gdown")
            if any(marker in text for marker in ("too many users", "quota", "cannot retrieve the public link")):
                raise DrivePage(f"Google Drive refused the download ({last_line(result.stdout)})")
            raise SourceFailed(f"gdown failed (exit status {result.returncode}): {last_line(result.stdout)}")
        if not output.is_file():
            raise SourceFailed("gdown finished without writing the file")
        os.replace(output, part)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
