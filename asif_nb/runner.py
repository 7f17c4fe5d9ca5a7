"""``make demo``: run every notebook with papermill, then print the key numbers they wrote.

    python -m asif_nb.runner --out runs/latest notebooks/*.ipynb [-p profile demo] [-p k 100]

Executed copies go to ``--out`` (git-ignored); each notebook writes ``results/<name>.json`` whose
``summary`` dict is what the closing table shows.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from .results import results_dir


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_notebooks(notebooks, out: Path, parameters: dict, kernel: str = "python3") -> list[dict]:
    import papermill

    out.mkdir(parents=True, exist_ok=True)
    timings = []
    for notebook in notebooks:
        notebook = Path(notebook)
        started = time.perf_counter()
        print(f"== {notebook.name}", flush=True)
        try:
            papermill.execute_notebook(
                str(notebook),
                str(out / notebook.name),
                parameters=parameters,
                kernel_name=kernel,
                cwd=str(notebook.parent),
                progress_bar=False,
            )
            status = "ok"
        except Exception as error:  # papermill raises PapermillExecutionError with the cell's traceback
            status = f"FAILED: {type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
        seconds = time.perf_counter() - started
        print(f"   {status} in {seconds:.0f} s", flush=True)
        timings.append({"notebook": notebook.stem, "status": status, "seconds": round(seconds, 1)})
    return timings


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def summary_table(timings: list[dict], folder: Path) -> str:
    lines = [f"{'notebook':34} {'status':8} {'time':>7}  key numbers", "-" * 100]
    for entry in timings:
        path = folder / f"{entry['notebook']}.json"
        summary = json.loads(path.read_text()).get("summary", {}) if path.exists() else {}
        numbers = ", ".join(f"{key}={_format(value)}" for key, value in summary.items())
        status = "ok" if entry["status"] == "ok" else "FAILED"
        lines.append(f"{entry['notebook']:34} {status:8} {entry['seconds']:6.0f}s  {numbers}")
    total = sum(entry["seconds"] for entry in timings)
    lines.append("-" * 100)
    lines.append(f"total {total:.0f} s; executed notebooks in the output folder, numbers in {folder}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", help="notebooks to run, in order")
    parser.add_argument("--out", default="runs/latest", help="folder for the executed copies")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a papermill parameter (value parsed as a Python literal)")
    parser.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    notebooks = sorted(Path(nb) for nb in args.notebooks)
    timings = run_notebooks(notebooks, Path(args.out), parameters, kernel=args.kernel)
    print()
    print(summary_table(timings, results_dir()))
    return 0 if all(entry["status"] == "ok" for entry in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
