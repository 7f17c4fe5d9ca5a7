"""The external tools a manifest source may name — ``apt-get download``, ``npm pack``, ``gdown`` — each asked for
one file, which lands in ``part`` for ``asif_nb.download`` to verify.

apt-get and npm run with a 30-minute deadline (npm fills its own cache, not the scratch folder, so its progress
cannot be watched). gdown gives no control over its transfer, so it runs under ``run_watched``: held to the same
``asif_nb.transfer.Limits`` as a stream by the growth of the files it writes, and killed (with its children) when
they pass the cap, stop growing or grow slower than the minimum rate.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .transfer import Limits, TransferError

# gdown is run as: GDOWN_COMMAND + [<id>, "-O", <file>, "--quiet"]. Tests put a stand-in script here.
GDOWN_COMMAND = [sys.executable, "-m", "gdown"]


class SourceFailed(Exception):
    """One source could not deliver a correct file; the next source is tried."""


class DrivePage(SourceFailed):
    """Google Drive sent its quota / virus-scan HTML page instead of the file."""


# --------------------------------------------------------------------------------------------- watched tools

def run_watched(command: list[str], *, watch: str | os.PathLike, max_bytes: int, limits: Limits | None = None,
                what: str, url: str, progress: bool = False, cwd: str | os.PathLike | None = None
                ) -> subprocess.CompletedProcess:
    """Run a downloading tool and hold it to ``limits`` by the growth of the files under ``watch``.

    The tool (and any child it starts) is killed, and ``TransferError`` raised, when the files pass ``max_bytes``
    (kind ``cap``), do not grow for ``read_timeout`` (``connect_timeout + read_timeout`` before the first byte;
    kind ``timeout``) or grow slower than ``min_rate`` on average once ``grace`` has passed (kind ``stall``).
    Returns the finished process with its stdout and stderr together in ``stdout`` (text).
    """
    from .progress import bar as tqdm

    limits = limits if limits is not None else Limits()
    watch = Path(watch)
    poll = max(0.02, min(0.25, limits.read_timeout / 4, limits.grace / 4 or 0.25))
    posix = os.name == "posix"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=cwd, start_new_session=posix)
        failure = None
        try:
            with tqdm(total=max_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                      disable=not progress) as bar:
                failure = _watch(process, watch, max_bytes, limits, poll, bar)
        finally:
            if failure is not None or process.poll() is None:
                _kill(process, posix)
        size = _tree_size(watch)
        if failure is None and size > max_bytes:  # written past the cap between two looks, then exited
            failure = ("cap", f"wrote {size} bytes, more than the cap of {max_bytes}", False)
        if failure is not None:
            kind, summary, transient = failure
            advice = ("the mirror may be overloaded: try again later or use another mirror" if transient
                      else "report it or use another mirror")
            raise TransferError(f"{summary} (the tool was stopped)", what=what, url=url, kind=kind,
                                transient=transient, advice=advice)
        log.seek(0)
        output = log.read().decode("utf-8", errors="replace")
    return subprocess.CompletedProcess(command, process.returncode, stdout=output, stderr="")


def _watch(process, watch: Path, max_bytes: int, limits: Limits, poll: float, bar):
    """Poll until the process exits (``None``) or breaks a limit: ``(kind, summary, transient)``."""
    started = last_growth = time.monotonic()
    size = 0
    while True:
        try:
            process.wait(timeout=poll)
            return None
        except subprocess.TimeoutExpired:
            pass
        now, new_size = time.monotonic(), _tree_size(watch)
        if new_size > max_bytes:
            return "cap", f"wrote more than the cap of {max_bytes} bytes ({new_size} so far)", False
        if new_size > size:
            bar.update(new_size - size)
            size, last_growth = new_size, now
        idle_allowed = limits.read_timeout + (0 if size else limits.connect_timeout)
        if now - last_growth > idle_allowed:
            return "timeout", f"no byte arrived for {now - last_growth:.1f} s (read timeout) after {size} bytes", True
        elapsed = now - started
        if limits.min_rate and elapsed > limits.grace and size / elapsed < limits.min_rate:
            return "stall", (f"stalled: {size} bytes in {elapsed:.1f} s, below the minimum of "
                             f"{limits.min_rate:g} B/s"), True


def _tree_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # renamed between the listing and the look
                pass
    return total


def _kill(process: subprocess.Popen, posix: bool) -> None:
    try:
        if posix:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the tool and every child it started
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


# --------------------------------------------------------------------------------------------- the clients

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
        if result.returncode != 0:
            error = _gdown_error(result.stdout)
            text = error.lower()
            if "no module named gdown" in text:
                raise SourceFailed("gdown is not installed: pip install gdown")
            if any(marker in text for marker in ("too many users", "quota", "cannot retrieve the public link")):
                raise DrivePage(f"Google Drive refused the download ({error})")
            raise SourceFailed(f"gdown failed (exit status {result.returncode}): {error}")
        if not output.is_file():
            raise SourceFailed("gdown finished without writing the file")
        os.replace(output, part)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _gdown_error(output: str) -> str:
    """gdown prints ``Error:`` (or ``Failed to retrieve file url:``), the message wrapped over indented lines, then
    a ``To report issues`` footer: return the message on one line."""
    lines = [line.strip() for line in output.splitlines()]
    lines = [line for line in lines if line and not line.startswith("To report issues")]
    starts = [i for i, line in enumerate(lines) if line.startswith(("Error:", "Failed to retrieve file url:"))]
    if not starts:
        return lines[-1] if lines else "(no message)"
    message = " ".join(lines[starts[-1]:]).removeprefix("Error:").strip()
    return message[:500]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
