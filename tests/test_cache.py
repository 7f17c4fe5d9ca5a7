"""The embedding cache: hits, misses, stale entries and every kind of corruption, with a counting fake encoder."""
import json

import numpy as np
import pytest
from PIL import Image

from asif_nb.cache import cache_info, embed_cached, embeddings_dir, inputs_sha256


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))


class CountingEncoder:
    """Embeds a text as its character histogram; counts how often it really runs."""

    modality = "text"

    def __init__(self, name="fake-text", weights_id="sha256:" + "ab" * 32, dim=8):
        self.name, self.weights_id, self.dim = name, weights_id, dim
        self.calls = 0

    def encode(self, items, batch_size=32, progress=True, on_error="raise"):
        self.calls += 1
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, text in enumerate(items):
            for ch in text:
                out[row, ord(ch) % self.dim] += 1
        return out


TEXTS = ["a cat", "a dog", "a red car"]


def entry_files():
    npy = sorted(embeddings_dir().glob("*.npy"))
    assert len(npy) == 1, npy
    return npy[0], npy[0].with_suffix(".json")


def test_miss_then_hit_returns_the_same_array_without_encoding_again():
    enc = CountingEncoder()
    first = embed_cached(enc, TEXTS, "demo-texts", progress=False)
    second = embed_cached(enc, TEXTS, "demo-texts", progress=False)
    assert enc.calls == 1
    assert first.dtype == np.float32 and first.shape == (3, 8)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, CountingEncoder().encode(TEXTS))


def test_sidecar_records_what_the_entry_holds():
    enc = CountingEncoder()
    embed_cached(enc, TEXTS, "demo-texts", ids=["c", "d", "r"], progress=False)
    npy, sidecar = entry_files()
    meta = json.loads(sidecar.read_text())
    assert meta["encoder"] == "fake-text" and meta["weights_id"] == enc.weights_id
    assert (meta["dim"], meta["count"], meta["ids"]) == (8, 3, ["c", "d", "r"])
    assert meta["inputs_sha256"] == inputs_sha256(TEXTS, "text")
    assert npy.name.startswith("demo-texts--fake-text--abababababab--")
    assert not list(embeddings_dir().glob("*.part")), "temp files must not be left behind"


@pytest.mark.parametrize("change", ["inputs", "order", "weights", "encoder"])
def test_a_change_of_inputs_order_weights_or_encoder_is_a_miss(change):
    enc = CountingEncoder()
    embed_cached(enc, TEXTS, "k", progress=False)
    texts = TEXTS
    if change == "inputs":
        texts = TEXTS[:2] + ["a blue car"]
    elif change == "order":
        texts = TEXTS[::-1]
    elif change == "weights":
        enc = CountingEncoder(weights_id="sha256:" + "cd" * 32)
    else:
        enc = CountingEncoder(name="other-text")
    out = embed_cached(enc, texts, "k", progress=False)
    assert enc.calls == (1 if change in ("weights", "encoder") else 2)
    np.testing.assert_array_equal(out, CountingEncoder().encode(texts))


def corrupt(kind):
    npy, sidecar = entry_files()
    if kind == "truncated npy":
        npy.write_bytes(npy.read_bytes()[:100])
    elif kind == "nan rows":
        array = np.load(npy)
        array[1] = np.nan
        np.save(npy, array)
    elif kind == "wrong dim":
        np.save(npy, np.zeros((3, 5), dtype=np.float32))
    elif kind == "wrong dtype":
        np.save(npy, np.load(npy).astype(np.float64))
    elif kind == "changed values":
        np.save(npy, np.load(npy) + 1)
    elif kind == "missing sidecar":
        sidecar.unlink()
    elif kind == "bad json":
        sidecar.write_text("{not json")
    elif kind == "stale sidecar":
        meta = json.loads(sidecar.read_text())
        meta["weights_id"] = "sha256:old"
        sidecar.write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", ["truncated npy", "nan rows", "wrong dim", "wrong dtype", "changed values",
                                  "missing sidecar", "bad json", "stale sidecar"])
