"""The embedding cache: hits, misses, stale entries and every kind of corruption, with a counting fake encoder."""
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asif_nb import cache
from asif_nb.cache import cache_info, embed_cached, embeddings_dir, inputs_sha256


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))


class CountingEncoder:
    """Embeds a text as its character histogram; counts how often it really runs. ``features`` as the encoders
    define them (``asif_nb.encoders.base.Encoder``); ``features_id`` is a hash of them."""

    modality = "text"

    def __init__(self, name="fake-text", weights_id="sha256:" + "ab" * 32, dim=8, **features):
        self.name, self.weights_id, self.dim = name, weights_id, dim
        self.features = {"name": name, "weights_id": weights_id, "preprocessing": "tokenizer:chars",
                         "preprocessing_sha": "0" * 64, "runtime": "torch", "precision": "float32", "device": "cpu",
                         **features}
        self.features_id = "f-" + hashlib.sha256(json.dumps(self.features, sort_keys=True).encode()).hexdigest()[:16]
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
    return npy[0], npy[0].parent / (npy[0].name[:-4] + ".json")


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
    assert meta["features_id"] == enc.features_id and meta["features"] == enc.features
    assert (meta["dim"], meta["count"], meta["ids"]) == (8, 3, ["c", "d", "r"])
    assert meta["inputs_sha256"] == inputs_sha256(TEXTS, "text")
    assert npy.name.startswith(f"demo-texts--fake-text--{enc.features_id}--")
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
        meta["features_id"] = "f-0123456789abcdef"
        sidecar.write_text(json.dumps(meta))
    elif kind == "sidecar not an object":
        sidecar.write_text("[1, 2]")
    elif kind == "old format":
        meta = json.loads(sidecar.read_text())
        meta["format_version"] = 1
        sidecar.write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", ["truncated npy", "nan rows", "wrong dim", "wrong dtype", "changed values",
                                  "missing sidecar", "bad json", "stale sidecar", "sidecar not an object",
                                  "old format"])
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


# ------------------------------------------------------------------------------ keyed on what was computed


@pytest.mark.parametrize("change", [{"runtime": "onnxruntime"}, {"precision": "float16-autocast"},
                                    {"device": "cuda"}, {"preprocessing": "authors"},
                                    {"preprocessing_sha": "1" * 64}])
def test_the_same_weights_computed_another_way_are_a_miss(change):
    reference = CountingEncoder()
    other = CountingEncoder(**change)
    assert other.weights_id == reference.weights_id and other.features_id != reference.features_id
    embed_cached(reference, TEXTS, "k", progress=False)
    embed_cached(other, TEXTS, "k", progress=False)
    assert other.calls == 1, "an entry computed another way must not be served"
    assert len(list(embeddings_dir().glob("*.npy"))) == 2
    for enc in (reference, other):  # both entries stay usable side by side
        embed_cached(enc, TEXTS, "k", progress=False)
        assert enc.calls == 1


def test_dots_in_the_key_and_the_encoder_name_still_hit():
    enc = CountingEncoder(name="timm:vit_base_patch16_224.augreg_in21k")
    first = embed_cached(enc, TEXTS, "cc12m.v2-images", progress=False)
    second = embed_cached(enc, TEXTS, "cc12m.v2-images", progress=False)
    assert enc.calls == 1
    np.testing.assert_array_equal(first, second)
    (row,) = cache_info()
    assert row["key"] == "cc12m.v2-images" and row["valid"] and row["features_id"] == enc.features_id
    assert (embeddings_dir() / row["file"]).exists()


@pytest.mark.parametrize("single", ["a cat", b"\x89PNG"])
def test_a_single_item_instead_of_a_list_is_refused_with_the_fix(single):
    enc = CountingEncoder()
    with pytest.raises(TypeError, match=r"\[item\]"):
        embed_cached(enc, single, "k", progress=False)
    assert enc.calls == 0


@pytest.mark.parametrize("error", [MemoryError, KeyboardInterrupt, RuntimeError])
def test_errors_that_do_not_mean_stale_propagate_and_nothing_is_rebuilt(error, monkeypatch):
    enc = CountingEncoder()
    embed_cached(enc, TEXTS, "k", progress=False)
    npy, sidecar = entry_files()
    before = (npy.read_bytes(), sidecar.read_bytes(), npy.stat().st_mtime_ns)

    def failing_load(*args, **kwargs):
        raise error("while loading the entry")

    monkeypatch.setattr(np, "load", failing_load)
    with pytest.raises(error):
        embed_cached(enc, TEXTS, "k", progress=False)
    assert enc.calls == 1, "a MemoryError must not turn into a silent recompute"
    assert (npy.read_bytes(), sidecar.read_bytes(), npy.stat().st_mtime_ns) == before


def test_the_sidecar_hash_is_the_arrays_bytes_however_it_is_chunked(monkeypatch):
    monkeypatch.setattr(cache, "_HASH_CHUNK_BYTES", 40)  # 8 floats a row: one row per block, and a short tail
    enc = CountingEncoder()
    array = embed_cached(enc, TEXTS, "k", progress=False)
    _, sidecar = entry_files()
    assert json.loads(sidecar.read_text())["array_sha256"] == hashlib.sha256(array.tobytes()).hexdigest()
    embed_cached(enc, TEXTS, "k", progress=False)  # and the entry validates with the same chunking
    assert enc.calls == 1


# ------------------------------------------------------------------------------ input files hashed once


