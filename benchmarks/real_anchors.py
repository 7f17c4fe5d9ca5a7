"""Real image embeddings for the exact-pruning benchmark (issue #14): every image the demo's packages hold.

Anchors: the demo collection's anchor images, every OpenClipart drawing (rendered once to PNG in the cache, not
only the demo's filtered ones), every Noto emoji image and the first ``FASHION_TRAIN`` images of Fashion-MNIST's
train split (inverted to dark-on-white as the eval set is): 56,109 real images (the whole 60k split would take this
shared 2-core machine another quarter of an hour to embed). Queries: the demo's eval images (Fashion-MNIST test, the held-out Tux
Paint stamps, the ImageNet samples), through ``pipeline.embed_eval`` (the notebooks' cache entries). Anchors are
embedded once by the offline ``efficientnet-lite2`` on the CPU and cached through ``asif_nb.cache.embed_cached``
in parts of at most 10,000 images, so an interrupted first run keeps what it embedded.

    python benchmarks/real_anchors.py      # embeds what is missing, prints the shapes
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PART = 10_000
FASHION_TRAIN = 40_000


def _fashion_train():
    from PIL import Image

    from asif_nb.data.archives import package_source
    from asif_nb.data.demo import check_packages
    from asif_nb.data.evalsets import FASHION_MNIST_PACKAGE, _read_idx

    base = package_source(FASHION_MNIST_PACKAGE, check_packages(None))
    pixels = 255 - _read_idx(next(base.rglob("train-images-idx3-ubyte*")))
    return [Image.fromarray(p).convert("RGB") for p in pixels[:FASHION_TRAIN]]


def _openclipart_pngs():
    """Every non-symlinked OpenClipart SVG, rendered once (cairosvg safe mode) to a PNG in the cache."""
    from asif_nb.data.archives import package_source
    from asif_nb.data.demo import check_packages
    from asif_nb.data.render import render_svg
    from asif_nb.images import to_rgb
    from asif_nb.settings import cache_dir

    root = package_source("openclipart-svg", check_packages(None)) / "usr" / "share" / "openclipart" / "svg"
    out = cache_dir() / "real-anchors" / "openclipart"
    paths = []
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            svg = Path(folder) / name
            if not name.endswith(".svg") or svg.is_symlink():
                continue
            png = out / svg.relative_to(root).with_suffix(".png")
            failed = png.with_suffix(".failed")
            if not png.exists() and not failed.exists():
                png.parent.mkdir(parents=True, exist_ok=True)
                image = render_svg(svg)
                if image is None or image.getbbox() is None:
                    failed.touch()
                    continue
                to_rgb(image).save(png)
            if png.exists():
                paths.append(png)
    return paths


def _emoji_pngs():
    from asif_nb.data.archives import package_source
    from asif_nb.data.demo import check_packages

    root = package_source("emoji-datasource-google", check_packages(None))
    return sorted((root / "package" / "img" / "google" / "64").glob("*.png"))


def _embed(encoder, items, key):
    from asif_nb.cache import embed_cached

    parts = [embed_cached(encoder, items[s:s + PART], f"{key}-{s // PART}", progress=True)
             for s in range(0, len(items), PART)]
    return np.concatenate(parts)


def real_image_embeddings():
    """``(anchors (N, 1280), queries (n, 1280), names)``: float32 image embeddings, ``names`` saying which part
    each anchor row came from (a dict of name -> (start, stop))."""
    from asif_nb import load_collection, load_eval, load_image_encoder, load_text_encoder
    from asif_nb.pipeline import embed_eval

    encoder = load_image_encoder("efficientnet-lite2", device="cpu")
    text_encoder = load_text_encoder("all-MiniLM-L6-v2", device="cpu")
    parts, names, start = [], {}, 0
    demo = [str(p.image) for p in load_collection("demo")]
    for name, items in (("demo", demo), ("openclipart-all", _openclipart_pngs()), ("emoji-all", _emoji_pngs()),
                        ("fashion-mnist-train", _fashion_train())):
        rows = _embed(encoder, items, f"real-anchors-{name}")
        parts.append(rows)
        names[name] = (start, start + len(rows))
        start += len(rows)
    queries = []
    for name in ("fashion-mnist", "tuxpaint-heldout", "imagenet-samples"):
        queries.append(embed_eval(load_eval(name), encoder, text_encoder, progress=False).images)
    return np.concatenate(parts), np.concatenate(queries), names


if __name__ == "__main__":
    anchors, queries, names = real_image_embeddings()
    print(f"anchors {anchors.shape}, queries {queries.shape}, parts {names}")
