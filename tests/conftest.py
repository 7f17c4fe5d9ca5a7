"""Fixtures shared by several test files."""
from __future__ import annotations

import io

import pytest

from fakehub import FakeHub, tar_shard


@pytest.fixture
def fake_hub(monkeypatch):
    """A local hub on 127.0.0.1 with ``HF_ENDPOINT`` pointing at it (see tests/fakehub.py)."""
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.close()


@pytest.fixture
def make_shard():
    """``make_shard(samples) -> bytes``: a webdataset tar (see ``fakehub.tar_shard``)."""
    return tar_shard


@pytest.fixture
def make_jpeg():
    """``make_jpeg(seed, size=64) -> bytes``: a small photo-like JPEG whose pixels depend on the seed."""
    return jpeg_bytes


def jpeg_bytes(seed: int, size: int = 64) -> bytes:
    """A small JPEG whose pixels depend on ``seed`` (smooth colour fields, so it compresses like a photo)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [np.sin(2 * np.pi * (rng.random() * 3 * x + rng.random() * 3 * y) + rng.random() * 6) for _ in range(3)]
    pixels = ((np.stack(channels, axis=-1) + 1) * 127.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class FakeEncoder:
    """A stand-in for an image or text encoder: ``encode`` looks each item up in ``table`` (by ``str(item)``);
    an item not in it gets a fixed vector from the sha256 of its text. ``calls`` records every batch."""

    def __init__(self, name: str, modality: str, table: dict, dim: int):
        self.name, self.modality, self.table, self.dim = name, modality, table, dim
        self.calls = []

    def encode(self, items, progress: bool = False, **_):
        import hashlib

        import numpy as np

        if isinstance(items, (str, bytes)):
            raise TypeError(f"{self.name}.encode expects a list of items; wrap a single item as [item].")
        items = list(items)
        self.calls.append(items)
        rows = []
        for item in items:
            if str(item) in self.table:
                rows.append(self.table[str(item)])
            else:
                seed = int.from_bytes(hashlib.sha256(str(item).encode()).digest()[:4], "little")
                rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        return np.asarray(rows, dtype=np.float32).reshape(len(items), self.dim)


@pytest.fixture
def tiny_asif(tmp_path):
    """An ``Asif`` over 12 anchor pairs with fake encoders and real image files: pair ``p{i}`` has caption
    ``"caption {i}"`` and image ``anchor-{i}.png`` (a flat colour), and each encoder maps an anchor's own image or
    caption to that anchor's embedding, so an anchor image queried with its own caption shares that anchor."""
    import numpy as np
    from PIL import Image

    from asif_nb.bundle import AnchorSet
    from asif_nb.data import Collection, Pair
    from asif_nb.model import AsifModel
    from asif_nb.pipeline import Asif

    rng = np.random.default_rng(0)
    n = 12
    anchor_images = rng.standard_normal((n, 8)).astype(np.float32)
    anchor_texts = rng.standard_normal((n, 6)).astype(np.float32)
    pairs = []
    for i in range(n):
        path = tmp_path / f"anchor-{i}.png"
        Image.new("RGB", (8, 8), (20 * i, 255 - 20 * i, 100)).save(path)
        pairs.append(Pair(f"p{i}", f"caption {i}", path, "test", "CC0"))
    collection = Collection("tiny", pairs)
    image_encoder = FakeEncoder("fake-image", "image", {str(p.image): anchor_images[i] for i, p in enumerate(pairs)}, 8)
    text_encoder = FakeEncoder("fake-text", "text", {p.caption: anchor_texts[i] for i, p in enumerate(pairs)}, 6)
    model = AsifModel(anchor_images, anchor_texts, k=4, p=1, ids=collection.ids, device="cpu")
    anchors = AnchorSet(collection, anchor_images, anchor_texts)
    return Asif(model, image_encoder, text_encoder, anchors=anchors)