class FileSizes:
    """An image stand-in: the row of a file is its size; counts how often it runs."""

    modality, dim, name, weights_id = "image", 2, "file-sizes", "sha256:0"
    features = {"name": "file-sizes", "weights_id": "sha256:0"}
    features_id = "f-00000000000000aa"

    def __init__(self):
        self.calls = 0

    def encode(self, items, batch_size=32, progress=True, on_error="raise"):
        self.calls += 1
        return np.array([[os.path.getsize(item), 1] for item in items], dtype=np.float32)


def image_files(folder, n=3, age_s=3600):
    paths = []
    for i in range(n):
        path = folder / f"img.{i}.png"  # dots in the name on purpose
        Image.new("RGB", (4 + i, 4), (40 * i, 0, 0)).save(path)
        old = time.time_ns() - age_s * 1_000_000_000
        os.utime(path, ns=(old, old))
        paths.append(str(path))
    return paths


@pytest.fixture
def hashed_files(monkeypatch):
    seen = []
    real = cache.sha256_file

    def counting(path, *args, **kwargs):
        seen.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache, "sha256_file", counting)
    return seen


def test_a_warm_call_hashes_no_file(tmp_path, hashed_files):
    paths = image_files(tmp_path)
    enc = FileSizes()
    first = embed_cached(enc, paths, "imgs", progress=False)
    assert sorted(hashed_files) == sorted(paths)
    hashed_files.clear()
    second = embed_cached(enc, paths + paths[:1], "imgs-again", progress=False)  # a new key, the same files
    np.testing.assert_array_equal(second[:3], first)
    embed_cached(enc, paths, "imgs", progress=False)
    assert hashed_files == [] and enc.calls == 2
    # a changed file (new size and mtime) is read again, and its entry is a miss
    Image.new("RGB", (9, 9), "blue").save(paths[1])
    os.utime(paths[1], ns=(time.time_ns() - 10**12,) * 2)
    out = embed_cached(enc, paths, "imgs", progress=False)
    assert hashed_files == [paths[1]] and enc.calls == 3
    assert out[1, 0] == os.path.getsize(paths[1])


def test_a_file_written_just_now_is_not_remembered_until_it_settles(tmp_path, hashed_files):
    # mtimes are stamped coarsely: a same-size rewrite within the same tick would keep (size, mtime_ns)
    (path,) = image_files(tmp_path, n=1, age_s=0)
    first = inputs_sha256([path], "image")
    Image.new("RGB", (4, 4), (0, 0, 99)).save(path)  # same size, same second
    assert inputs_sha256([path], "image") != first
    assert len(hashed_files) == 2
    old = time.time_ns() - 10**12
    os.utime(path, ns=(old, old))
    inputs_sha256([path], "image")
    inputs_sha256([path], "image")
    assert len(hashed_files) == 3


def test_a_corrupt_file_hash_memo_is_started_again(tmp_path, hashed_files, capsys):
    paths = image_files(tmp_path)
    expected = inputs_sha256(paths, "image")
    (embeddings_dir() / "file-hashes.sqlite3").write_bytes(b"this is not a database" * 100)
    assert inputs_sha256(paths, "image") == expected
    assert "starting it again" in capsys.readouterr().out
    hashed_files.clear()
    assert inputs_sha256(paths, "image") == expected and hashed_files == []


# ------------------------------------------------------------------- a real encoder: library vs authors


@pytest.fixture(scope="module")
def tiny_vit_224(tmp_path_factory):
    """A one-layer ViT on 224x224 inputs (32 px patches), saved like a hub folder."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-vit-224")
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                       image_size=224, patch_size=32)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder)
    return folder


def test_a_change_of_preprocessing_is_a_miss(tiny_vit_224, tmp_path):
    from asif_nb.encoders import load_image_encoder

    paths = image_files(tmp_path)
    library = load_image_encoder(f"hf:{tiny_vit_224}", device="cpu")
    authors = load_image_encoder(f"hf:{tiny_vit_224}", device="cpu", preprocessing="authors")
    assert library.weights_id == authors.weights_id
    out = {}
    for enc in (library, authors, library, authors):
        out.setdefault(enc.preprocessing_tag, []).append(embed_cached(enc, paths, "imgs", progress=False))
    assert len(list(embeddings_dir().glob("*.npy"))) == 2
    for tag, (computed, cached) in out.items():
        np.testing.assert_array_equal(computed, cached)
    assert not np.allclose(out["library"][0], out["authors"][0])
    np.testing.assert_allclose(out["authors"][0], authors.encode(paths, progress=False), atol=1e-6)


def test_inputs_are_hashed_the_same_in_any_chunking(tmp_path, monkeypatch):
    paths = image_files(tmp_path, n=5)
    items = [paths[0], Image.new("RGB", (2, 2)), b"raw", *paths[1:], paths[0]]
    expected = inputs_sha256(items, "image")
    monkeypatch.setattr(cache, "_ITEMS_PER_CHUNK", 2)
    assert inputs_sha256(items, "image") == expected
    (embeddings_dir() / "file-hashes.sqlite3").unlink()
    assert inputs_sha256(items, "image") == expected


def test_two_processes_asking_for_one_entry_embed_it_once(tmp_path):
    """The second caller waits on the entry's file lock, then reads what the first one wrote."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_cache import CountingEncoder, TEXTS
        from asif_nb.cache import embed_cached

        class Slow(CountingEncoder):
            def encode(self, items, **kwargs):
                print("encoding", flush=True)
                time.sleep(1.5)
                return super().encode(items, **kwargs)

        embed_cached(Slow(), TEXTS, "shared-texts", progress=False)
    """)
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sum(out.count("encoding") for out in outputs) == 1
