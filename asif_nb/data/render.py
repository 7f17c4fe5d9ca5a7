"""Source pictures → the demo's stored images: SVG rendering (cairosvg, never in its unsafe mode), cropping,
resizing and compositing on white, and the process pool that does it for a whole collection.

One bad source file is a counted failure, never a fatal one: the worker turns any exception while reading,
rendering or writing one image into a reason string. Bounds keep one file from taking the machine: an SVG
(gzip-compressed or not) holds at most ``MAX_SVG_BYTES``; a rendered or decoded picture at most
``MAX_RENDER_PIXELS`` (PIL's own decompression-bomb threshold), checked before any pixel memory is taken.
"""
from __future__ import annotations

import gzip
import io
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..fileio import atomic_write
from ..images import to_rgb

IMAGE_SIZE = 256  # the long side of every stored image, in pixels (at most)
MAX_SVG_BYTES = 32 << 20  # the demo's largest SVG is 1.7 MB
MAX_RENDER_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS default; the demo's largest SVG renders to 50.3 M


class RenderError(ValueError):
    """An SVG that cannot be rendered safely (too large, malformed, or needing cairosvg's unsafe mode)."""


def normalise_image(image, crop: bool):
    """Crop a transparent image to its drawn pixels (clipart often sits on an A4 page), cap the size, whiten.
    Returns ``None`` when nothing is drawn."""
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


def _svg_bytes(path: Path) -> bytes:
    """The SVG's XML, gunzipped (``.svgz``) under the byte cap; cairosvg would gunzip without one."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_SVG_BYTES + 1)
    if data[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
            data = unzipped.read(MAX_SVG_BYTES + 1)
    if len(data) > MAX_SVG_BYTES:
        raise RenderError(f"{path} holds more than {MAX_SVG_BYTES >> 20} MiB of SVG")
    return data


def _capped_png_surface():
    """cairosvg's PNG surface, refusing a canvas over ``MAX_RENDER_PIXELS`` before cairo allocates it."""
    from cairosvg.surface import PNGSurface

    class CappedPNGSurface(PNGSurface):
        def _create_surface(self, width, height):
            if not width * height <= MAX_RENDER_PIXELS:  # also refuses NaN
                raise RenderError(f"the SVG asks for a {width:.0f} x {height:.0f} px canvas, over "
                                  f"{MAX_RENDER_PIXELS:,} px")
            return super()._create_surface(width, height)

    return CappedPNGSurface


def render_svg(path: str | os.PathLike, *, errors: str = "none"):
    """Render an SVG file with cairosvg to an RGBA PIL image.

    Always in cairosvg's safe mode: XML entities are refused, and images the SVG links to (local files, URLs)
    are left out, so an SVG can never put a file of this machine into its pixels. An SVG that only renders
    in unsafe mode is a failure. ``errors="none"`` returns ``None`` on any failure (cairosvg raises many kinds
    on odd files); ``errors="raise"`` raises ``RenderError`` saying why.
    """
    from PIL import Image

    if errors not in ("none", "raise"):
        raise ValueError(f"errors={errors!r}: use 'none' or 'raise'.")
    try:
        data = _svg_bytes(Path(path))
        png = _capped_png_surface().convert(bytestring=data, unsafe=False, parent_width=1024, parent_height=1024)
        image = Image.open(io.BytesIO(png))
        image.load()
        return image
    except Exception as err:  # noqa: BLE001 - any failure of one file is that file's failure
        if errors == "none":
            return None
        if isinstance(err, RenderError):
            raise
        raise RenderError(f"{path} cannot be rendered safely: {type(err).__name__}: {err}") from None


def build_image(job) -> tuple[str, str | None]:
    """Worker: read or render one source image and write the normalised PNG.

    ``job`` is ``(id, source path, destination path)``. Returns ``(id, None)`` on success, else ``(id, reason)``:
    every exception (a decompression bomb, a cairosvg crash, a damaged file) is this file's failure only.
    """
    from PIL import Image

    pair_id, source_path, dest = job
    source_path = Path(source_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over MAX_IMAGE_PIXELS: refuse
            if source_path.suffix.lower() == ".svg":
                image = render_svg(source_path, errors="raise")
            else:
                with Image.open(source_path) as opened:
                    opened.load()
                    image = opened.copy()
            image = normalise_image(image, crop=image.mode in ("RGBA", "LA", "P", "PA"))
        if image is None:
            return pair_id, "nothing drawn"
        with atomic_write(dest) as handle:
            image.save(handle, format="PNG", optimize=False)
        return pair_id, None
    except Exception as err:  # noqa: BLE001 - counted and listed, never fatal for the build
        return pair_id, f"{type(err).__name__}: {err}"[:300]


def build_images(jobs: list, workers: int) -> dict[str, str | None]:
    """Run ``build_image`` over ``jobs`` in a pool of ``workers`` processes; ``{id: None or why it failed}``."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(build_image, jobs, chunksize=32))
