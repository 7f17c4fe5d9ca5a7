"""Making any image an 8-bit RGB image, the one way every stage does it (data builds, encoders, training)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB PIL image, robustly.

    EXIF orientation is applied first (phone photos are stored sideways). Transparency (RGBA, LA, PA, and P or
    L/RGB images with a ``transparency`` entry) is composited on white, because the collections' cut-outs sit on
    transparent backgrounds and black would be a strong, false "dark" signal. CMYK, YCbCr, grey (L, 1) and
    16-bit/32-bit/float grey (I;16, I, F) are converted; I and F are scaled from their actual 0..max range.
    A float image with a NaN or infinite pixel is refused (``ValueError``): its range, and so every pixel, would
    be undefined; which value such a pixel should have is the caller's to decide.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"to_rgb expects a PIL.Image.Image, got {type(image).__name__}.")
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" or (image.mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        # 16/32-bit and float images: PIL's own convert("L") clips at 255, which turns most 16-bit photos white.
        pixels = np.asarray(image, dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(pixels)))
        if bad:
            raise ValueError(
                f"this {image.mode} image has {bad} NaN or infinite pixel(s) of {pixels.size}: replace them first, "
                "e.g. Image.fromarray(np.nan_to_num(np.asarray(image), nan=0.0, posinf=hi, neginf=lo)) with the "
                "values they should have.")
        lo, hi = float(np.min(pixels)), float(np.max(pixels))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        grey = ((pixels - lo) * scale).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")
