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
