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


# ------------------------------------------------------------------------------------------ Colab's conventions

_PARAM = re.compile(r"^(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<value>.+?)\s+#@param\s*(?P<spec>.*)$")
_TYPES = {"string": str, "raw": object, "boolean": bool, "number": (int, float), "integer": int, "slider": (int, float),
          "date": str}


def _colab_dict(text):
    """Colab's annotation ``{type:"integer", min:0}`` (keys unquoted) as a dict, or None if it does not parse."""
    import ast

    try:
        text = re.sub(r"([{,]\s*)([A-Za-z_][\w-]*)\s*:", r'\1"\2":', text)
        return ast.literal_eval(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", text)))
    except (ValueError, SyntaxError):
        return None


def _check_param(line):
    """Why this #@param line would not work as a Colab form field (None when it would)."""
    import ast

    match = _PARAM.match(line.strip())
    if not match:
        return "not `name = value  #@param ...`"
    value_text, spec = match.group("value"), match.group("spec").strip()
    if re.match(r"^[rRbBuUfF]+['\"]", value_text):
        return f"{value_text[:12]}…: a prefixed string literal; Colab's form rewrites plain literals only"
    try:
        value = ast.literal_eval(value_text)
    except (ValueError, SyntaxError):
        return f"{value_text!r} is not a literal"
    if spec.startswith("["):
        options_text, _, rest = spec.partition("]")
        try:
            options = ast.literal_eval(options_text + "]")
        except (ValueError, SyntaxError):
            return f"options {options_text}] do not parse"
        extra = _colab_dict(rest.strip()) if rest.strip() else {}
        if extra is None or set(extra) - {"allow-input", "type"}:
            return f"after the options only {{allow-input: true}} may follow, got {rest.strip()!r}"
        if value not in options and not extra.get("allow-input"):
            return f"the default {value!r} is not one of the options {options}"
        return None
    annotation = _colab_dict(spec)
    if not isinstance(annotation, dict) or annotation.get("type") not in _TYPES:
        return f"annotation {spec!r} is neither an option list nor {{type:...}} with a type of {sorted(_TYPES)}"
    expected = _TYPES[annotation["type"]]
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        return f"{annotation['type']} field with a {type(value).__name__} value {value!r}"
    if annotation["type"] == "slider" and not {"min", "max"} <= set(annotation):
        return "a slider needs min and max"
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_param_line_parses_as_a_colab_form_field(path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    problems = {line: _check_param(line) for cell in tagged for line in _source(cell).splitlines()
                if "#@param" in line}
    assert problems and not {line: why for line, why in problems.items() if why}


def test_the_colab_form_checker_refuses_what_colab_would_not_read():
    assert _check_param('k = 0  #@param {type:"integer"}') is None
    assert _check_param('mode = "max"  #@param ["max", "mean"]') is None
    assert _check_param('name = "x"  #@param ["", "a"] {allow-input: true}') is None
    assert "not one of the options" in _check_param('mode = "sum"  #@param ["max", "mean"]')
    assert "integer field" in _check_param('k = 0.5  #@param {type:"integer"}')
    assert "prefixed" in _check_param('pattern = r"\\bcat"  #@param {type:"string"}')
    assert "neither" in _check_param('k = 3  #@param {type:"int"}')


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_cells_up_to_the_install_cell_run_without_the_package(path, tmp_path):
    """A fresh Colab has no asif_nb until the install cell ran: everything before it must run in a bare Python."""
    import shutil
    import subprocess

    cells = [c for c in _cells(path) if c["cell_type"] == "code"]
    upto = next(i for i, c in enumerate(cells) if "google.colab" in _source(c))
    script = "\n\n".join(_source(c) for c in cells[:upto + 1])
    bare = shutil.which("python3", path="/usr/bin:/usr/local/bin") or "python3"
    result = subprocess.run([bare, "-I", "-c", "import sys\nsys.modules.pop('asif_nb', None)\n" + script],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
