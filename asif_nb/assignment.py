"""The notebooks as a course assignment, in nbgrader's convention (issue #12).

Two sources of truth, nothing kept by hand twice:

- ``notebooks/NN_*.ipynb`` are the **student release**: each exercise is an nbgrader *solution* cell holding the
  stub (``# YOUR CODE HERE`` / ``raise NotImplementedError()``) and an nbgrader *graded test* cell with its visible
  check (``asif_nb.lab.check``), which says "not yet" until the exercise is solved;
- ``lab/solutions/NN_*.yml`` holds, per exercise (``grade_id``), the ``solution`` (the code that replaces the stub)
  and the hidden ``tests`` the autograder adds to the graded cell.

``answer_key(notebook)`` writes them together into nbgrader's *source* form (``### BEGIN SOLUTION`` /
``### END SOLUTION`` regions, ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``): that is the answer key.
``release(key)`` runs nbgrader's own ``ClearSolutions`` and ``ClearHiddenTests`` on it and must give back the
committed notebook (``check`` verifies it for every notebook), so the release is provably generated from the key.
``autograde(submission, key)`` restores the key's graded cells in a student's notebook (as ``nbgrader autograde``
does), runs it, and scores each graded cell: points when it runs clean, 0 when its hidden test fails.

    python -m asif_nb.assignment build [--out runs/assignment]   # source/ (the answer key) and release/
    python -m asif_nb.assignment check                           # every committed notebook == release(key)
    python -m asif_nb.assignment grade SUBMISSION.ipynb          # the autograder's score, per exercise

(``make assignment`` runs build and check.) nbgrader itself is a development dependency (``pip install
"asif_nb[dev]"``); the students' notebooks need only ``asif_nb``.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = ROOT / "lab" / "solutions"
STUB = re.compile(r"^(?P<indent>[ \t]*)# YOUR CODE HERE\n(?P=indent)raise NotImplementedError\(\)[ \t]*$", re.M)


def _nbformat():
    import nbformat

    return nbformat


def meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def exercises(notebook) -> tuple[list, list]:
    """(solution cells, graded test cells) of a notebook, in order."""
    return ([c for c in notebook.cells if meta(c).get("solution")],
            [c for c in notebook.cells if meta(c).get("grade") and not meta(c).get("solution")])


def _solutions(stem: str) -> dict:
    import yaml

    path = SOLUTIONS / f"{stem}.yml"
    if not path.exists():
        return {}
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping grade_id -> {{solution, tests}}.")
    return document


def answer_key(path: str | Path):
    """The nbgrader source notebook (the answer key) of a committed notebook and its ``lab/solutions`` file."""
    nbformat = _nbformat()
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    answers = _solutions(path.stem)
    solution_cells, graded_cells = exercises(notebook)
    used = set()
    for cell in solution_cells:
        grade_id = meta(cell)["grade_id"]
        entry = answers.get(grade_id)
        if not entry or "solution" not in entry:
            raise ValueError(f"{path.name}: exercise {grade_id!r} has no solution in lab/solutions/{path.stem}.yml.")
        match = STUB.search(cell.source)
        if match is None:
            raise ValueError(f"{path.name}: the answer cell {grade_id!r} does not hold nbgrader's stub "
                             "('# YOUR CODE HERE' then 'raise NotImplementedError()'): the release must be unsolved.")
        indent = match.group("indent")
        body = "\n".join(indent + line if line.strip() else line for line in entry["solution"].rstrip().split("\n"))
        cell.source = (cell.source[:match.start()] + f"{indent}### BEGIN SOLUTION\n{body}\n{indent}### END SOLUTION"
                       + cell.source[match.end():])
        used.add(grade_id)
    for cell in graded_cells:
        grade_id = meta(cell)["grade_id"]
        tests = answers.get(grade_id, {}).get("tests")
        if not tests:
            raise ValueError(f"{path.name}: graded cell {grade_id!r} has no hidden tests in "
                             f"lab/solutions/{path.stem}.yml.")
        cell.source = cell.source.rstrip() + f"\n### BEGIN HIDDEN TESTS\n{tests.rstrip()}\n### END HIDDEN TESTS"
        used.add(grade_id)
    unused = set(answers) - used
    if unused:
        raise ValueError(f"lab/solutions/{path.stem}.yml answers {sorted(unused)}, which {path.name} does not have.")
    return notebook


def release(key):
    """nbgrader's own ``ClearSolutions`` + ``ClearHiddenTests`` of an answer key: the student version."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    student = copy.deepcopy(key)
    student, _ = ClearSolutions().preprocess(student, {})
    student, _ = ClearHiddenTests().preprocess(student, {})
    return student


