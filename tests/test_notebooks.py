"""Every notebook run top to bottom as committed (what a student's "run all" does), then checked as a lab:

- it runs without an error, with nothing on stderr and no warning in any output, no widget left behind in the
  saved outputs and no raw object repr (``PosixPath(...)``, ``np.float32(...)``) printed;
- every exercise says "not yet" as committed (nothing is solved for the student), and nothing says "solved";
- then, in the same kernel, each exercise's answer cell from the answer key (``lab/solutions``) and its graded cell
  with the hidden tests run: every exercise says "solved" and every hidden test passes.

Executed copies go to ``runs/tests/`` (git-ignored) so a failure can be read; each notebook's wall time is written to
``runs/tests/times.json`` (LAB.md quotes them).
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from asif_nb.assignment import answer_key, exercises, meta

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUNS = ROOT / "runs" / "tests"
REPRS = re.compile(r"\b(PosixPath|WindowsPath|np\.float(16|32|64)|np\.int(8|16|32|64))\(")
WIDGET = "application/vnd.jupyter.widget-view+json"
WARNING = re.compile(r"\b(User|Deprecation|Future|Runtime|Pandas\d*)Warning\b")


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return data.get("text/plain", "") if isinstance(data.get("text/plain", ""), str) else "".join(data["text/plain"])


def _problems(cell) -> list[str]:
    found = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "error":
            found.append(f"error {output['ename']}: {output['evalue']}")
        elif kind == "stream" and output.get("name") == "stderr":
            found.append(f"stderr: {output['text'][:300]!r}")
        elif WIDGET in output.get("data", {}):
            found.append("a widget output (it would read 'Error displaying widget' after a save and reopen)")
        text = _text(output)
        if WARNING.search(text):
            found.append(f"a warning: {text[:300]!r}")
        if REPRS.search(text):
            found.append(f"a raw object repr: {REPRS.search(text).group(0)}...")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_clean_and_its_exercises_fail_until_solved(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ASIF_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    key = answer_key(path)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    started, first, seconds = time.perf_counter(), len(notebook.cells), None
    try:
        with client.setup_kernel():
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
            seconds = time.perf_counter() - started
            # the answer key's cells, in the same kernel: the solutions, then the graded cells with hidden tests
            injected = [nbformat.v4.new_code_cell(c.source, metadata=c.metadata) for c in exercises(key)[0]]
            injected += [nbformat.v4.new_code_cell(c.source, metadata=c.metadata) for c in exercises(key)[1]]
            first = len(notebook.cells)
            notebook.cells.extend(injected)
            for offset in range(len(injected)):
                client.execute_cell(notebook.cells[first + offset], first + offset)
            injected = notebook.cells[first:]
    finally:
        RUNS.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, RUNS / path.name)
    times = RUNS / "times.json"
    recorded = json.loads(times.read_text()) if times.exists() else {}
    recorded[path.stem] = round(seconds, 1)
    times.write_text(json.dumps(recorded, indent=1, sort_keys=True))

    committed = notebook.cells[:first]
    problems = [f"cell {i}: {p}" for i, cell in enumerate(committed) for p in _problems(cell)]
    assert not problems, "\n".join(problems)
    graded = [c for c in committed if meta(c).get("grade") and not meta(c).get("solution")]
    assert graded, f"{path.name} has no exercise"
    for cell in graded:
        said = "".join(_text(o) for o in cell.get("outputs", []))
        assert "not yet" in said and "solved" not in said, f"{meta(cell)['grade_id']} as committed: {said!r}"
    for cell in injected:
        assert not [o for o in cell.get("outputs", []) if o.get("output_type") == "error"], \
            f"{meta(cell)['grade_id']} with the answer key: {_problems(cell)}"
        if meta(cell).get("grade"):
            said = "".join(_text(o) for o in cell.get("outputs", []))
            assert "solved" in said and "not yet" not in said, f"{meta(cell)['grade_id']} with the answer key: {said!r}"
