"""Where notebooks put what they measured: ``results/<notebook>.json`` and ``results/figures/``.

Every notebook writes its numbers here so papermill reruns can be collected (``make demo`` prints a
summary of them). ``$ASIF_RESULTS`` overrides the folder; otherwise it is ``results/`` at the repository
root when run from ``notebooks/``, or beside the working directory.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import warnings
from pathlib import Path

from .fileio import atomic_write


class SavedPath(type(Path())):
    """The path of a file a notebook saved: shown as "saved to <path>" rather than ``PosixPath('<path>')`` when it
    is a cell's last value."""

    def __repr__(self) -> str:
        return f"saved to {self}"


def results_dir() -> Path:
    if os.environ.get("ASIF_RESULTS"):
        path = Path(os.environ["ASIF_RESULTS"])
    else:
        cwd = Path.cwd()
        path = (cwd.parent if cwd.name == "notebooks" else cwd) / "results"
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value):
    """numpy scalars/arrays and tuples become plain JSON; NaN becomes null (JSON has no NaN)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_results(notebook: str, data: dict) -> Path:
    """Write ``results/<notebook>.json`` atomically, stamped with the time; returns the path."""
    payload = {"notebook": notebook, "written": datetime.datetime.now().isoformat(timespec="seconds")}
    payload.update(_jsonable(data))
    path = results_dir() / f"{notebook}.json"
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    return SavedPath(path)


def load_results(notebook: str, folder: str | os.PathLike | None = None) -> dict:
    path = Path(folder or results_dir()) / f"{notebook}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook {notebook} first (or `make demo`).")
    return json.loads(path.read_text())


def unlabelled_axes(fig) -> list[str]:
    """The axes of ``fig`` that show data on visible axes but lack an x or y label (colour bars aside), named
    by their title (or position): a figure a person cannot read at a glance."""
    missing = []
    for i, ax in enumerate(fig.axes):
        if not ax.axison or getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>":
            continue
        shows_data = bool(ax.lines or ax.collections or ax.patches or ax.images)
        if shows_data and not (ax.get_xlabel().strip() and ax.get_ylabel().strip()):
            missing.append(ax.get_title() or f"axes {i}")
    return missing


def save_figure(fig, name: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``results/figures/<name>.png`` (atomically) and return the path.

    Warns (``UserWarning``) when an axes that shows data has no x or y label: the suite's figures are read at a
    glance, and the notebook tests fail on any warning."""
    missing = unlabelled_axes(fig)
    if missing:
        warnings.warn(f"figure {name!r}: {', '.join(map(repr, missing))} lack an x or y axis label "
                      "(ax.set_xlabel / ax.set_ylabel).", UserWarning, stacklevel=2)
    path = results_dir() / "figures" / f"{name}.png"
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
    return SavedPath(path)