def differences(path: str | Path) -> list[str]:
    """Where the committed notebook differs from ``release(answer_key(notebook))`` (empty: it is the release)."""
    nbformat = _nbformat()
    committed = nbformat.read(Path(path), as_version=4)
    rebuilt = release(answer_key(path))
    if len(committed.cells) != len(rebuilt.cells):
        return [f"{len(committed.cells)} cells, the release has {len(rebuilt.cells)}"]
    return [f"cell {i} ({meta(a).get('grade_id', a.cell_type)})" for i, (a, b) in
            enumerate(zip(committed.cells, rebuilt.cells)) if a.source.rstrip() != b.source.rstrip()]


def autograde(submission: str | Path, key, timeout: int = 1800, cwd: str | Path = NOTEBOOKS) -> dict:
    """Score a student's notebook: the key's graded cells (hidden tests included) replace the submission's, the
    notebook runs top to bottom (errors allowed), and each graded cell earns its points if it ran clean.
    Returns ``{grade_id: {"points", "max_points", "error"}}``."""
    from nbclient import NotebookClient

    nbformat = _nbformat()
    notebook = nbformat.read(Path(submission), as_version=4) if not hasattr(submission, "cells") else submission
    notebook = copy.deepcopy(notebook)
    graded = {meta(c)["grade_id"]: c for c in exercises(key)[1]}
    for cell in exercises(notebook)[1]:
        grade_id = meta(cell)["grade_id"]
        if grade_id in graded:
            cell.source = graded[grade_id].source
    NotebookClient(notebook, timeout=timeout, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    scores = {}
    for cell in exercises(notebook)[1]:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        points = float(meta(cell).get("points", 1))
        scores[meta(cell)["grade_id"]] = {"points": 0.0 if errors else points, "max_points": points,
                                          "error": f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else None}
    return scores


def main(argv=None) -> int:
    nbformat = _nbformat()
    parser = argparse.ArgumentParser(prog="python -m asif_nb.assignment", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write the answer key (nbgrader source) and the student release")
    build.add_argument("--out", default=str(ROOT / "runs" / "assignment"))
    sub.add_parser("check", help="every committed notebook equals the release built from its answer key")
    grade = sub.add_parser("grade", help="autograde a student's notebook")
    grade.add_argument("submission")
    args = parser.parse_args(argv)
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.command == "build":
        out = Path(args.out)
        for folder in ("source", "release"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        for path in notebooks:
            key = answer_key(path)
            nbformat.write(key, out / "source" / path.name)
            nbformat.write(release(key), out / "release" / path.name)
        print(f"answer key: {out / 'source'}; student release: {out / 'release'} ({len(notebooks)} notebooks)")
        return 0
    if args.command == "check":
        problems = {path.name: differences(path) for path in notebooks}
        problems = {name: where for name, where in problems.items() if where}
        for name, where in problems.items():
            print(f"{name}: not the release of its answer key at {', '.join(where)}", file=sys.stderr)
        if not problems:
            print(f"{len(notebooks)} notebooks are the release of notebooks + lab/solutions")
        return 1 if problems else 0
    submission = Path(args.submission)
    scores = autograde(submission, answer_key(NOTEBOOKS / submission.name))
    for grade_id, score in scores.items():
        print(f"{grade_id:28s} {score['points']:g} / {score['max_points']:g}" + (f"  ({score['error']})"
                                                                             if score["error"] else ""))
    total = sum(s["points"] for s in scores.values()), sum(s["max_points"] for s in scores.values())
    print(f"total {total[0]:g} / {total[1]:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
