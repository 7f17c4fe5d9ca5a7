"""Progress bars that leave nothing broken behind.

In a notebook, tqdm's widget bars show up after a save-and-reopen as "Error displaying widget: model not found" (or
as a frozen "0%" line in an executed copy), and text bars on stderr read as warnings. So inside a Jupyter kernel the
bars are plain text on stdout, redrawn in place and ending on their final line; in a terminal they go to stderr as
usual. ``ASIF_PROGRESS=0`` turns every bar off (CI logs, batch runs).
"""
from __future__ import annotations

import os
import sys


def in_notebook() -> bool:
    """True inside a Jupyter / IPython kernel (JupyterLab, Colab, papermill, nbclient)."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ != "TerminalInteractiveShell"


def bar(iterable=None, *, total=None, desc=None, unit="it", disable=False, **options):
    """A ``tqdm`` bar: text on stdout in a notebook, stderr elsewhere; off with ``disable`` or ``ASIF_PROGRESS=0``."""
    from tqdm.std import tqdm

    disable = disable or os.environ.get("ASIF_PROGRESS", "1") == "0"
    stream = sys.stdout if in_notebook() else sys.stderr
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream, dynamic_ncols=False,
                ncols=100 if stream is sys.stdout else None, **options)
