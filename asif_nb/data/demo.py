"""The demo collection: three packages → ``cache_dir()/collections/demo/`` (images, ``pairs.jsonl``,
``meta.json``), with the held-out Tux Paint split and the fixed pseudo-random anchor order (rules in the
package docstring, ``asif_nb.data``).

The build runs under a ``filelock`` (``collections/.demo.lock``): a second process that asks for the demo while
one builds it waits, then reuses that build instead of doing the work again. It writes into a temp folder that
is renamed into place only when complete, so a failed or interrupted build leaves the previous one (or none).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from ..fileio import atomic_write, make_temp_dir
from ..settings import cache_dir
from .archives import folder_lock, package_source, replace_folder, unpacked_version
from .records import Pair
from .render import IMAGE_SIZE, build_images
from .sources import emoji_items, openclipart_items, tuxpaint_stamps

# Bump when the demo collection's content rules change: an older cached build is then rebuilt.
# 2: SVGs are never rendered in cairosvg's unsafe mode (the 6 that need XML entities are left out).
BUILDER_VERSION = 2
HELDOUT_FRACTION = 0.2

# Manifest ids (data_manifest.json) of the packages the demo profile is built from.
DEMO_PACKAGES = {
    "tuxpaint": "tuxpaint-stamps-default",
    "openclipart": "openclipart-svg",
    "emoji": "emoji-datasource-google",
}
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
# Every package `prepare demo` reads: the three above and Fashion-MNIST's.
PREPARE_PACKAGES = (*DEMO_PACKAGES.values(), FASHION_MNIST_PACKAGE)

SOURCE_INFO = {
    "tuxpaint": {"package": "tuxpaint-stamps-default", "kind": "debian", "licence": "GPL-2",
                 "url": "https://tuxpaint.org/", "citation": "Tux Paint stamps, the Tux Paint project (New Breed Software)"},
    "openclipart": {"package": "openclipart-svg", "kind": "debian", "licence": "public domain",
                    "url": "https://openclipart.org/", "citation": "Open Clip Art Library 0.18"},
    "emoji": {"package": "emoji-datasource-google", "kind": "npm", "licence": "MIT (data), Apache-2.0 (Noto images)",
              "url": "https://github.com/iamcal/emoji-data", "citation": "emoji-data by Cal Henderson; Google Noto Emoji"},
}


def check_packages(packages) -> dict[str, Path]:
    """``packages`` ({manifest id: local package file}) checked before anything is unpacked: every id is one of
    ``PREPARE_PACKAGES`` and every file exists. Returns it with ``Path`` values (``{}`` for ``None``)."""
    if packages is None:
        return {}
    if not isinstance(packages, dict):
        raise ValueError(f"packages={packages!r}: pass a dict {{manifest id: package file}}, e.g. "
                         f"{{'{PREPARE_PACKAGES[0]}': 'tuxpaint-stamps-default_2022.06.04-1_all.deb'}}.")
    checked = {}
    for artifact_id, file in packages.items():
        if artifact_id not in PREPARE_PACKAGES:
            raise ValueError(f"packages: {artifact_id!r} is not a package of the demo: use one of "
                             f"{', '.join(PREPARE_PACKAGES)}.")
        if not isinstance(file, (str, os.PathLike)) or not Path(file).is_file():
            raise ValueError(f"packages[{artifact_id!r}]={file!r} is not a file: pass the path of the downloaded "
                             "package (.deb or .tgz), or leave the id out to fetch it.")
        checked[artifact_id] = Path(file)
    return checked


def stable_hash(text: str) -> str:
    """sha256 hex of ``text`` (UTF-8): the key of the held-out split and of the anchor order."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def heldout_split(stamps: list[dict]) -> tuple[set[str], list[str], set[str]]:
    """Split Tux Paint stamps into anchors and held-out pairs (rule in the package docstring).

    Returns ``(anchor_ids, heldout_ids, unused_ids)``: ``heldout_ids`` has one id per held-out caption, in id
    order; ``unused_ids`` are the other images of held-out captions (in neither set).
    """
    groups: dict[str, list[dict]] = {}
    for stamp in sorted(stamps, key=lambda s: s["id"]):
        groups.setdefault(stamp["caption"].strip().lower(), []).append(stamp)
    by_category: dict[str, list[str]] = {}
    for key, members in groups.items():
        by_category.setdefault(members[0]["category"], []).append(key)
    held_keys = set()
    for keys in by_category.values():
        keys.sort(key=lambda k: stable_hash("asif-heldout:" + k))
        n_held = min(len(keys) - 1, max(2, round(HELDOUT_FRACTION * len(keys))))
        held_keys.update(keys[:max(n_held, 0)])
    anchors, heldout, unused = set(), [], set()
    for key, members in groups.items():
        if key in held_keys:
            heldout.append(members[0]["id"])
            unused.update(m["id"] for m in members[1:])
        else:
            anchors.update(m["id"] for m in members)
    return anchors, sorted(heldout), unused


def demo_dir() -> Path:
    return cache_dir() / "collections" / "demo"


def _demo_is_current(folder: Path) -> bool:
    meta = folder / "meta.json"
    if not (meta.exists() and (folder / "pairs.jsonl").exists()):
        return False
    with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
        return json.loads(meta.read_text())["builder_version"] == BUILDER_VERSION
    return False


