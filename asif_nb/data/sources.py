"""The three sources of the demo collection, read from their unpacked packages: Tux Paint stamps (caption = the
``.txt`` beside each image), OpenClipart drawings (caption = the cleaned ``dc:title``, noise filtered) and Noto
emoji (caption = the Unicode name). Each reader returns dicts with ``id``, ``caption``, ``path``, ``category``,
sorted by id; the rules are spelled out in the package docstring (``asif_nb.data``)."""
from __future__ import annotations

import dataclasses
import html
import json
import os
import re
from collections import Counter
from pathlib import Path

MAX_TITLE_REPEATS = 3


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