def test_a_corrupt_or_stale_entry_is_reported_and_recomputed(kind, capsys):
    enc = CountingEncoder()
    expected = embed_cached(enc, TEXTS, "k", progress=False)
    corrupt(kind)
    out = embed_cached(enc, TEXTS, "k", progress=False)
    assert enc.calls == 2
    assert "unusable" in capsys.readouterr().out
    np.testing.assert_array_equal(out, expected)
    # the recomputed entry is whole again: a third call is a clean hit
    embed_cached(enc, TEXTS, "k", progress=False)
    assert enc.calls == 2


def test_refresh_recomputes_a_valid_entry():
    enc = CountingEncoder()
    embed_cached(enc, TEXTS, "k", progress=False)
    embed_cached(enc, TEXTS, "k", progress=False, refresh=True)
    assert enc.calls == 2


@pytest.mark.parametrize("key", ["a/b", "../up", "a\\b", "", "x--y", 3])
def test_keys_that_are_not_plain_labels_are_refused(key):
    with pytest.raises(ValueError, match="key="):
        embed_cached(CountingEncoder(), TEXTS, key, progress=False)


def test_ids_must_match_items():
    with pytest.raises(ValueError, match="one id per item"):
        embed_cached(CountingEncoder(), TEXTS, "k", ids=["a"], progress=False)


def test_a_failing_encoder_writes_nothing():
    class Broken(CountingEncoder):
        def encode(self, items, **kw):
            out = super().encode(items)
            out[0, 0] = np.inf
            return out

    with pytest.raises(RuntimeError, match="nothing was cached"):
        embed_cached(Broken(), TEXTS, "k", progress=False)
    assert not embeddings_dir().exists() or not list(embeddings_dir().iterdir())


def test_image_inputs_are_hashed_by_content(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), "red").save(a)
    b.write_bytes(a.read_bytes())
    assert inputs_sha256([str(a)], "image") == inputs_sha256([b], "image")  # same bytes, other path/type
    same_pixels = Image.new("RGB", (4, 4), "red")
    assert inputs_sha256([same_pixels], "image") == inputs_sha256([Image.new("RGB", (4, 4), "red")], "image")
    assert inputs_sha256([same_pixels], "image") != inputs_sha256([Image.new("RGB", (4, 4), "blue")], "image")
    assert inputs_sha256([same_pixels], "image") != inputs_sha256([same_pixels.convert("RGBA")], "image")
    before = inputs_sha256([a], "image")
    Image.new("RGB", (4, 4), "green").save(a)
    assert inputs_sha256([a], "image") != before


def test_text_and_bytes_and_paths_hash_differently(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"x")
    hashes = {inputs_sha256(["x"], "text"), inputs_sha256([b"x"], "image"), inputs_sha256([str(path)], "image")}
    assert len(hashes) == 3
    with pytest.raises(ValueError, match="missing.png"):
        inputs_sha256([str(tmp_path / "missing.png")], "image")


def test_cache_info_lists_entries():
    assert cache_info() == []
    embed_cached(CountingEncoder(), TEXTS, "demo-texts", progress=False)
    embed_cached(CountingEncoder(dim=4), TEXTS[:2], "other", progress=False)
    info = {row["key"]: row for row in cache_info()}
    assert set(info) == {"demo-texts", "other"}
    assert (info["demo-texts"]["count"], info["demo-texts"]["dim"], info["demo-texts"]["valid"]) == (3, 8, True)
    assert (info["other"]["count"], info["other"]["dim"]) == (2, 4)
    npy = embeddings_dir() / info["other"]["file"]
    np.save(npy, np.zeros((2, 3), dtype=np.float32))
    assert {row["key"]: row["valid"] for row in cache_info()} == {"demo-texts": True, "other": False}
