"""The lab version in nbgrader's convention: one source of truth, and the autograder in both directions."""
from pathlib import Path

import pytest

from asif_nb.assignment import answer_key, autograde, differences, exercises, meta, release

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_committed_notebook_is_the_release_of_its_answer_key(path):
    """nbgrader's ClearSolutions + ClearHiddenTests of (notebook + lab/solutions) give back the notebook itself:
    the student version is generated from the key, never kept by hand beside it."""
    assert differences(path) == []
    key = answer_key(path)
    solutions, graded = exercises(key)
    assert solutions and graded, f"{path.name} has no exercise"
    for cell in solutions:
        assert "### BEGIN SOLUTION" in cell.source and "NotImplementedError" not in cell.source
    for cell in graded:
        assert "### BEGIN HIDDEN TESTS" in cell.source and meta(cell).get("points", 0) > 0
    for cell in exercises(release(key))[1]:
        assert "HIDDEN TESTS" not in cell.source


def test_the_autograder_gives_the_answer_key_full_marks_and_the_release_none(tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setenv("ASIF_RESULTS", str(tmp_path))
    path = ROOT / "notebooks" / "00_setup.ipynb"
    key = answer_key(path)
    solved = autograde(key, key)
    assert solved and all(s["points"] == s["max_points"] > 0 for s in solved.values()), solved
    student = autograde(nbformat.read(path, as_version=4), key)
    assert student.keys() == solved.keys()
    assert all(s["points"] == 0 and "AssertionError" in s["error"] for s in student.values()), student


def test_a_missing_solution_is_named(tmp_path, monkeypatch):
    from asif_nb import assignment

    monkeypatch.setattr(assignment, "SOLUTIONS", tmp_path)
    with pytest.raises(ValueError, match="has no solution in lab/solutions/00_setup.yml"):
        answer_key(ROOT / "notebooks" / "00_setup.ipynb")
