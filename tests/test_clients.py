"""run_watched: a downloading tool we cannot drive, held to the transfer Limits by the growth of its files.

(gdown's use of it, through fetch, is tested in test_download.py.)"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asif_nb.clients import run_watched
from asif_nb.transfer import Limits, TransferError


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")  # a zombie is dead, merely not yet reaped


def _wait_dead(pid, seconds=5.0):
    deadline = time.monotonic() + seconds  # a guard against a hang, not a speed test
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


WRITER = """import subprocess, sys, time
from pathlib import Path
out = Path(sys.argv[1])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
out.with_name("pids").write_text(f"{{child.pid}}")
with open(out, "wb") as handle:
    for _ in range(2000):  # 32 MiB in 20 s at most, if nobody stops it
        handle.write(b"x" * {chunk})
        handle.flush()
        time.sleep(0.01)
"""


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_run_watched_kills_the_tool_and_its_children_at_the_cap(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(chunk=16384))
    watch = tmp_path / "out"
    watch.mkdir()
    stopped = r"wrote more than the cap of 200000 bytes .*\(the tool was stopped\)"
    with pytest.raises(TransferError, match=stopped) as raised:
        run_watched([sys.executable, str(script), str(watch / "f")], watch=watch, max_bytes=200_000,
                    limits=Limits(grace=5), what="f", url="tool://f")
    assert raised.value.kind == "cap" and not raised.value.transient
    child = int((watch / "pids").read_text())
    assert _wait_dead(child), "the tool's child outlived it"


def test_run_watched_returns_the_output_of_a_tool_that_behaves(tmp_path):
    watch = tmp_path / "out"
    watch.mkdir()
    code = "import sys; open(sys.argv[1], 'wb').write(b'x' * 100); print('done'); sys.exit(3)"
    result = run_watched([sys.executable, "-c", code, str(watch / "f")], watch=watch, max_bytes=1000,
                         limits=Limits(grace=10), what="f", url="tool://f")
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 3 and "done" in result.stdout and (watch / "f").stat().st_size == 100


def test_run_watched_stops_a_tool_whose_file_stops_growing(tmp_path):
    watch = tmp_path / "out"
    watch.mkdir()
    code = "import sys, time; open(sys.argv[1], 'wb').write(b'x' * 10); time.sleep(20)"
    with pytest.raises(TransferError, match=r"no byte arrived for .* s \(read timeout\) after 10 bytes") as raised:
        run_watched([sys.executable, "-c", code, str(watch / "f")], watch=watch, max_bytes=1000,
                    limits=Limits(connect_timeout=5.0, read_timeout=0.5, min_rate=0), what="f", url="tool://f")
    assert raised.value.kind == "timeout" and raised.value.transient
