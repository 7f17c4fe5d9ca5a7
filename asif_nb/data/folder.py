"""``folder:<path>`` collections: your own image–caption pairs, checked before anything uses them.

Layouts (one per folder):

- ``captions.csv`` with a header naming ``image,caption`` (and optionally ``id``); a caption holding a comma is
  quoted (``"a cat, asleep"``), as every spreadsheet writes it;
- ``captions.jsonl``: one JSON object a line with string ``image`` and ``caption`` (``id``: a string or an int);
- no captions file: a ``.txt`` beside each image (``cat.png`` + ``cat.txt``), caption = its first line, id = the
  file stem, pairs in sorted file-name order. Every image needs its ``.txt`` and every ``.txt`` its image: a
  picture without a caption, or a caption without a picture, is an error listing the files (not a silent skip),
  so the collection is exactly the folder's pairs.

All text is UTF-8. Every problem is a ``ValueError`` naming the file (and line) and the fix; the folder is only
read, never changed.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from .records import Collection, Pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
_SHOWN = 5  # how many offending files an error lists by name


def _read_utf8(path: Path, strip_bom: bool = False) -> str:
    """The file's text; a file that is not UTF-8 is a ``ValueError`` naming its line and the fix."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig" if strip_bom else "utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ValueError(f"{path} is not UTF-8 text (byte {raw[err.start]:#04x} on line {line}): save it as UTF-8 "
                         "(in a spreadsheet: CSV UTF-8; in an editor: encoding UTF-8).") from None


def _listed(paths: list[Path]) -> str:
    names = ", ".join(p.name for p in paths[:_SHOWN])
    return names + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def _csv_rows(csv_file: Path) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(_read_utf8(csv_file, strip_bom=True), newline=""))
    if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
        raise ValueError(f"{csv_file}: the header must name the columns image,caption[,id] "
                         f"(found {reader.fieldnames}).")
    rows = []
    for row in reader:
        where = f"{csv_file.name} line {reader.line_num}"
        if None in row:  # more fields than the header: an unquoted comma split a caption
            raise ValueError(f"{where} has more fields than the header {','.join(reader.fieldnames)}: put a caption "
                             f'that holds a comma in double quotes ("a cat, asleep").')
        rows.append((where, row))
    return rows


def _jsonl_rows(jsonl_file: Path) -> list[tuple[str, dict]]:
    rows = []
    for i, line in enumerate(_read_utf8(jsonl_file, strip_bom=True).splitlines()):
        if not line.strip():
            continue
        where = f"{jsonl_file.name} line {i + 1}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{jsonl_file} line {i + 1} is not JSON ({err}): one object per line.") from None
        if not isinstance(row, dict) or "image" not in row or "caption" not in row:
            raise ValueError(f"{jsonl_file} line {i + 1}: each line needs the keys image and caption.")
        for key, kinds in (("image", (str,)), ("caption", (str,)), ("id", (str, int, type(None)))):
            value = row.get(key)
            if not isinstance(value, kinds) or isinstance(value, bool):
                wanted = "a string or an int" if key == "id" else "a string"
                raise ValueError(f"{where}: {key} is {type(value).__name__} {json.dumps(value)[:60]}, not {wanted}: "
                                 f"write the {key} as {wanted} (one caption per image).")
        rows.append((where, {key: "" if row.get(key) is None else str(row[key]) for key in ("image", "caption", "id")}))
    return rows


def _txt_records(folder: Path) -> list[tuple[str, str, Path, str]]:
    """(id, caption, image, where) for a folder of images with a ``.txt`` each; orphans on either side refused."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    texts = [p for p in files if p.suffix.lower() == ".txt"]
    if not images and not texts:
        return []
    image_stems = {p.stem for p in images}
    uncaptioned = [p for p in images if not p.with_suffix(".txt").is_file()]
    orphans = [p for p in texts if p.stem not in image_stems]
    if uncaptioned or orphans:
        problems = []
        if uncaptioned:
            problems.append(f"{len(uncaptioned)} image(s) without a caption file ({_listed(uncaptioned)}): write "
                            f"<name>.txt beside each, or move them out of the folder")
        if orphans:
            problems.append(f"{len(orphans)} .txt file(s) without an image ({_listed(orphans)}): add the image "
                            f"(same name, one of {', '.join(IMAGE_SUFFIXES)}) or move the file out of the folder")
        raise ValueError(f"{folder}: {'; '.join(problems)}. Every image needs its caption and every caption its "
                         "image (or list the pairs in captions.csv).")
    records = []
    for image in images:
        txt = image.with_suffix(".txt")
        lines = _read_utf8(txt).splitlines()
        records.append((image.stem, lines[0].strip() if lines else "", image, txt.name))
    return records


def load_folder(path: str | os.PathLike) -> Collection:
    """Your own pairs from a folder (layouts in this module's docstring). Every problem is a ``ValueError``
    naming the file and the fix: a missing, unreadable or uncaptioned image, a caption without an image, an
    empty or non-string caption, a duplicate id, a file that is not UTF-8, no captions at all."""
    from PIL import Image

    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ValueError(f"folder:{path!s}: no folder named. Pass folder:<path to a folder of images with captions> "
                         "(folder:. for the current folder).")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"folder:{path}: no such folder. Pass folder:<a folder of images with captions>.")
    csv_file, jsonl_file = folder / "captions.csv", folder / "captions.jsonl"
    if csv_file.exists() and jsonl_file.exists():
        raise ValueError(f"{folder} has both captions.csv and captions.jsonl: keep one of them.")
    if csv_file.exists() or jsonl_file.exists():
        rows = _csv_rows(csv_file) if csv_file.exists() else _jsonl_rows(jsonl_file)
        records = []
        for where, row in rows:
            image = folder / (row["image"] or "").strip()
            caption = (row.get("caption") or "").strip()
            item_id = (row.get("id") or "").strip() or (row["image"] or "").strip()
            records.append((item_id, caption, image, where))
    else:
        records = _txt_records(folder)
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
        except Exception as err:  # noqa: BLE001 - PIL raises several kinds on a broken file
            raise ValueError(f"{where}: image {image} is unreadable ({type(err).__name__}): replace the file.") from None
        pairs.append(Pair(item_id, caption, image, f"folder:{folder}", "user-provided", None))
    return Collection(f"folder:{folder}", pairs, [{"source": "folder", "path": str(folder), "count": len(pairs),
                                                   "licence": "user-provided"}])
