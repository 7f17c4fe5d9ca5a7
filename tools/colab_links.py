"""One place says which repository and which release the notebooks' Colab badges and install cells point at:
``[tool.asif-notebooks.colab]`` in ``pyproject.toml`` (``repository``, ``ref``). This writes it into every notebook
(badge in the first cell, install cell) and into the README's badges.

    python tools/colab_links.py          # rewrite
    python tools/colab_links.py --check  # exit 1 if anything disagrees (tests/test_repo.py runs this check)

A fork changes ``repository``; a release tags the commit and sets ``ref`` to that tag, so a student's Colab installs
exactly the code the notebook was written for, never whatever ``main`` is that day.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+/blob/[^/\s]+/notebooks/([^)\s]+\.ipynb)")
INSTALL_CELL = '''# Colab only: install the suite, pinned to one release (a local run uses the repository's .venv: see the README).
REPO, REF = "{repository}", "{ref}"
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"asif_nb @ git+https://github.com/{{REPO}}@{{REF}}"],
                   check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-r",
                    f"https://raw.githubusercontent.com/{{REPO}}/{{REF}}/requirements-offline.txt"], check=True)'''


def setting() -> tuple[str, str]:
    colab = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["asif-notebooks"]["colab"]
    return colab["repository"], colab["ref"]


def badge_url(repository: str, ref: str, notebook: str) -> str:
    return f"https://colab.research.google.com/github/{repository}/blob/{ref}/notebooks/{notebook}"


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def fix_notebook(path: Path, repository: str, ref: str) -> bool:
    """Rewrite the badge and the install cell of one notebook; True if it changed."""
    original = path.read_text(encoding="utf-8")
    notebook = json.loads(original)
    cells = notebook["cells"]
    first = "".join(cells[0]["source"])
    cells[0]["source"] = _lines(BADGE.sub(lambda m: badge_url(repository, ref, m.group(1)), first))
    install = next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and "google.colab" in "".join(c["source"]))
    cells[install]["source"] = _lines(INSTALL_CELL.format(repository=repository, ref=ref))
    updated = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if updated != original:
        path.write_text(updated, encoding="utf-8")
        return True
    return False


def fix_readme(path: Path, repository: str, ref: str) -> bool:
    original = path.read_text(encoding="utf-8")
    updated = BADGE.sub(lambda m: badge_url(repository, ref, m.group(1)), original)
    if updated != original:
        path.write_text(updated, encoding="utf-8")
        return True
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file disagrees")
    args = parser.parse_args(argv)
    repository, ref = setting()
    targets = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    stale = []
    for path in targets + [ROOT / "README.md"]:
        before = path.read_text(encoding="utf-8")
        changed = (fix_readme if path.suffix == ".md" else fix_notebook)(path, repository, ref)
        if changed and args.check:
            path.write_text(before, encoding="utf-8")
            stale.append(path.relative_to(ROOT))
        elif changed:
            print(f"updated {path.relative_to(ROOT)}")
    if stale:
        print(f"out of step with pyproject.toml ({repository}@{ref}): {', '.join(map(str, stale))}; "
              "run python tools/colab_links.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
