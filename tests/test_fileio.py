"""atomic_write: a reader sees the old file or the whole new one, and permissions are those of a plain open()."""
from __future__ import annotations

import os
import stat

import pytest

from asif_nb.fileio import atomic_write


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for the test; the old one is restored after."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_a_plain_open_would(tmp_path, umask, mask, expected):
    umask(mask)
    with atomic_write(tmp_path / "model.json", "w") as handle:
        handle.write("{}")
    with open(tmp_path / "plain.json", "w") as handle:
        handle.write("{}")
    assert mode(tmp_path / "model.json") == mode(tmp_path / "plain.json") == expected


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "results.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new" and mode(target) == 0o640


def test_a_failed_write_changes_nothing_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def test_a_temp_build_folder_gets_the_mode_of_a_plain_mkdir(tmp_path, umask):
    from asif_nb.fileio import make_temp_dir

    umask(0o022)
    first, second = make_temp_dir(tmp_path, ".build."), make_temp_dir(tmp_path, ".build.")
    assert first != second and first.name.startswith(".build.") and mode(first) == mode(second) == 0o755
