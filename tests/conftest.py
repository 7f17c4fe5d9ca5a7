"""Fixtures shared by several test files."""
from __future__ import annotations

import io

import numpy as np
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


def assert_same_csr(a, b):
    """Two scipy CSR matrices equal bit for bit (structure and float32 values)."""
    assert a.shape == b.shape
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data.view(np.uint32), b.data.view(np.uint32))


def random_pairs(seed=0, n_pairs=300, d1=12, d2=8):
    """``(images (n_pairs, d1), texts (n_pairs, d2), rng)``: random float32 anchor pairs and the generator."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_pairs, d1)).astype(np.float32),
            rng.standard_normal((n_pairs, d2)).astype(np.float32), rng)


@pytest.fixture
def same_csr():
    """``same_csr(a, b)``: assert two sparse representations are equal bit for bit."""
    return assert_same_csr


@pytest.fixture
def pair_data():
    """``pair_data(seed=0, n_pairs=300, d1=12, d2=8) -> (images, texts, rng)``: random float32 anchor pairs."""
    return random_pairs


@pytest.fixture(scope="session")
def demo_embeddings():
    """``(anchors, heldout)``: the demo collection's anchor embeddings (``AnchorSet``) and the held-out Tux Paint
    evaluation set's (``EvalEmbeddings``), by the offline demo encoders on the CPU (cached after the first run)."""
    from asif_nb import load_collection, load_eval, load_image_encoder, load_text_encoder
    from asif_nb.pipeline import embed_anchors, embed_eval

    image_encoder = load_image_encoder("efficientnet-lite2", device="cpu")
    text_encoder = load_text_encoder("all-MiniLM-L6-v2", device="cpu")
    anchors = embed_anchors(load_collection("demo"), image_encoder, text_encoder, progress=False)
    heldout = embed_eval(load_eval("tuxpaint-heldout"), image_encoder, text_encoder, progress=False)
    return anchors, heldout
