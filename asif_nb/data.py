"""Collections of image–caption pairs (the anchors ASIF is "defined by") and the evaluation sets.

Collections — ``load_collection(name, n_pairs=None)`` returns an ordered ``Collection`` of ``Pair``s:

- ``demo``: about 5,000 pairs built offline from three packages, cached on first use
  (``python -m asif_nb.data prepare demo``):

  * Debian ``tuxpaint-stamps-default`` (GPL-2): human-captioned stamps, most of them photo cut-outs.
    Caption = first line of the ``.txt`` beside the image. ``symbols/`` (letters, coins, shapes) is left out.
    Category = first folder under ``stamps/`` (animals, food, ...). A stamp shipped both as SVG and PNG keeps the
    PNG (same drawing, no rendering); the ``*_mirror.png`` variants have no ``.txt`` and are skipped.
  * Debian ``openclipart-svg`` (public domain): SVG drawings captioned with their ``dc:title``, cleaned by
    ``clean_title`` and filtered by ``keep_title`` (collection tags, "Clipart by …", single non-English words),
    at most ``MAX_TITLE_REPEATS`` drawings per title; rendered once with cairosvg.
  * npm ``emoji-datasource-google`` (MIT data, Apache-2.0 images): ``img/google/64`` emoji captioned with their
    Unicode names (lower-cased). The "Component" category is dropped; skin-tone variants are not top-level
    entries of ``emoji.json`` and so never enter; flags are kept (they are real pictures with real names).

  Every image is stored once as an RGB PNG composited on white, at most ``IMAGE_SIZE`` px on the long side,
  so every encoder sees the same pixels.

  Held-out split (never anchors): Tux Paint pairs are grouped by caption (so a caption shared by a photo and a
  cartoon never sits on both sides). Within each category the groups are ranked by a sha256 of the caption and
  the first ``max(2, round(HELDOUT_FRACTION * groups))`` (at most all but one) are held out. Held-out groups
  give one image each (the first id) to the ``tuxpaint-heldout`` evaluation set, so its captions are unique;
  the group's other images are used nowhere.

  Order: anchors are sorted by a sha256 of their id. That order is a fixed pseudo-random shuffle, so any
  prefix (the paper's "first n pairs", Figure 4) mixes photos, clipart and emoji in proportion, and adding or
  removing one pair does not move the others.

- ``folder:<path>``: bring your own pairs — images plus ``captions.csv`` / ``captions.jsonl`` (keys ``image``,
  ``caption``, optional ``id``) or a ``.txt`` beside each image. Order: the captions file's order, or sorted
  file names for ``.txt`` pairs.
- ``cc3m`` / ``cc12m`` (paper profile) are never stored as files: they are streamed straight into an anchor bundle
  (``python -m asif_nb.embed cc12m ...``, ``asif_nb.stream``, ``asif_nb.bundle``); ``load_bundle(...).collection``
  then holds their keys and captions.

Evaluation sets — ``load_eval(name, ...)`` returns an ``EvalSet``: ``tuxpaint-heldout``, ``fashion-mnist``,
``imagenet-samples`` (offline) and ``imagenet``, ``imagenet-v2``, ``cifar100``, ``pets`` (paper profile).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .fileio import atomic_write
from .images import to_rgb
from .settings import cache_dir

# Bump when the demo collection's content rules change: an older cached build is then rebuilt.
BUILDER_VERSION = 1
IMAGE_SIZE = 256
HELDOUT_FRACTION = 0.2
MAX_TITLE_REPEATS = 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")

# Manifest ids (asif_nb/data_manifest.json) of the packages the demo profile is built from.
DEMO_PACKAGES = {
    "tuxpaint": "tuxpaint-stamps-default",
    "openclipart": "openclipart-svg",
    "emoji": "emoji-datasource-google",
}
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"

_SOURCE_INFO = {
    "tuxpaint": {"package": "tuxpaint-stamps-default", "kind": "debian", "licence": "GPL-2",
                 "url": "https://tuxpaint.org/", "citation": "Tux Paint stamps, the Tux Paint project (New Breed Software)"},
    "openclipart": {"package": "openclipart-svg", "kind": "debian", "licence": "public domain",
                    "url": "https://openclipart.org/", "citation": "Open Clip Art Library 0.18"},
    "emoji": {"package": "emoji-datasource-google", "kind": "npm", "licence": "MIT (data), Apache-2.0 (Noto images)",
              "url": "https://github.com/iamcal/emoji-data", "citation": "emoji-data by Cal Henderson; Google Noto Emoji"},
}

COLLECTIONS = {
    "demo": "about 5,000 offline pairs: Tux Paint stamps (photos), OpenClipart drawings, Noto emoji",
    "folder:<path>": "your own pairs: a folder of images with captions.csv / captions.jsonl or a .txt per image",
    "cc3m": "paper profile: Conceptual Captions 3M, streamed into an anchor bundle (python -m asif_nb.embed cc3m)",
    "cc12m": "paper profile: Conceptual 12M (the paper used the first 1.6M pairs), streamed into an anchor bundle",
}

EVALS = {
    "tuxpaint-heldout": "demo: image→caption retrieval on held-out Tux Paint stamps (never anchors), + their categories",
    "fashion-mnist": "demo: Fashion-MNIST test set (10k, 10 classes), inverted to dark-on-white by default",
    "imagenet-samples": "demo: the 20 ImageNet photos shipped in foolbox, 1000-class label space",
    "imagenet": "paper: your ImageNet val folder (root= or $IMAGENET_DIR); the authors' seeded val/test halves",
    "imagenet-v2": "paper: ImageNetV2 matched-frequency (root= or $IMAGENET_V2_DIR)",
    "cifar100": "paper: CIFAR-100 test set (torchvision download), CLIP's 18 templates",
    "pets": "paper: Oxford-IIIT Pets test set (torchvision download), the authors' 3 templates",
}


# ============================================================================================ records

@dataclasses.dataclass(frozen=True)
class Pair:
    """One anchor: an image file on disk and its caption, with a stable id and where it came from."""

    id: str
    caption: str
    image: Path
    source: str
    licence: str
    category: str | None = None

    def load_image(self):
        """The image as an RGB PIL image, transparent pixels composited on white."""
        from PIL import Image

        with Image.open(self.image) as image:
            return to_rgb(image)


class Collection(Sequence):
    """An ordered sequence of ``Pair``s; slicing returns a ``Collection`` (so ``coll[:1000]`` = the first 1000).

    ``sources`` lists the packages behind it (package, version, licence, count, url, citation); ``split`` says
    how held-out pairs were chosen (empty for collections without one).
    """

    def __init__(self, name: str, pairs, sources=(), split=None):
        self.name = name
        self.pairs = list(pairs)
        self.sources = [dict(s) for s in sources]
        self.split = dict(split or {})

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Collection(self.name, self.pairs[index], self.sources, self.split)
        return self.pairs[index]

    def __repr__(self):
        counts = Counter(pair.source for pair in self.pairs)
        return f"Collection({self.name!r}, {len(self)} pairs: {dict(counts)})"

    @property
    def ids(self) -> list[str]:
        return [pair.id for pair in self.pairs]

    @property
    def captions(self) -> list[str]:
        return [pair.caption for pair in self.pairs]

    @property
    def images(self) -> list[Path]:
        return [pair.image for pair in self.pairs]

    @property
    def categories(self) -> list[str | None]:
        return [pair.category for pair in self.pairs]


@dataclasses.dataclass
class EvalSet:
    """An evaluation set. ``task`` is "classification" or "retrieval".

    ``images``: file paths or PIL images, row i ↔ ``labels[i]`` (int64 index into ``class_names``) and, for
    retrieval, ``captions[i]`` (the one caption of image i). ``templates`` are format strings with ``{c}``
    (CLIP_benchmark's convention): the prompts of class c are ``t.format(c=c)``.
    """

    name: str
    task: str
    images: list
    labels: np.ndarray
    class_names: list[str]
    templates: list[str]
    captions: list[str] | None = None
    ids: list[str] | None = None
    source: str = ""
    licence: str = ""

    def __len__(self):
        return len(self.images)

    def __repr__(self):
        return (f"EvalSet({self.name!r}, task={self.task!r}, {len(self)} images, {len(self.class_names)} classes, "
                f"{len(self.templates)} templates)")


def list_collections() -> dict[str, str]:
    """Collection names (``folder:<path>`` stands for any folder) with a one-line description."""
    return dict(COLLECTIONS)


def list_evals() -> dict[str, str]:
    """Evaluation-set names with a one-line description."""
    return dict(EVALS)


# ============================================================================================ images

def _normalise_image(image, crop: bool):
    """Crop a transparent image to its drawn pixels (clipart often sits on an A4 page), cap the size, whiten."""
    from PIL import Image

    if crop:
        rgba = image.convert("RGBA")
        box = rgba.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
        if box is None:
            return None  # nothing drawn
        margin = max(2, round(0.04 * max(box[2] - box[0], box[3] - box[1])))
        box = (max(0, box[0] - margin), max(0, box[1] - margin),
               min(rgba.width, box[2] + margin), min(rgba.height, box[3] + margin))
        image = rgba.crop(box)
    if max(image.size) > IMAGE_SIZE:
        scale = IMAGE_SIZE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.convert("RGBA").resize(size, Image.LANCZOS)
    return to_rgb(image)


def render_svg(path: str | os.PathLike):
    """Render an SVG file with cairosvg to an RGBA PIL image, or ``None`` when it cannot be rendered.

    Some SVGs reference external entities and only render with ``unsafe=True``; that is tried second (the files
    come from a signed Debian package, not from the network).
    """
    import cairosvg
    from PIL import Image

    data = Path(path).read_bytes()
    for unsafe in (False, True):
        try:
            png = cairosvg.svg2png(bytestring=data, unsafe=unsafe, parent_width=1024, parent_height=1024)
            image = Image.open(io.BytesIO(png))
            image.load()
            return image
        except Exception:  # cairosvg raises many kinds of errors on odd files; a failure is counted, not fatal
            continue
    return None


def _build_image(job):
    """Worker: read or render one source image and write the normalised PNG. Returns (id, ok)."""
    from PIL import Image

    pair_id, source_path, dest = job
    source_path = Path(source_path)
    try:
        if source_path.suffix.lower() == ".svg":
            image = render_svg(source_path)
        else:
            with Image.open(source_path) as opened:
                opened.load()
                image = opened.copy()
        if image is None:
            return pair_id, False
        image = _normalise_image(image, crop=image.mode in ("RGBA", "LA", "P", "PA"))
        if image is None:
            return pair_id, False
        with atomic_write(dest) as handle:
            image.save(handle, format="PNG", optimize=False)
        return pair_id, True
    except (OSError, ValueError, SyntaxError):  # unreadable image file: counted as a failure
        return pair_id, False


# ============================================================================================ packages

def _read_ar_members(path: Path) -> dict[str, bytes]:
    """The members of a Debian ``.deb`` (a Unix ``ar`` archive): name → bytes. Pure Python, no dpkg needed."""
    members = {}
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not a .deb (ar) archive: fetch the package again.")
        while header := handle.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            members[name] = handle.read(size)
            if size % 2:
                handle.read(1)  # ar pads members to an even offset
    return members


def _deb_data_tar(path: Path, name: str) -> tarfile.TarFile:
    members = _read_ar_members(path)
    for member, data in members.items():
        if member.startswith(name + ".tar"):
            return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    raise ValueError(f"{path} holds no {name}.tar.* member (found {sorted(members)}).")


def deb_version(path: str | os.PathLike) -> str:
    """The ``Version:`` field of a ``.deb``'s control file."""
    with _deb_data_tar(Path(path), "control") as control:
        for member in control.getmembers():
            if member.name in ("./control", "control"):
                text = control.extractfile(member).read().decode("utf-8", "replace")
                match = re.search(r"^Version:\s*(\S+)", text, re.M)
                if match:
                    return match.group(1)
    raise ValueError(f"{path}: no Version field in its control file.")


def _safe_extract(archive: tarfile.TarFile, dest: Path, keep=lambda name: True) -> None:
    """Extract regular files and folders only (no links, no absolute or ``..`` paths) into ``dest``."""
    for member in archive:
        name = member.name[2:] if member.name.startswith("./") else member.name
        if not name or not (member.isfile() or member.isdir()) or not keep(name):
            continue
        target = (dest / name).resolve()
        if dest.resolve() not in target.parents and target != dest.resolve():
            raise ValueError(f"archive member {member.name!r} would land outside {dest}: refusing to extract it.")
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.extractfile(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)


# Files the suite reads from each package; everything else (Tux Paint's 5,700 sound files) stays packed.
_UNPACK_FILTERS = {
    "tuxpaint-stamps-default": lambda n: n.endswith((".png", ".svg", ".txt")) or n.endswith("/copyright"),
    "openclipart-svg": lambda n: n.endswith(".svg") or n.endswith("/copyright"),
    "dataset-fashion-mnist": lambda n: n.endswith(".gz") or n.endswith("/copyright"),
    "emoji-datasource-google": lambda n: ("/img/google/64/" in n or n.endswith((".json", "LICENSE", "README.md"))),
}


def unpack_package(package_file: str | os.PathLike, artifact_id: str, dest: Path | None = None) -> Path:
    """Unpack a fetched ``.deb`` or npm ``.tgz`` into ``cache_dir()/sources/<artifact_id>/`` (nothing system-wide).

    Unpacked into a temp folder and renamed into place, with ``.unpacked.json`` (file name, version) written
    last; a folder with a matching marker is reused as is. Returns the folder.
    """
    package_file = Path(package_file)
    dest = Path(dest) if dest is not None else cache_dir() / "sources" / artifact_id
    marker = dest / ".unpacked.json"
    if marker.exists():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(marker.read_text())["file"] == package_file.name:
                return dest
    keep = _UNPACK_FILTERS.get(artifact_id, lambda name: True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{artifact_id}.", dir=dest.parent))
    try:
        if package_file.suffix == ".deb":
            version = deb_version(package_file)
            with _deb_data_tar(package_file, "data") as archive:
                _safe_extract(archive, tmp, keep)
        elif package_file.name.endswith((".tgz", ".tar.gz")):
            with tarfile.open(package_file, mode="r:gz") as archive:
                _safe_extract(archive, tmp, keep)
            package_json = tmp / "package" / "package.json"
            version = json.loads(package_json.read_text())["version"] if package_json.exists() else "unknown"
        else:
            raise ValueError(f"package_file={str(package_file)!r}: expected a .deb or an npm .tgz.")
        with atomic_write(tmp / ".unpacked.json", "w") as handle:
            json.dump({"file": package_file.name, "version": version}, handle)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def package_source(artifact_id: str, packages: dict | None = None) -> Path:
    """The unpacked folder of a package: from ``packages[artifact_id]`` (a local .deb/.tgz) or ``fetch``."""
    if packages and artifact_id in packages:
        package_file = Path(packages[artifact_id])
    else:
        from .download import fetch, load_manifest

        # Already unpacked from the file the manifest names: no need to ask fetch (which re-checks the download).
        unpacked = cache_dir() / "sources" / artifact_id
        with contextlib.suppress(OSError, ValueError, KeyError):
            names = {spec["name"] for spec in load_manifest()[artifact_id]["files"]}
            if json.loads((unpacked / ".unpacked.json").read_text())["file"] in names:
                return unpacked
        folder = fetch(artifact_id)
        files = sorted(p for p in folder.iterdir() if p.name.endswith((".deb", ".tgz", ".tar.gz")))
        if len(files) != 1:
            raise ValueError(f"fetch({artifact_id!r}) gave {folder} holding {len(files)} package files; expected one.")
        package_file = files[0]
    return unpack_package(package_file, artifact_id)


def _source_version(folder: Path) -> str:
    return json.loads((folder / ".unpacked.json").read_text())["version"]


# ============================================================================================ Tux Paint

def tuxpaint_stamps(root: str | os.PathLike) -> list[dict]:
    """The Tux Paint stamps under an unpacked package (or a ``stamps/`` folder): one dict per captioned image.

    Keys: ``id`` (``tuxpaint/<path without suffix>``), ``caption``, ``path``, ``category``. Sorted by id.
    """
    root = Path(root)
    stamps = root if root.name == "stamps" else root / "usr" / "share" / "tuxpaint" / "stamps"
    if not stamps.is_dir():
        raise ValueError(f"no Tux Paint stamps folder under {root}: expected usr/share/tuxpaint/stamps.")
    found = []
    for txt in sorted(stamps.rglob("*.txt")):
        rel = txt.relative_to(stamps)
        if rel.parts[0] == "symbols" or len(rel.parts) < 2:
            continue
        image = next((txt.with_suffix(s) for s in (".png", ".svg") if txt.with_suffix(s).is_file()), None)
        if image is None:
            continue
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        caption = lines[0].strip() if lines else ""
        if not caption:
            continue
        found.append({"id": "tuxpaint/" + rel.with_suffix("").as_posix(), "caption": caption,
                      "path": image, "category": rel.parts[0]})
    return found


def _stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def heldout_split(stamps: list[dict]) -> tuple[set[str], list[str], set[str]]:
    """Split Tux Paint stamps into anchors and held-out pairs (rule in the module docstring).

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
    for category, keys in by_category.items():
        keys.sort(key=lambda k: _stable_hash("asif-heldout:" + k))
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


# ============================================================================================ OpenClipart

_TITLE_NOISE = re.compile(
    r"gramastar|^part of the|collection|clip\s*art|theme\b|\bicons?\b|iconset|sibmission|submission"
    r"|^r\d+\b|openclipart|^svg\b|symbol_signs|^untitled|^drawing\b|^image\b|^layer\b",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class _Vocabulary:
    words: frozenset

    def __contains__(self, word: str) -> bool:
        # Webster's lists few plural forms: "scissors" yes, "clouds" no.
        return word in self.words or (word.endswith("s") and word[:-1] in self.words)


_VOCABULARY: _Vocabulary | None = None


def english_vocabulary() -> _Vocabulary:
    """Offline English word list (PyPI ``english-words``: Webster's 2nd + GCIDE), lower-case, letters only."""
    global _VOCABULARY
    if _VOCABULARY is None:
        from english_words import get_english_words_set

        _VOCABULARY = _Vocabulary(frozenset(get_english_words_set(["web2", "gcide"], lower=True, alpha=True)))
    return _VOCABULARY


def clean_title(title: str | None) -> str:
    """Turn an OpenClipart title into a caption: unescape, split camelCase and ``_``/``-``, drop trailing
    numbers ("Aircraft3" → "aircraft"), spell out "(b and w)", collapse spaces, lower-case."""
    text = html.unescape(html.unescape(title or ""))
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    text = re.sub(r"([A-Za-z])(\d)", r"\1 \2", text)
    text = re.sub(r"[_\-#*~|/\\]+", " ", text)
    text = re.sub(r"\(?\b(b\s*(and|&)\s*w|bw)\b\)?", "black and white", text, flags=re.IGNORECASE)
    text = re.sub(r"(\s+\d+)+\s*$", "", text.strip())  # "jigsaw red 10" → "jigsaw red"
    return re.sub(r"\s+", " ", text).strip().lower()


def keep_title(title: str | None, vocabulary=None) -> str | None:
    """The cleaned caption of an OpenClipart title, or ``None`` when the title is noise.

    Noise: empty; a collection tag ("gramastar", "Part of the Flat Icon Collection …", "Clipart by …",
    "Lemon SVG theme", "Etiquette Icons", "Openclipart", …); a single word that is not in the English
    vocabulary (``english_vocabulary()``; "pantyhose10" → "pantyhose" fails, "hammer" passes).
    """
    if not title or not title.strip() or _TITLE_NOISE.search(title):
        return None
    caption = clean_title(title)
    words = re.findall(r"[a-z']+", caption)
    if not words:
        return None
    if len(words) == 1 and words[0] not in (vocabulary if vocabulary is not None else english_vocabulary()):
        return None
    return caption


def filter_titles(items, max_repeats: int = MAX_TITLE_REPEATS, vocabulary=None) -> list[tuple[str, str]]:
    """``[(id, raw title), ...]`` → ``[(id, caption), ...]``: noise dropped (``keep_title``) and at most
    ``max_repeats`` items per caption kept (the first ones, in the given order)."""
    seen: Counter = Counter()
    kept = []
    for item_id, title in items:
        caption = keep_title(title, vocabulary)
        if caption is None:
            continue
        seen[caption] += 1
        if seen[caption] <= max_repeats:
            kept.append((item_id, caption))
    return kept


_DC = "{http://purl.org/dc/elements/1.1/}"


def svg_title(path: str | os.PathLike) -> str | None:
    """The work's title of an SVG: ``dc:title`` inside ``cc:Work`` (not the author's), else ``<title>``."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    for work in root.iter("{http://web.resource.org/cc/}Work"):
        node = work.find(_DC + "title")
        if node is not None:
            return (node.text or "").strip()
    node = root.find("{http://www.w3.org/2000/svg}title")
    return (node.text or "").strip() if node is not None else None


def openclipart_items(root: str | os.PathLike) -> list[dict]:
    """Filtered OpenClipart drawings under an unpacked package: dicts with ``id``, ``caption``, ``path``,
    ``category`` (first folder). Symlinked duplicates inside the package are skipped. Sorted by id."""
    root = Path(root)
    svg_root = root / "usr" / "share" / "openclipart" / "svg"
    if not svg_root.is_dir():
        raise ValueError(f"no OpenClipart svg folder under {root}: expected usr/share/openclipart/svg.")
    paths = {}
    for folder, _, files in os.walk(svg_root):
        for name in files:
            path = Path(folder) / name
            if name.endswith(".svg") and not path.is_symlink():
                paths["openclipart/" + path.relative_to(svg_root).with_suffix("").as_posix()] = path
    ordered = sorted(paths)
    kept = filter_titles((item_id, svg_title(paths[item_id])) for item_id in ordered)
    return [{"id": item_id, "caption": caption, "path": paths[item_id],
             "category": item_id.split("/")[1]} for item_id, caption in kept]


# ============================================================================================ emoji

def emoji_items(root: str | os.PathLike) -> list[dict]:
    """Emoji from an unpacked ``emoji-datasource-google``: caption = Unicode name lower-cased (``short_name``
    with spaces when the name is empty); category "Component" dropped; only top-level entries (skin-tone
    variants live in ``skin_variations`` and never enter). Sorted by id."""
    root = Path(root)
    package = root / "package" if (root / "package").is_dir() else root
    entries = json.loads((package / "emoji.json").read_text(encoding="utf-8"))
    images = package / "img" / "google" / "64"
    found = []
    for entry in entries:
        if entry.get("category") == "Component" or not entry.get("has_img_google", True):
            continue
        path = images / entry["image"]
        caption = (entry.get("name") or (entry.get("short_name") or "").replace("_", " ")).strip().lower()
        if caption and path.is_file():
            found.append({"id": "emoji/" + entry["unified"].lower(), "caption": caption, "path": path,
                          "category": entry.get("category")})
    return sorted(found, key=lambda item: item["id"])


# ============================================================================================ the demo build

def demo_dir() -> Path:
    return cache_dir() / "collections" / "demo"


def _demo_is_current(folder: Path) -> bool:
    meta = folder / "meta.json"
    if not (meta.exists() and (folder / "pairs.jsonl").exists()):
        return False
    with contextlib.suppress(ValueError, OSError, KeyError):
        return json.loads(meta.read_text())["builder_version"] == BUILDER_VERSION
    return False


def build_demo(packages: dict | None = None, workers: int | None = None, progress: bool = True,
               force: bool = False) -> Path:
    """Build the demo collection into ``cache_dir()/collections/demo/`` and return that folder.

    ``packages`` maps manifest ids to local package files (else ``fetch`` is used). The build happens in a
    temp folder: images first, then ``pairs.jsonl`` (every pair, with its ``split``: anchor / heldout) and
    ``meta.json`` (sources, versions, licences, counts, build date, builder version), and only then is the
    folder renamed into place, so a half-built collection is never seen. A current build is reused.
    """
    final = demo_dir()
    if not force and _demo_is_current(final):
        return final
    say = print if progress else (lambda *a, **k: None)
    folders = {source: package_source(artifact, packages) for source, artifact in DEMO_PACKAGES.items()}

    stamps = tuxpaint_stamps(folders["tuxpaint"])
    anchors, heldout, unused = heldout_split(stamps)
    heldout_set = set(heldout)
    items = []
    for stamp in stamps:
        if stamp["id"] in unused:
            continue
        items.append({**stamp, "source": "tuxpaint", "split": "heldout" if stamp["id"] in heldout_set else "anchor"})
    for source, reader in (("openclipart", openclipart_items), ("emoji", emoji_items)):
        items += [{**item, "source": source, "split": "anchor"} for item in reader(folders[source])]

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo.", dir=final.parent))
    try:
        jobs = [(item["id"], str(item["path"]), str(tmp / "images" / (item["id"].replace("/", "__") + ".png")))
                for item in items]
        workers = workers or min(4, os.cpu_count() or 1)
        start = time.time()
        with ProcessPoolExecutor(max_workers=workers) as pool:
            ok = dict(pool.map(_build_image, jobs, chunksize=32))
        say(f"demo: {sum(ok.values())} images written, {len(ok) - sum(ok.values())} failed, {time.time() - start:.0f} s")
        failed = Counter(item["source"] for item in items if not ok[item["id"]])
        items = [item for item in items if ok[item["id"]]]

        # Anchors in a fixed pseudo-random order (sha256 of the id): any prefix mixes the three sources.
        order = {"anchor": 0, "heldout": 1}
        items.sort(key=lambda item: (order[item["split"]], _stable_hash("asif-demo-order:" + item["id"])
                                     if item["split"] == "anchor" else item["id"]))
        sources = []
        for source, info in _SOURCE_INFO.items():
            sources.append({**info, "source": source, "version": _source_version(folders[source]),
                            "count": sum(1 for i in items if i["source"] == source and i["split"] == "anchor"),
                            "failed_to_render": failed.get(source, 0)})
        with atomic_write(tmp / "pairs.jsonl", "w") as handle:
            for item in items:
                record = {"id": item["id"], "caption": item["caption"],
                          "image": "images/" + item["id"].replace("/", "__") + ".png",
                          "source": item["source"], "licence": _SOURCE_INFO[item["source"]]["licence"],
                          "category": item["category"], "split": item["split"]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        split = {"rule": "Tux Paint captions grouped; per category the groups with the smallest "
                         "sha256('asif-heldout:'+caption) are held out: max(2, round(0.2*groups)), at most all but one",
                 "heldout": sum(1 for i in items if i["split"] == "heldout"),
                 "unused_duplicates": len(unused), "fraction": HELDOUT_FRACTION}
        meta = {"name": "demo", "builder_version": BUILDER_VERSION, "image_size": IMAGE_SIZE,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sources": sources, "split": split,
                "anchors": sum(1 for i in items if i["split"] == "anchor")}
        with atomic_write(tmp / "meta.json", "w") as handle:
            json.dump(meta, handle, indent=1)
        if final.exists():
            old = final.with_name(f".demo.old.{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _read_demo(split: str, build: bool = True) -> tuple[list[Pair], dict]:
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


# ============================================================================================ folder:<path>

def load_folder(path: str | os.PathLike) -> Collection:
    """Your own pairs from a folder; see the module docstring for the layouts. Every problem is a
    ``ValueError`` naming the file and the fix (missing or unreadable image, empty caption, duplicate id,
    no captions found)."""
    from PIL import Image

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"folder:{path}: no such folder. Pass folder:<a folder of images with captions>.")
    records: list[tuple[str, str, Path, str]] = []  # (id, caption, image, where-from)
    csv_file, jsonl_file = folder / "captions.csv", folder / "captions.jsonl"
    if csv_file.exists() and jsonl_file.exists():
        raise ValueError(f"{folder} has both captions.csv and captions.jsonl: keep one of them.")
    if csv_file.exists() or jsonl_file.exists():
        rows = []
        if csv_file.exists():
            with open(csv_file, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
                    raise ValueError(f"{csv_file}: the header must name the columns image,caption[,id] "
                                     f"(found {reader.fieldnames}).")
                rows = [(f"{csv_file.name} line {i + 2}", row) for i, row in enumerate(reader)]
        else:
            with open(jsonl_file, encoding="utf-8") as handle:
                for i, line in enumerate(handle):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{jsonl_file} line {i + 1} is not JSON ({err}): one object per line.") from None
                    if not isinstance(row, dict) or "image" not in row or "caption" not in row:
                        raise ValueError(f"{jsonl_file} line {i + 1}: each line needs the keys image and caption.")
                    rows.append((f"{jsonl_file.name} line {i + 1}", row))
        for where, row in rows:
            image = folder / str(row["image"] or "").strip()
            caption = str(row.get("caption") or "").strip()
            item_id = str(row.get("id") or "").strip() or str(row["image"]).strip()
            records.append((item_id, caption, image, where))
    else:
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            txt = image.with_suffix(".txt")
            if not txt.exists():
                continue
            lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
            records.append((image.stem, lines[0].strip() if lines else "", image, txt.name))
    if not records:
        raise ValueError(f"no captions found in {folder}: add captions.csv (columns image,caption[,id]), "
                         f"captions.jsonl, or a .txt with the caption beside each image.")
    seen: dict[str, str] = {}
    pairs = []
    for item_id, caption, image, where in records:
        if not caption:
            raise ValueError(f"{where}: the caption of {image.name} is empty: write a caption.")
        if item_id in seen:
            raise ValueError(f"{where}: duplicate id {item_id!r} (also at {seen[item_id]}): ids must be unique.")
        seen[item_id] = where
        if not image.is_file():
            raise ValueError(f"{where}: image {image} is missing: fix the path (relative to {folder}).")
        try:
            with Image.open(image) as opened:
                opened.verify()
        except Exception as err:  # PIL raises several kinds on a broken file
            raise ValueError(f"{where}: image {image} is unreadable ({type(err).__name__}): replace the file.") from None
        pairs.append(Pair(item_id, caption, image, f"folder:{folder}", "user-provided", None))
    return Collection(f"folder:{folder}", pairs, [{"source": "folder", "path": str(folder), "count": len(pairs),
                                                   "licence": "user-provided"}])


# ============================================================================================ load_collection

def load_collection(name: str = "demo", n_pairs: int | None = None) -> Collection:
    """The collection ``name`` (see ``list_collections()``), cut to its first ``n_pairs`` pairs.

    ``demo`` returns the anchors only (held-out Tux Paint pairs are never in it), building the collection on
    first use. ``cc3m`` / ``cc12m`` are streamed into anchor bundles instead (see the module docstring).
    """
    if n_pairs is not None and (isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs <= 0):
        raise ValueError(f"n_pairs={n_pairs!r}: pass a positive int, or None for the whole collection.")
    if not isinstance(name, str):
        raise ValueError(f"name={name!r}: pass a collection name, one of {list(COLLECTIONS)}.")
    if name in ("cc3m", "cc12m"):
        raise ValueError(
            f"{name} is streamed, never stored as image files: embed it into an anchor bundle with "
            f"`python -m asif_nb.embed {name} --image-encoder NAME --text-encoder NAME --n-pairs N` (or "
            f"asif_nb.embed_collection / asif_nb.load('paper')), then asif_nb.load_bundle(folder).collection.")
    if name == "demo":
        pairs, meta = _read_demo("anchor")
        collection = Collection("demo", pairs, meta["sources"], meta["split"])
    elif name.startswith("folder:"):
        collection = load_folder(name[len("folder:"):])
    else:
        raise ValueError(f"name={name!r} is not a collection: use one of {list(COLLECTIONS)}.")
    if n_pairs is not None:
        if n_pairs > len(collection):
            raise ValueError(f"n_pairs={n_pairs} but {name!r} holds {len(collection)} pairs: ask for at most that.")
        collection = collection[: int(n_pairs)]
    return collection


# ============================================================================================ evaluation sets

# CLIP's 7 best ImageNet templates (the ensemble the ASIF authors use); all are in CLIP_benchmark's 80.
IMAGENET_TEMPLATES = ["itap of a {c}.", "a bad photo of the {c}.", "a origami {c}.", "a photo of the large {c}.",
                      "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}."]
# The ASIF authors' Pets prompts and class names (noranta4/ASIF, embdatasets.py).
PETS_TEMPLATES = ["a type of pet {c}.", "a {c} texture.", "{c} , an animal."]
PETS_CLASSES = [
    "abyssinian cat", "american bulldog dog", "american pit bull terrier dog", "basset hound dog", "beagle dog",
    "bengal cat", "birman cat", "bombay cat", "boxer dog", "british shorthair cat", "chihuahua dog",
    "egyptian mau cat", "english cocker spaniel dog", "english setter dog", "german shorthaired dog",
    "great pyrenees dog", "havanese dog", "japanese chin dog", "keeshond dog", "leonberger dog", "maine coon cat",
    "miniature pinscher dog", "newfoundland dog", "persian cat", "pomeranian dog", "pug dog", "ragdoll cat",
    "russian blue cat", "saint bernard dog", "samoyed dog", "scottish terrier dog", "shiba inu dog", "siamese cat",
    "sphynx cat", "staffordshire bull terrier dog", "wheaten terrier dog", "yorkshire terrier dog"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
# CLIP_benchmark ships no Fashion-MNIST templates; these three are our choice (the images are grey drawings).
FASHION_MNIST_TEMPLATES = ["a photo of a {c}.", "a black and white photo of a {c}.", "a low resolution photo of a {c}."]
# Tux Paint categories are folder names; these prompts read naturally with them ("a picture of animals").
TUXPAINT_TEMPLATES = ["a picture of {c}.", "a photo of {c}.", "a drawing of {c}."]
_CLIP_BENCHMARK_KEYS = {"imagenet": "imagenet1k", "imagenet-v2": "imagenet1k", "imagenet-samples": "imagenet1k",
                        "cifar100": "cifar100", "pets": "pets", "fashion-mnist": "fashion_mnist"}


def _clip_benchmark_json(name: str) -> dict:
    """A JSON file shipped inside the installed ``clip_benchmark`` package (read as JSON, never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("clip_benchmark is not installed: pip install --no-deps clip-benchmark==1.6.2")
    return json.loads((Path(spec.submodule_search_locations[0]) / "datasets" / name).read_text(encoding="utf-8"))


def _imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k wnids in label order (shipped with timm, read as text)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed: pip install timm")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    return path.read_text().split()


def _names_from(value, eval_name: str, what: str) -> list[str] | None:
    """``classnames=`` / ``templates=``: a list, or a path to CLIP_benchmark-format JSON ({dataset: [...]})."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        try:
            document = json.loads(Path(value).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{what}={str(value)!r} could not be read as JSON ({err}).") from None
        if isinstance(document, dict):
            key = _CLIP_BENCHMARK_KEYS.get(eval_name, eval_name)
            if key in document:
                document = document[key]
            elif len(document) == 1:
                document = next(iter(document.values()))
            else:
                raise ValueError(f"{what}={str(value)!r} has no entry {key!r}: keys are {sorted(document)[:10]}…")
        value = document
    values = [str(v) for v in value]
    if what == "templates":
        values = [t.replace("{}", "{c}") for t in values]  # CLIP's notebooks write "{}"
        bad = [t for t in values if "{c}" not in t]
        if bad:
            raise ValueError(f"templates {bad[:3]} have no {{c}} placeholder for the class name.")
    if not values:
        raise ValueError(f"{what} is empty.")
    return values


def _subset(n, total: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Indices of a deterministic subset: all when ``n`` is None; with labels, round-robin over classes
    (each class's first items first), so any ``n`` is as balanced as it can be."""
    if n is None:
        return np.arange(total)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n={n!r}: pass a positive int, or None for the whole set.")
    if n > total:
        raise ValueError(f"n={n} but the set holds {total} images.")
    if labels is None:
        return np.arange(n)
    rank = np.zeros(total, dtype=np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    order = np.lexsort((labels, rank))
    return np.sort(order[:n])


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST-style idx file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist(n, invert: bool = True, root=None, packages=None) -> EvalSet:
    from PIL import Image

    base = Path(root) if root is not None else package_source(FASHION_MNIST_PACKAGE, packages)
    found = list(base.rglob("t10k-images-idx3-ubyte*"))
    labels_file = list(base.rglob("t10k-labels-idx1-ubyte*"))
    if not found or not labels_file:
        raise ValueError(f"no Fashion-MNIST test files (t10k-*-ubyte[.gz]) under {base}.")
    pixels, labels = _read_idx(found[0]), _read_idx(labels_file[0]).astype(np.int64)
    keep = _subset(n, len(labels), labels)
    if invert:
        pixels = 255 - pixels  # the anchors are dark drawings on white; Fashion-MNIST is white on black
    images = [Image.fromarray(pixels[i]).convert("RGB") for i in keep]
    return EvalSet("fashion-mnist", "classification", images, labels[keep], list(FASHION_MNIST_CLASSES),
                   list(FASHION_MNIST_TEMPLATES), ids=[f"fashion-mnist/test/{i}" for i in keep],
                   source="Debian dataset-fashion-mnist (Zalando Research)", licence="MIT")


def _imagenet_samples(n) -> EvalSet:
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("foolbox is not installed: pip install --no-deps foolbox==3.3.4")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    files = sorted(folder.glob("imagenet_*_*.jpg"))
    if not files:
        raise ValueError(f"no imagenet_*.jpg samples in {folder}.")
    keep = _subset(n, len(files))
    files = [files[i] for i in keep]
    labels = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files], dtype=np.int64)
    return EvalSet("imagenet-samples", "classification", files, labels, _clip_benchmark_json("en_classnames.json")["imagenet1k"],
                   list(IMAGENET_TEMPLATES), ids=[f.stem for f in files], source="PyPI foolbox 3.3.4 samples", licence="MIT (foolbox); ImageNet terms")


def _tuxpaint_heldout(n) -> EvalSet:
    pairs, meta = _read_demo("heldout")
    categories = sorted({p.category for p in pairs})
    keep = _subset(n, len(pairs))
    pairs = [pairs[i] for i in keep]
    labels = np.array([categories.index(p.category) for p in pairs], dtype=np.int64)
    return EvalSet("tuxpaint-heldout", "retrieval", [p.image for p in pairs], labels, categories,
                   list(TUXPAINT_TEMPLATES), captions=[p.caption for p in pairs], ids=[p.id for p in pairs],
                   source="Debian tuxpaint-stamps-default, held-out split", licence="GPL-2")


def _image_folder(folder: Path, class_dirs: list[str]) -> tuple[list[Path], np.ndarray]:
    """Images under ``folder/<class_dir>/`` in sorted order (torchvision ImageFolder's order); label = index."""
    index = {name: i for i, name in enumerate(class_dirs)}
    files, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in index:
            raise ValueError(f"{sub} is not a known class folder: expected names like {class_dirs[0]!r}.")
        for file in sorted(sub.iterdir()):
            if file.suffix.lower() in (".jpeg", ".jpg", ".png"):
                files.append(file)
                labels.append(index[sub.name])
    if not files:
        raise ValueError(f"no images found under {folder}/<class>/.")
    return files, np.array(labels, dtype=np.int64)


_IMAGENET_HELP = ("ImageNet cannot be downloaded automatically (its licence needs a sign-up at image-net.org). "
                  "Download ILSVRC2012_img_val.tar, sort it into one folder per wnid (val/n01440764/*.JPEG, as "
                  "torchvision's ImageNet(split='val') does), then pass root=<that folder> or set IMAGENET_DIR.")


def _imagenet(n, split, root) -> EvalSet:
    root = root or os.environ.get("IMAGENET_DIR")
    if not root:
        raise FileNotFoundError(_IMAGENET_HELP)
    folder = Path(root).expanduser()
    if (folder / "val").is_dir():
        folder = folder / "val"
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet folder {folder} does not exist. {_IMAGENET_HELP}")
    files, labels = _image_folder(folder, _imagenet_wnids())
    # The authors' halves: torch.randperm(50_000, seed 42); val = the first half, test = the second.
    import torch

    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(42)).numpy()
    half = len(files) // 2
    if split == "val":
        chosen = perm[:half]
    elif split == "test":
        chosen = perm[half:]
    elif split == "all":
        chosen = np.arange(len(files))
    else:
        raise ValueError(f"split={split!r}: use 'val', 'test' or 'all' for imagenet.")
    chosen = chosen[_subset(n, len(chosen))]
    return EvalSet(f"imagenet-{split}", "classification", [files[i] for i in chosen], labels[chosen],
                   _clip_benchmark_json("en_classnames.json")["imagenet1k"], list(IMAGENET_TEMPLATES),
                   ids=[files[i].stem for i in chosen], source=f"ImageNet val, {folder}", licence="ImageNet terms")


IMAGENET_V2_URL = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz"


def _imagenet_v2(n, root, download) -> EvalSet:
    root = root or os.environ.get("IMAGENET_V2_DIR")
    if not root and not download:
        raise FileNotFoundError(
            f"ImageNetV2 is not here: download {IMAGENET_V2_URL}, unpack it (folders 0…999, one per class) and pass "
            f"root=<the imagenetv2-matched-frequency-format-val folder> or set IMAGENET_V2_DIR, or use download=True.")
    if not root:
        from .download import fetch_file

        unpacked = cache_dir() / "sources" / "imagenet-v2"
        if not (unpacked / ".unpacked.json").exists():
            archive_file = fetch_file("imagenet-v2")
            tmp = Path(tempfile.mkdtemp(prefix=".imagenet-v2.", dir=unpacked.parent))
            try:
                with tarfile.open(archive_file, mode="r:gz") as archive:
                    _safe_extract(archive, tmp)
                with atomic_write(tmp / ".unpacked.json", "w") as handle:
                    json.dump({"file": archive_file.name, "version": "matched-frequency"}, handle)
                shutil.rmtree(unpacked, ignore_errors=True)
                os.replace(tmp, unpacked)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        root = next(p for p in unpacked.iterdir() if p.is_dir())
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNetV2 folder {folder} does not exist.")
    files, labels = _image_folder(folder, [str(i) for i in range(1000)])
    keep = _subset(n, len(files), labels)
    return EvalSet("imagenet-v2", "classification", [files[i] for i in keep], labels[keep],
                   _clip_benchmark_json("en_classnames.json")["imagenet1k"], list(IMAGENET_TEMPLATES),
                   ids=[files[i].stem for i in keep], source=f"ImageNetV2 matched-frequency, {folder}", licence="MIT")


def _cifar100(n, root, download) -> EvalSet:
    from PIL import Image
    from torchvision.datasets import CIFAR100

    root = Path(root) if root else cache_dir() / "evals" / "cifar100"
    if download and not (root / "cifar-100-python").is_dir():
        from .download import fetch

        fetch("cifar100", dest=root)  # the verified downloader; torchvision then finds the archive and unpacks it
    dataset = CIFAR100(root=str(root), train=False, download=download)
    labels = np.asarray(dataset.targets, dtype=np.int64)
    keep = _subset(n, len(labels), labels)
    images = [Image.fromarray(dataset.data[i]) for i in keep]
    return EvalSet("cifar100", "classification", images, labels[keep],
                   [c.replace("_", " ") for c in dataset.classes], _clip_benchmark_json(
                       "en_zeroshot_classification_templates.json")["cifar100"],
                   ids=[f"cifar100/test/{i}" for i in keep], source="CIFAR-100 test (torchvision)", licence="CIFAR terms")


def _pets(n, root, download) -> EvalSet:
    from torchvision.datasets import OxfordIIITPet

    root = Path(root) if root else cache_dir() / "evals" / "pets"
    if download and not (root / "oxford-iiit-pet" / "images").is_dir():
        from .download import fetch

        fetch("oxford-pets", dest=root / "oxford-iiit-pet")  # verified; torchvision then unpacks the archives
    dataset = OxfordIIITPet(root=str(root), split="test", download=download)
    files = [Path(p) for p in dataset._images]
    labels = np.asarray(dataset._labels, dtype=np.int64)
    keep = _subset(n, len(files), labels)
    return EvalSet("pets", "classification", [files[i] for i in keep], labels[keep], list(PETS_CLASSES),
                   list(PETS_TEMPLATES), ids=[files[i].stem for i in keep],
                   source="Oxford-IIIT Pets test (torchvision)", licence="CC BY-SA 4.0")


def load_eval(name: str, n: int | None = None, split: str = "test", *, root=None, invert: bool = True,
              classnames=None, templates=None, download: bool = True, packages: dict | None = None) -> EvalSet:
    """The evaluation set ``name`` (see ``list_evals()``).

    ``n`` takes a deterministic subset (class-balanced round-robin where labels are known beforehand, else
    the first ``n``). ``split`` matters for ``imagenet`` only: "val" / "test" = the authors' halves of a
    seeded permutation (torch seed 42) of the val images, "all" = every image. ``root`` points at a local
    copy (ImageNet, ImageNetV2, or where torchvision downloads CIFAR-100 / Pets). ``invert`` (Fashion-MNIST)
    turns its white-on-black images dark-on-white like the anchors (default True). ``classnames`` /
    ``templates`` replace the defaults: a list, or a CLIP_benchmark-format JSON path.
    """
    if name == "fashion-mnist":
        evalset = _fashion_mnist(n, invert=invert, root=root, packages=packages)
    elif name == "imagenet-samples":
        evalset = _imagenet_samples(n)
    elif name == "tuxpaint-heldout":
        evalset = _tuxpaint_heldout(n)
    elif name == "imagenet":
        evalset = _imagenet(n, split, root)
    elif name == "imagenet-v2":
        evalset = _imagenet_v2(n, root, download)
    elif name == "cifar100":
        evalset = _cifar100(n, root, download)
    elif name == "pets":
        evalset = _pets(n, root, download)
    else:
        raise ValueError(f"name={name!r} is not an evaluation set: use one of {list(EVALS)}.")
    names = _names_from(classnames, name, "classnames")
    if names is not None:
        if len(names) != len(evalset.class_names):
            raise ValueError(f"classnames has {len(names)} names but {name} has {len(evalset.class_names)} classes.")
        evalset.class_names = names
    evalset.templates = _names_from(templates, name, "templates") or evalset.templates
    return evalset


# ============================================================================================ prepare

def prepare(name: str = "demo", packages: dict | None = None, progress: bool = True) -> dict:
    """Fetch and unpack the demo packages, build the demo collection, check the demo eval sets load.
    Idempotent: a warm cache costs about a second. Returns counts per source and the seconds taken."""
    if name != "demo":
        raise ValueError(f"name={name!r}: only 'demo' is prepared offline; paper-profile data is fetched on use.")
    start = time.time()
    build_demo(packages=packages, progress=progress)
    anchors = load_collection("demo")
    heldout = load_eval("tuxpaint-heldout")
    fashion = load_eval("fashion-mnist", packages=packages)
    samples = load_eval("imagenet-samples")
    counts = dict(Counter(pair.source for pair in anchors.pairs))
    report = {"anchors": len(anchors), "per_source": counts, "tuxpaint-heldout": len(heldout),
              "fashion-mnist": len(fashion), "imagenet-samples": len(samples), "seconds": round(time.time() - start, 1)}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asif_nb.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="fetch, unpack and build a profile's offline data")
    prep.add_argument("name", choices=["demo"])
    prep.add_argument("--package", action="append", default=[], metavar="ID=FILE",
                      help="use a local package file instead of fetching it (repeatable)")
    args = parser.parse_args(argv)
    packages = dict(item.split("=", 1) for item in args.package)
    report = prepare(args.name, packages=packages or None)
    for source, count in report["per_source"].items():
        print(f"  {source:12s} {count:5d} anchor pairs")
    print(f"demo collection: {report['anchors']} anchors; eval sets: tuxpaint-heldout {report['tuxpaint-heldout']}, "
          f"fashion-mnist {report['fashion-mnist']}, imagenet-samples {report['imagenet-samples']}; "
          f"{report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
