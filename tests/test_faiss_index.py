"""Approximate top-k through FAISS (asif_nb.faiss_index, model.with_index("ivf-pq"), ...): recall of the exact top-k
set, true cosines for what it keeps, anchors streamed from a float16 memmap, a saved index served again."""
import faiss
import numpy as np
import pytest

from asif_nb import AsifModel
from asif_nb.faiss_index import FaissSearch, factory_string

K = 50


def _recall(approx, exact):
    return np.mean([np.intersect1d(approx[i].indices, exact[i].indices).size / exact[i].indices.size
                    for i in range(exact.shape[0])])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, d = 20000, 32
    centres = rng.standard_normal((40, d))
    images = (centres[rng.integers(0, 40, n)] + 0.35 * rng.standard_normal((n, d))).astype(np.float32)
    texts = (images[:, :16] + 0.1 * rng.standard_normal((n, 16))).astype(np.float32)
    queries = (centres[rng.integers(0, 40, 200)] + 0.35 * rng.standard_normal((200, d))).astype(np.float32)
    return images, texts, queries


@pytest.mark.parametrize("index, options", [("ivf-flat", {"nlist": 64}), ("ivf-sq8", {"nlist": 64}),
                                            ("hnsw", {})])
def test_each_kind_reaches_its_recall_with_true_cosines(data, index, options):
    images, texts, queries = data
    exact = AsifModel(images, texts, k=K, p=1, device="cpu")
    approx = exact.with_index(index, modality="image", target_recall=0.95, **options)
    backend = approx.index["image"]
    assert not backend.exact and "text" not in approx.index
    got, want = approx.encode_image(queries), exact.encode_image(queries)
    assert _recall(got, want) >= 0.9
    if backend.ivf is not None:
        assert 1 <= backend.nprobe < 64  # calibrated, and it did not need every list
    # p=1: the weights are the kept cosines over their norm; where both keep the same set they agree closely
    same = [i for i in range(len(queries)) if np.array_equal(got[i].indices, want[i].indices)]
    assert same
    np.testing.assert_allclose(got[same].toarray(), want[same].toarray(), rtol=1e-5, atol=1e-6)


