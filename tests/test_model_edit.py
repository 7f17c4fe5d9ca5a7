"""asif_nb.model: editing pairs (ids, masks, unlearning), model files, and bad input answered clearly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asif_nb.metrics import threshold_curve
from asif_nb.model import AsifModel, relative_representation

CPU = {"device": "cpu"}


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# editing: add and remove pairs


def test_remove_pairs_is_true_unlearning(pair_data, same_csr):
    images, texts, rng = pair_data(8, n_pairs=3000)
    queries_i = rng.standard_normal((12, images.shape[1])).astype(np.float32)
    queries_t = rng.standard_normal((12, texts.shape[1])).astype(np.float32)
    gone = rng.choice(3000, 400, replace=False)
    kept = np.setdiff1d(np.arange(3000), gone)
    clean = AsifModel(images[kept], texts[kept], k=50, p=8, ids=kept.tolist(), **CPU)
    outputs = []
    for trial in range(2):  # the removed pairs' embeddings differ between the trials
        changed_i, changed_t = images.copy(), texts.copy()
        changed_i[gone] = rng.standard_normal((400, images.shape[1]))
        changed_t[gone] = rng.standard_normal((400, texts.shape[1]))
        model = AsifModel(changed_i, changed_t, k=50, p=8, **CPU)
        model.remove_pairs(gone.tolist())
        assert model.ids == tuple(kept.tolist()) and model.n_pairs == 2600
        outputs.append((model.encode_image(queries_i), model.encode_text(queries_t),
                        model.similarity(queries_i, queries_t)))
        stored = model.anchor_embeddings()[0]
        removed = unit(changed_i[gone]).astype(np.float32)
        assert not (np.abs(stored[:, None, :] - removed[None]).max(axis=2) < 1e-6).any()
    for ri, rt, S in outputs:  # equal to a model that never saw the removed pairs, bit for bit
        same_csr(ri, clean.encode_image(queries_i))
        same_csr(rt, clean.encode_text(queries_t))
        np.testing.assert_array_equal(S, clean.similarity(queries_i, queries_t))


def test_add_pairs_equals_building_with_them(pair_data, same_csr):
    images, texts, rng = pair_data(9)
    queries = rng.standard_normal((10, images.shape[1])).astype(np.float32)
    model = AsifModel(images[:200], texts[:200], k=30, p=4, **CPU)
    model.add_pairs(images[200:], texts[200:])
    assert model.ids == tuple(range(300))
    same_csr(model.encode_image(queries), AsifModel(images, texts, k=30, p=4, **CPU).encode_image(queries))
    named = AsifModel(images[:5], texts[:5], k=2, p=4, ids=list("abcde"), **CPU)
    named.add_pairs(images[5:7], texts[5:7], ids=["f", "g"])
    assert named.ids == tuple("abcdefg")
    named.remove_pairs(["a", "f"])
    assert named.ids == tuple("bcdeg")


def test_remove_pairs_matches_ids_as_ids_and_masks_as_masks(pair_data):
    images, texts, _ = pair_data(18, n_pairs=12)
    model = AsifModel(images, texts, k=2, p=2, ids=list(range(10, 22)), **CPU)
    mask = np.zeros(12, dtype=bool)
    mask[[7, 8]] = True  # the pairs with ids 17 and 18
    model.remove_pairs(mask)
    assert 17 not in model.ids and 18 not in model.ids and model.n_pairs == 10
    assert model.positions(model.ids[4]).tolist() == [4] and model.positions([np.int64(21)]).tolist() == [9]
    model.remove_pairs([False] * 9 + [True])  # a list of bools with one entry per pair is a mask too
    assert model.ids == (10, 11, 12, 13, 14, 15, 16, 19, 20)
    model.remove_pairs(torch.tensor([True] + [False] * 8))
    assert model.ids == (11, 12, 13, 14, 15, 16, 19, 20)
    before = model.ids
    for bad, match in [(True, "not a pair id"), (np.bool_(False), "not a pair id"), ([True], "one entry per pair"),
                       (mask, "one entry per pair"), ([5.0], "float"), ([np.float64(12)], "float"),
                       (12.0, "float"), ([12, True], "bool"), ([13, "13"], "name no pair"), ([99], "name no pair")]:
        with pytest.raises(ValueError, match=match):
            model.remove_pairs(bad)
        assert model.ids == before  # a refused call removes nothing


def test_failed_edits_change_nothing(pair_data, same_csr):
    images, texts, rng = pair_data(10, n_pairs=50)
    model = AsifModel(images, texts, k=10, p=2, ids=[f"x{i}" for i in range(50)], **CPU)
    queries = rng.standard_normal((3, images.shape[1])).astype(np.float32)
    before = (model.ids, model.encode_image(queries))
    bad_rows = images[:2].copy()
    bad_rows[1] = np.nan
    attempts = [
        lambda: model.remove_pairs(["x1", "nope"]),  # one unknown id: not even x1 goes
        lambda: model.remove_pairs([f"x{i}" for i in range(45)]),  # would leave fewer than k pairs
        lambda: model.add_pairs(images[:2], texts[:2], ids=["y0", "x3"]),  # an id already taken
        lambda: model.add_pairs(images[:2], texts[:2], ids=["y0", "y0"]),  # duplicate new ids
        lambda: model.add_pairs(images[:2], texts[:2]),  # string ids need explicit new ids
        lambda: model.add_pairs(bad_rows, texts[:2], ids=["y0", "y1"]),  # a NaN row
        lambda: model.add_pairs(images[:2, :5], texts[:2], ids=["y0", "y1"]),  # wrong dimension
        lambda: model.add_pairs(images[:2], texts[:3], ids=["y0", "y1"]),  # unpaired rows
        lambda: model.add_pairs(images[:2], texts[:2], ids=[1.0, 2.0]),  # floats are not ids
    ]
    for attempt in attempts:
        with pytest.raises(ValueError):
            attempt()
        assert model.ids == before[0]
        same_csr(model.encode_image(queries), before[1])
    with pytest.raises(ValueError, match="k=60"):
        model.k = 60
    assert model.k == 10


def test_from_unit_rows_keeps_the_rows_and_refuses_others(pair_data, same_csr):
    images, texts, rng = pair_data(19)
    model = AsifModel(images, texts, k=20, p=3, ids=[f"p{i}" for i in range(300)], **CPU)
    stored = model.anchor_embeddings()
    copy = AsifModel.from_unit_rows(*stored, **model.settings())
    assert copy.ids == model.ids and (copy.k, copy.p) == (model.k, model.p)
    assert all(np.array_equal(a, b) for a, b in zip(copy.anchor_embeddings(), stored))  # not normalised again
    queries = rng.standard_normal((5, images.shape[1])).astype(np.float32)
    same_csr(copy.encode_image(queries), model.encode_image(queries))
    with pytest.raises(ValueError, match="not unit length"):
        AsifModel.from_unit_rows(images, stored[1], k=20, p=3, **CPU)


# ---------------------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("name", ["model.safetensors", "model.npz"])
@pytest.mark.parametrize("ids", [None, list(range(100)) + [f"pair/{i} €" for i in range(100)]])
def test_save_load_round_trip_is_exact(tmp_path, pair_data, same_csr, name, ids):
    images, texts, rng = pair_data(12, n_pairs=200)
    model = AsifModel(images, texts, k=20, p=3.5, ids=ids, **CPU)
    path = model.save(tmp_path / name) if ids is None else model.save(str(tmp_path / name))
    loaded = AsifModel.load(path, **CPU)
    assert (loaded.k, loaded.p, loaded.clamp_negative, loaded.ids) == (model.k, model.p, model.clamp_negative,
                                                                       model.ids)
    queries = rng.standard_normal((8, images.shape[1])).astype(np.float32)
    prompts = rng.standard_normal((6, texts.shape[1])).astype(np.float32)
    same_csr(loaded.encode_image(queries), model.encode_image(queries))
    np.testing.assert_array_equal(loaded.similarity(queries, prompts), model.similarity(queries, prompts))
    assert not list(tmp_path.glob(".*part"))  # no temporary file left behind


@pytest.fixture
def unique_ids_model(pair_data):
    images, texts, _ = pair_data(13, n_pairs=30)
    return AsifModel(images, texts, k=5, p=2, ids=[f"p{i}" for i in range(30)], clamp_negative=False, **CPU)


@pytest.mark.parametrize("name", ["m.safetensors", "m.npz"])
def test_corrupt_truncated_and_foreign_files_are_refused(tmp_path, unique_ids_model, name):
    path = unique_ids_model.save(tmp_path / name)
    assert AsifModel.load(path).clamp_negative is False
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="re-save"):
        AsifModel.load(path)
    path.write_bytes(b"definitely not a model")
    with pytest.raises(ValueError, match="not a readable ASIF model"):
        AsifModel.load(path)
    # well-formed files of the right kind but not written by AsifModel.save
    if name.endswith(".npz"):
        np.savez(path, anchor_images=np.ones((2, 2)), anchor_texts=np.ones((2, 2)))
    else:
        import safetensors.torch
        path.write_bytes(safetensors.torch.save({"weights": torch.ones(2)}))
    with pytest.raises(ValueError, match="not written by AsifModel.save|not a readable"):
        AsifModel.load(path)
    with pytest.raises(FileNotFoundError):
        AsifModel.load(tmp_path / "missing.safetensors")


def _rewrite_npz(path, meta=None, scale=1.0):
    with np.load(path) as archive:
        images, texts, stored = archive["anchor_images"], archive["anchor_texts"], json.loads(str(archive["meta"]))
    np.savez(path, anchor_images=images * scale, anchor_texts=texts,
             meta=np.array(json.dumps(stored if meta is None else meta(stored))))


def test_damaged_metadata_is_refused(tmp_path, unique_ids_model):
    import safetensors.torch

    path = unique_ids_model.save(tmp_path / "m.safetensors")
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    for change in ({"version": "99"}, {"k": "lots"}, {"ids": json.dumps(["a", "a"] * 15)}, {"k": "31"},
                   {"ids": "null"}, {"ids": json.dumps({"a": 1})}, {"ids": json.dumps(list(range(29)))}):
        path.write_bytes(safetensors.torch.save(tensors, metadata={**meta, **change}))
        with pytest.raises(ValueError, match="re-save"):
            AsifModel.load(path)


@pytest.mark.parametrize("meta,match", [
    (lambda m: [1, 2, 3], "JSON list, not an object"),
    (lambda m: "text", "JSON str, not an object"),
    (lambda m: {**m, "version": 1}, r"'version' the int 1"),
    (lambda m: {**m, "version": 2}, r"'version' the int 2"),
    (lambda m: {**m, "ids": None}, "'ids' the NoneType"),
    (lambda m: {key: value for key, value in m.items() if key != "k"}, "'k' missing"),
])
def test_meta_that_is_not_what_save_writes_is_refused_by_name(tmp_path, unique_ids_model, meta, match):
    path = unique_ids_model.save(tmp_path / "m.npz")
    _rewrite_npz(path, meta=meta)
    with pytest.raises(ValueError, match=match) as error:
        AsifModel.load(path)
    assert "re-save" in str(error.value)


def test_anchors_that_are_not_unit_length_are_refused(tmp_path, unique_ids_model):
    path = unique_ids_model.save(tmp_path / "m.npz")
    _rewrite_npz(path, scale=1.5)
    with pytest.raises(ValueError, match="not unit length.*re-save"):
        AsifModel.load(path)


# ---------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0}, "k=0"), ({"k": 2.5}, "k=2.5"), ({"k": 11}, "k=11"), ({"k": True}, "k=True"),
    ({"p": 0}, "p=0"), ({"p": -1}, "p=-1"), ({"p": float("nan")}, "p=nan"), ({"p": float("inf")}, "p=inf"),
    ({"p": 2.5, "clamp_negative": False}, "integer p"),
    ({"ids": list(range(9))}, "9 entries"), ({"ids": [0] * 10}, "more than once"),
    ({"ids": [1.5] * 10}, "ints or strings"), ({"ids": [True] * 10}, "ints or strings"),
    ({"ids": "abcdefghij"}, "single string"),
    ({"chunk_size": 0}, "chunk_size"), ({"memory_budget": -5}, "memory_budget"),
    ({"device": "tpu"}, "device"),
])
def test_bad_model_arguments(pair_data, kwargs, match):
    images, texts, _ = pair_data(14, n_pairs=10)
    with pytest.raises(ValueError, match=match):
        AsifModel(images, texts, **{"k": 3, "p": 2, **kwargs})


@pytest.mark.parametrize("fault,match", [
    ("nan", "anchor_images row 4 is not finite"), ("inf", "anchor_images row 4 is not finite"),
    ("zero", "anchor_images row 4 is a zero vector"), ("rows", "10 rows but anchor_texts has 9"),
    ("empty", "empty"), ("3d", "2-D"), ("strings", "dtype"),
])
def test_bad_anchors(pair_data, fault, match):
    images, texts, _ = pair_data(15, n_pairs=10)
    if fault == "nan":
        images[4, 2] = np.nan
    elif fault == "inf":
        images[4, 0] = np.inf
    elif fault == "zero":
        images[4] = 0
    elif fault == "rows":
        texts = texts[:9]
    elif fault == "empty":
        images, texts = images[:0], texts[:0]
    elif fault == "3d":
        images = images[None]
    elif fault == "strings":
        images = np.full(images.shape, "x")
    with pytest.raises(ValueError, match=match):
        AsifModel(images, texts, k=3, p=2, **CPU)


def test_bad_queries_and_calls(pair_data):
    images, texts, rng = pair_data(16, n_pairs=20)
    model = AsifModel(images, texts, k=4, p=2, **CPU)
    good = rng.standard_normal((3, images.shape[1])).astype(np.float32)
    bad_nan, bad_zero = good.copy(), good.copy()
    bad_nan[1, 0] = np.nan
    bad_zero[2] = 0
    cases = [
        (lambda: model.encode_image(bad_nan), "image_embeddings row 1 is not finite"),
        (lambda: model.encode_image(bad_zero), "image_embeddings row 2 is a zero vector"),
        (lambda: model.encode_image(good[:, :5]), "dimension 5"),
        (lambda: model.encode_text(good), "dimension 12"),
        (lambda: model.encode_image(good[:0]), "empty"),
        (lambda: model.classify(good, rng.standard_normal((5, texts.shape[1])), n_templates=2), "multiple"),
        (lambda: model.classify(good, rng.standard_normal((4, texts.shape[1])), n_templates=0), "n_templates"),
        (lambda: model.classify(good, rng.standard_normal((4, texts.shape[1])), reduce="median"), "reduce"),
        (lambda: model.classify(good, rng.standard_normal((4, texts.shape[1])), unknown_threshold="x"), "unknown"),
        (lambda: model.explain(good, texts[0]), "one image embedding"),
        (lambda: model.explain(good[0], texts[0], top=0), "top"),
        (lambda: model.remove_pairs([99]), "99"),
        (lambda: relative_representation(good, images, k=21), "k=21"),
        (lambda: threshold_curve(np.ones((3, 2)), [0, 1]), "labels"),
        (lambda: threshold_curve(np.ones(3), [0, 1, 1]), "scores"),
        (lambda: AsifModel.load("x.npz", memory_budget=0), "memory_budget"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_repr_and_properties(pair_data):
    images, texts, _ = pair_data(17, n_pairs=20)
    model = AsifModel(images, texts, k=4, p=2, **CPU)
    assert model.n_pairs == 20 and model.ids == tuple(range(20))
    model.k, model.p = 6, 3
    assert (model.k, model.p) == (6, 3.0)
    assert "n_pairs=20" in repr(model) and "k=6" in repr(model)
    with pytest.raises(ValueError, match="p=0"):
        model.p = 0
