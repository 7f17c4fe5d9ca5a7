"""The demo's images: SVGs are rendered in cairosvg's safe mode only, and one bad source file (a decompression
bomb, an SVG that crashes cairosvg or asks for a giant canvas, a gzip bomb) is counted and skipped, never fatal."""
from __future__ import annotations

import gzip
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from asif_nb import data
from asif_nb.data import load_collection

STAMPS = "usr/share/tuxpaint/stamps/"
OPENCLIPART = "usr/share/openclipart/svg/"
ENTITY = b'<?xml version="1.0"?>\n<!DOCTYPE svg [ <!ENTITY ns_svg "http://www.w3.org/2000/svg"> ]>\n'


def red_png(path):
    Image.new("RGB", (50, 50), (255, 0, 0)).save(path)
    return path


def covering_image(href: str) -> bytes:
    return f'<image x="0" y="0" width="100" height="80" xlink:href="{href}"/>'.encode()


def bomb_png(width=20_000, height=20_000) -> bytes:
    """A valid 1 x 1 PNG whose header claims ``width x height`` pixels: PIL refuses it as a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    raw = bytearray(buffer.getvalue())
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def red_pixels(image) -> int:
    r, g, b, a = np.asarray(image.convert("RGBA"), dtype=np.int32).transpose(2, 0, 1)
    return int(((a > 0) & (r > 200) & (g < 50) & (b < 50)).sum())


def test_an_svg_that_needs_unsafe_mode_is_not_rendered(tmp_path, svg_bytes):
    secret = red_png(tmp_path / "secret.png")
    # An XML entity makes the safe parser refuse the file; cairosvg's unsafe mode would accept it and then read
    # the local file it links to into the pixels.
    path = tmp_path / "entity.svg"
    path.write_bytes(svg_bytes(b"cat", covering_image(secret.as_uri()), prolog=ENTITY))
    assert data.render_svg(path) is None
    with pytest.raises(data.RenderError, match="cannot be rendered safely: EntitiesForbidden"):
        data.render_svg(path, errors="raise")


def test_an_svg_never_puts_a_local_file_into_its_pixels(tmp_path, svg_bytes):
    secret = red_png(tmp_path / "secret.png")
    for href in (secret.as_uri(), "secret.png", str(secret)):
        path = tmp_path / "link.svg"
        path.write_bytes(svg_bytes(b"cat", covering_image(href)))
        image = data.render_svg(path)
        assert image is not None and red_pixels(image) == 0, href


def test_a_giant_canvas_or_a_gzip_bomb_is_refused_before_memory_is_taken(tmp_path, svg_bytes):
    giant = tmp_path / "giant.svg"
    giant.write_bytes(svg_bytes(b"map", size=b'width="100000" height="100000"'))
    with pytest.raises(data.RenderError, match="100000 x 100000 px canvas"):
        data.render_svg(giant, errors="raise")
    bomb = tmp_path / "bomb.svg"
    bomb.write_bytes(gzip.compress(svg_bytes(b"map", b" " * (data.MAX_SVG_BYTES + 1))))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(data.RenderError, match="holds more than 32 MiB of SVG"):
        data.render_svg(bomb, errors="raise")
    ok = tmp_path / "ok.svgz"
    ok.write_bytes(gzip.compress(svg_bytes(b"map")))
    assert data.render_svg(ok).size == (100, 80)


def test_one_bad_source_file_is_counted_and_skipped_never_fatal(temp_cache, make_packages, svg_bytes):
    loop = b'<use id="a" xlink:href="#a"/>'  # cairosvg recurses until RecursionError
    packages = make_packages(
        tuxpaint={f"{STAMPS}animals/sub/bomb.png": bomb_png(), f"{STAMPS}animals/sub/bomb.txt": b"A big lion.\n",
                  f"{STAMPS}food/broken.png": b"\x89PNG not really", f"{STAMPS}food/broken.txt": b"A bun.\n"},
        openclipart={f"{OPENCLIPART}tools/anvil.svg": svg_bytes(b"anvil", prolog=ENTITY),
                     f"{OPENCLIPART}tools/bucket.svg": svg_bytes(b"bucket", loop),
                     f"{OPENCLIPART}tools/ladder.svg": svg_bytes(b"ladder", size=b'width="90000" height="90000"'),
                     f"{OPENCLIPART}tools/shovel.svg": svg_bytes(b"shovel")})
    folder = data.build_demo(packages=packages, workers=2, progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    failed = meta["failed"]
    bad = {"tuxpaint/animals/sub/bomb", "tuxpaint/food/broken", "openclipart/tools/anvil",
           "openclipart/tools/bucket", "openclipart/tools/ladder"}
    assert bad <= set(failed) and "DecompressionBombError" in failed["tuxpaint/animals/sub/bomb"]
    assert "EntitiesForbidden" in failed["openclipart/tools/anvil"]
    assert "RecursionError" in failed["openclipart/tools/bucket"] and "canvas" in failed["openclipart/tools/ladder"]
    counts = {s["source"]: s["failed_to_render"] for s in meta["sources"]}
    assert counts["openclipart"] == 3 and counts["emoji"] == 0
    ids = set(load_collection("demo").ids) | set(data.load_eval("tuxpaint-heldout").ids)
    assert not ids & bad and "openclipart/tools/shovel" in ids and "openclipart/tools/hammer" in ids