def test_auto_nprobe_is_the_smallest_whose_recall_less_two_standard_errors_reaches_the_target(data):
    import torch

    images, texts, queries = data
    queries = np.vstack([queries[:8], np.random.default_rng(4).standard_normal((4, queries.shape[1]))]).astype(
        np.float32)  # a small sample, easy and hard queries: its standard error is not negligible
    model = AsifModel(images, texts, k=K, p=1, device="cpu")
    want = model.encode_image(queries)
    unit = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
    chosen = model.with_index("ivf-flat", modality="image", nlist=64, target_recall=0.97,
                              calibration=unit).index["image"].nprobe

    def lower_at(nprobe):  # the calibration sample's mean recall less two standard errors
        got = model.with_index("ivf-flat", modality="image", nlist=64, nprobe=nprobe).encode_image(queries)
        each = [np.intersect1d(got[i].indices, want[i].indices).size / want[i].indices.size
                for i in range(len(queries))]
        return np.mean(each) - 2 * np.std(each, ddof=1) / np.sqrt(len(each))

    assert lower_at(chosen) >= 0.97
    if chosen > 1:  # a power of two is not simply taken: one step (1/16 of it) fewer lists falls short
        assert lower_at(chosen - max(1, chosen // 16)) < 0.97


def test_a_target_no_nprobe_reaches_is_said_not_silently_taken(data):
    images, texts, queries = data
    model = AsifModel(images, texts, k=K, p=1, device="cpu")
    with pytest.warns(UserWarning, match="do not reach recall 1.0"):  # 4-byte product codes never rank exactly
        fast = model.with_index("ivf-pq", modality="image", nlist=16, m=4, target_recall=1.0)
    assert fast.index["image"].nprobe == 16


def test_calibration_takes_raw_query_embeddings_and_refuses_the_wrong_shape(data):
    import torch

    images, texts, queries = data
    model = AsifModel(images, texts, k=K, p=1, device="cpu")
    unit = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
    options = dict(modality="image", nlist=64, target_recall=0.97)
    by_unit = model.with_index("ivf-flat", calibration=unit, **options).index["image"].nprobe
    raw = (queries * np.linspace(0.2, 30, len(queries))[:, None]).astype(np.float32)  # lengths do not matter
    assert model.with_index("ivf-flat", calibration=raw, **options).index["image"].nprobe == by_unit
    with pytest.raises(ValueError, match="calibration queries must be"):
        model.with_index("ivf-flat", calibration=queries[:, :-1], **options)


def test_an_hnsw_coarse_quantizer_finds_every_list_it_is_asked_to_probe():
    rng = np.random.default_rng(4)  # unclustered rows: a query's top k lie in many lists
    images = rng.standard_normal((30000, 32)).astype(np.float32)
    queries = rng.standard_normal((50, 32)).astype(np.float32)
    exact = AsifModel(images, images[:, :8], k=100, p=1, device="cpu")
    approx = exact.with_index("faiss:IVF512_HNSW32,Flat", modality="image", nprobe=512)  # every list: exhaustive
    assert _recall(approx.encode_image(queries), exact.encode_image(queries)) > 0.999


def test_ivf_pq_over_a_float16_memmap_saved_and_loaded(data, tmp_path):
    images, texts, queries = data
    images, texts, queries = images[:6000, :16].copy(), texts[:6000], queries[:, :16].copy()  # PQ trains slowly
    path = tmp_path / "images.f16"
    disk = np.memmap(path, dtype=np.float16, mode="w+", shape=images.shape)
    disk[:] = images
    disk.flush()
    disk = np.memmap(path, dtype=np.float16, mode="r", shape=images.shape)
    model = AsifModel(disk, texts, k=K, device="cpu")
    exact = AsifModel(images.astype(np.float16), texts, k=K, device="cpu")
    approx = model.with_index("ivf-pq", modality="image", nlist=32, m=4, refine=4)
    backend = approx.index["image"]
    assert backend.build["index_bytes"] < images.size * 2  # codes, not the vectors
    first = approx.encode_image(queries)
    assert _recall(first, exact.encode_image(queries)) >= 0.9
    backend.save(tmp_path / "images.faiss")
    again = model.with_index({"image": FaissSearch.load(tmp_path / "images.faiss", model._images)})
    second = again.encode_image(queries)
    assert np.array_equal(first.indices, second.indices) and np.array_equal(first.data, second.data)


def test_memmap_candidates_get_the_plain_paths_cosines(data, tmp_path):
    images, texts, queries = data
    path = tmp_path / "images.f16"
    disk = np.memmap(path, dtype=np.float16, mode="w+", shape=images.shape)
    disk[:] = images
    disk.flush()
    disk = np.memmap(path, dtype=np.float16, mode="r", shape=images.shape)
    model = AsifModel(disk, texts, k=K, p=1, device="cpu")
    want = model.encode_image(queries)
    # every list, and SQ8 codes: candidates rescored from the memmap (a flat index's own scores are not rescored)
    every_list = model.with_index("ivf-sq8", modality="image", nlist=16, nprobe=16, refine=2)
    assert every_list.index["image"].rescore
    got = every_list.encode_image(queries)
    assert np.array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("where", ["memory", "memmap", "reversed memmap"])
def test_candidate_cosines_are_each_rows_own_dot_products(data, tmp_path, where):
    import torch

    from asif_nb.faiss_index import cosines, torch_view

    images, texts, queries = data
    source = images
    if where != "memory":
        disk = np.memmap(tmp_path / "images.f16", dtype=np.float16, mode="w+", shape=images.shape)
        disk[:] = images
        disk.flush()
        source = np.memmap(tmp_path / "images.f16", dtype=np.float16, mode="r", shape=images.shape)
        source = source[::-1] if where == "reversed memmap" else source  # strides torch cannot view
    anchors = AsifModel(source, texts, k=K, device="cpu")._images
    rows = np.asarray(source, dtype=np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rng = np.random.default_rng(9)
    for r in (1, 3, 8):
        q = torch.nn.functional.normalize(torch.from_numpy(queries[:r]), dim=1)
        ids = rng.integers(0, len(images), (r, 50))
        got = cosines(anchors, ids, q, torch_view(anchors.raw) if anchors.raw is not None else None)
        want = np.einsum("rcd,rd->rc", rows[ids], q.numpy().astype(np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_prefix_limit_keeps_to_the_first_anchors(data):
    import torch

    images, texts, queries = data
    model = AsifModel(images, texts, k=K, device="cpu").with_index("ivf-flat", modality="image", nlist=64)
    backend = model.index["image"]
    q = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
    keys = backend.topk_keys(q, K, None, limit=5000)
    assert ((keys & 0xFFFFFFFF) > 0xFFFFFFFF - 5000).all()  # every index < 5000 (indices are stored reversed)


def test_bad_settings_name_the_fix(data):
    images, texts, _ = data
    model = AsifModel(images, texts, k=K, device="cpu")
    with pytest.raises(ValueError, match="m=5 must divide"):
        model.with_index("ivf-pq", m=5)
    with pytest.raises(ValueError, match="refine=0"):
        model.with_index("ivf-flat", refine=0)
    if faiss.get_num_gpus() == 0:
        with pytest.raises(ValueError, match="gpu=True"):
            model.with_index("ivf-flat", gpu=True, nlist=16)
    big = factory_string("ivf-pq", 10_000_000, 384)  # an HNSW coarse quantizer, 48 one-byte codes per anchor
    assert big.startswith("IVF") and "_HNSW32," in big and big.endswith(",PQ48")
    assert factory_string("faiss:OPQ16,IVF256,PQ16", 10, 64) == "OPQ16,IVF256,PQ16"
