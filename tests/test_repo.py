"""The repository's own conventions: notebooks committed clean and built to one pattern, environment.yml in
step with pyproject.toml, CI calling the README's test command."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "00_setup",
    "01_embeddings",
    "02_zero_shot_classification",
    "03_image_text_similarity",
    "04_interpretability",
    "05_webcam_classifier",
    "06_figure4_sweeps",
    "07_memory_editing",
    "08_clip_lit_asif",
]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS][: len(EXPECTED)] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name}: a code cell has outputs; clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_suite_pattern(path):
    cells = _cells(path)
    first = _source(cells[0])
    assert cells[0]["cell_type"] == "markdown"
    badge = re.search(r"colab\.research\.google\.com/github/[^)\s]+/blob/[^/\s]+/notebooks/([^)\s]+)", first)
    assert badge and badge.group(1) == path.name, f"{path.name}: the Colab badge must point to its own path"
    code = [_source(c) for c in cells if c["cell_type"] == "code"]
    assert any("google.colab" in src for src in code), f"{path.name}: no Colab-only install cell"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    params = _source(tagged[0])
    assert re.search(r'^profile\s*=\s*"demo"\s*#@param', params, re.M), f"{path.name}: profile must default to demo"
    assert "#@param" in params
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"^#+ .*Exercise", markdown, re.M), f"{path.name}: no exercise section"
    assert any("save_results(" in src for src in code), f"{path.name}: does not write results/<notebook>.json"
    # Notebooks tell the story; library code lives in asif_nb. Only an exercise's answer cell (an nbgrader solution
    # cell) defines a function: the one the student writes.
    for cell in cells:
        if cell["cell_type"] == "code" and not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            assert not re.search(r"^\s*(def|class) ", _source(cell), re.M), \
                f"{path.name}: defines a function/class outside an exercise; move it to asif_nb"


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    listed = {line for line in pip_section if not line.startswith("-")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_badges_and_install_cells_name_one_repository_and_release():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "tools" / "colab_links.py"), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    colab = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["asif-notebooks"]["colab"]
    for path in NOTEBOOKS:
        install = next(_source(c) for c in _cells(path) if c["cell_type"] == "code" and "google.colab" in _source(c))
        repository, ref = colab["repository"], colab["ref"]
        assert f'REPO, REF = "{repository}", "{ref}"' in install
        assert "[notebooks]" not in install, f"{path.name}: Colab gets the plain package, not jupyterlab/papermill"