def build_demo(packages: dict | None = None, workers: int | None = None, progress: bool = True,
               force: bool = False) -> Path:
    """Build the demo collection into ``cache_dir()/collections/demo/`` and return that folder.

    ``packages`` maps manifest ids to local package files (else ``fetch`` is used). The build happens in a
    temp folder: images first, then ``pairs.jsonl`` (every pair, with its ``split``: anchor / heldout) and
    ``meta.json`` (sources, versions, licences, counts, the source files that failed and why, build date,
    builder version), and only then is the folder renamed into place, so a half-built collection is never
    seen. A current build is reused; while another process builds, this one waits for it and reuses its build.
    """
    packages = check_packages(packages)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers={workers!r}: pass a positive int, or None for min(4, CPUs).")
    final = demo_dir()
    if not force and _demo_is_current(final):
        return final
    with folder_lock(final):
        if force or not _demo_is_current(final):  # else another process built it while this one waited
            _build(final, packages, workers or min(4, os.cpu_count() or 1), print if progress else _quiet)
    return final


def _quiet(*args, **kwargs) -> None:
    pass


def _demo_items(folders: dict[str, Path]) -> tuple[list[dict], int]:
    """Every pair of the three sources with its ``source`` and ``split``; and how many duplicates are unused."""
    stamps = tuxpaint_stamps(folders["tuxpaint"])
    _, heldout, unused = heldout_split(stamps)
    heldout_set = set(heldout)
    items = [{**stamp, "source": "tuxpaint", "split": "heldout" if stamp["id"] in heldout_set else "anchor"}
             for stamp in stamps if stamp["id"] not in unused]
    for source, reader in (("openclipart", openclipart_items), ("emoji", emoji_items)):
        items += [{**item, "source": source, "split": "anchor"} for item in reader(folders[source])]
    return items, len(unused)


def _image_name(item_id: str) -> str:
    return "images/" + item_id.replace("/", "__") + ".png"


def _build(final: Path, packages: dict, workers: int, say) -> None:
    folders = {source: package_source(artifact, packages) for source, artifact in DEMO_PACKAGES.items()}
    items, n_unused = _demo_items(folders)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(final.parent, ".demo.")
    try:
        jobs = [(item["id"], str(item["path"]), str(tmp / _image_name(item["id"]))) for item in items]
        start = time.time()
        failures = {pair_id: reason for pair_id, reason in build_images(jobs, workers).items() if reason}
        say(f"demo: {len(jobs) - len(failures)} images written, {len(failures)} failed, {time.time() - start:.0f} s")
        failed = Counter(item["source"] for item in items if item["id"] in failures)
        items = [item for item in items if item["id"] not in failures]

        # Anchors in a fixed pseudo-random order (sha256 of the id): any prefix mixes the three sources.
        order = {"anchor": 0, "heldout": 1}
        items.sort(key=lambda item: (order[item["split"]], stable_hash("asif-demo-order:" + item["id"])
                                     if item["split"] == "anchor" else item["id"]))
        sources = [{**info, "source": source, "version": unpacked_version(folders[source]),
                    "count": sum(1 for i in items if i["source"] == source and i["split"] == "anchor"),
                    "failed_to_render": failed.get(source, 0)} for source, info in SOURCE_INFO.items()]
        with atomic_write(tmp / "pairs.jsonl", "w") as handle:
            for item in items:
                record = {"id": item["id"], "caption": item["caption"], "image": _image_name(item["id"]),
                          "source": item["source"], "licence": SOURCE_INFO[item["source"]]["licence"],
                          "category": item["category"], "split": item["split"]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        split = {"rule": "Tux Paint captions grouped; per category the groups with the smallest "
                         "sha256('asif-heldout:'+caption) are held out: max(2, round(0.2*groups)), at most all but one",
                 "heldout": sum(1 for i in items if i["split"] == "heldout"),
                 "unused_duplicates": n_unused, "fraction": HELDOUT_FRACTION}
        meta = {"name": "demo", "builder_version": BUILDER_VERSION, "image_size": IMAGE_SIZE,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sources": sources, "split": split,
                "anchors": sum(1 for i in items if i["split"] == "anchor"),
                "failed": dict(sorted(failures.items()))}
        with atomic_write(tmp / "meta.json", "w") as handle:
            json.dump(meta, handle, indent=1)
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_demo(split: str, build: bool = True) -> tuple[list[Pair], dict]:
    """The demo's pairs of one split ("anchor" or "heldout") in stored order, and its ``meta.json``; the demo is
    built first when it is missing or stale (unless ``build=False``, which raises ``FileNotFoundError``)."""
    folder = demo_dir()
    if not _demo_is_current(folder):
        if not build:
            raise FileNotFoundError("the demo collection is not built: run `python -m asif_nb.data prepare demo`.")
        build_demo()
    meta = json.loads((folder / "meta.json").read_text())
    pairs = []
    with open(folder / "pairs.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["split"] == split:
                pairs.append(Pair(record["id"], record["caption"], folder / record["image"], record["source"],
                                  record["licence"], record.get("category")))
    return pairs, meta
