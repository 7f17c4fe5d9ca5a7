"""asif_nb.model: the ASIF recipe (paper §2), its exactness rules, editing, files and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
import torch

import asif_nb.model as M
from asif_nb.model import AsifModel, relative_representation, sweep, threshold_curve

# ---------------------------------------------------------------------------------------------------------
# helpers


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def naive(queries, anchors, k, p, clamp_negative=True):
    """The recipe written out densely in float64: the reference the fast path must match."""
    sims = unit(queries) @ unit(anchors).T
    out = np.zeros_like(sims)
    for i, row in enumerate(sims):
        keep = np.lexsort((np.arange(row.size), -row))[:k]  # value desc, then lowest index
        values = np.maximum(row[keep], 0) if clamp_negative else row[keep]
        values = values ** p
        norm = np.linalg.norm(values)
        out[i, keep] = values / norm if norm > 0 else 0
    return out


def well_separated(rng, n, n_anchors, dim, k):
    """Random queries/anchors whose k-th and (k+1)-th similarities are far apart (no near-ties to flip)."""
    while True:
        queries = rng.standard_normal((n, dim)).astype(np.float32)
        anchors = rng.standard_normal((n_anchors, dim)).astype(np.float32)
        if k == n_anchors:
            return queries, anchors
        top = -np.sort(-(unit(queries) @ unit(anchors).T), axis=1)
        if (top[:, k - 1] - top[:, k]).min() > 1e-5:
            return queries, anchors


def same_csr(a, b):
    assert a.shape == b.shape
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)  # bit for bit


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiny tiles, so that small data crosses many tile and row-block boundaries."""
    monkeypatch.setattr(M, "_TILE_ANCHORS", 64)
    monkeypatch.setattr(M, "_ROW_BLOCK", 32)


def pair_data(seed=0, n_pairs=300, d1=12, d2=8):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_pairs, d1)).astype(np.float32),
            rng.standard_normal((n_pairs, d2)).astype(np.float32), rng)


# ---------------------------------------------------------------------------------------------------------
# the recipe


def hand_model(**kwargs):
    # anchor images (1,0), (0,1), (1,1)/sqrt2; anchor texts the three axes of R^3
    images = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    texts = np.eye(3, dtype=np.float32)
    return AsifModel(images, texts, k=2, p=2, **kwargs)


def test_hand_computed_example():
    model = hand_model()
    # image (3, 4) -> cosines 0.6, 0.8, 1.4/sqrt2 = 0.98995; keep anchors 1 and 2; square: 0.64, 0.98;
    # normalise by sqrt(0.64^2 + 0.98^2) = 1.17047
    ri = model.encode_image(np.array([[3.0, 4.0]]))
    assert isinstance(ri, scipy.sparse.csr_matrix) and ri.dtype == np.float32 and ri.shape == (1, 3)
    assert ri.indices.tolist() == [1, 2]
    np.testing.assert_allclose(ri.data, [0.5467889, 0.8372705], rtol=1e-6)
    # text (0, 1, 2) -> cosines 0, 1/sqrt5, 2/sqrt5; keep 1 and 2; square: 0.2, 0.8; normalise by sqrt(0.68)
    rt = model.encode_text(np.array([[0.0, 1.0, 2.0]]))
    assert rt.indices.tolist() == [1, 2]
    np.testing.assert_allclose(rt.data, [0.2425356, 0.9701425], rtol=1e-6)
    # score = 0.5467889 * 0.2425356 + 0.8372705 * 0.9701425 = 0.1326158 + 0.8122717
    S = model.similarity(np.array([[3.0, 4.0]]), np.array([[0.0, 1.0, 2.0]]))
    assert S.dtype == np.float32 and S.shape == (1, 1)
    np.testing.assert_allclose(S, [[0.9448875]], rtol=1e-6)


def test_negative_similarities_are_clamped_unless_asked():
    # image (-1, 0): cosines -1, 0, -0.7071; the top-2 are anchor 1 (0) and anchor 2 (-0.7071)
    clamped = hand_model().encode_image(np.array([[-1.0, 0.0]]))
    assert clamped.nnz == 0  # nothing similar: an empty representation, similarity 0 to everything
    # the authors' behaviour: (-0.7071)^2 = 0.5 makes a dissimilar anchor the whole representation
    raw = hand_model(clamp_negative=False).encode_image(np.array([[-1.0, 0.0]]))
    assert raw.indices.tolist() == [2]
    np.testing.assert_allclose(raw.data, [1.0], rtol=1e-6)


@pytest.mark.parametrize("n,n_anchors,dim,k,p,chunk_size,budget", [
    (1, 5, 3, 1, 1, None, None),
    (7, 64, 5, 64, 2, None, None),
    (33, 200, 8, 10, 8, 1, None),
    (40, 300, 6, 50, 3.5, 100, 1),
    (50, 500, 16, 128, 8, 64, 2**16),
    (65, 333, 4, 100, 1, 7, 10**5),
    (100, 640, 24, 200, 5, None, 1),
    (17, 129, 32, 65, 0.5, 65, None),
])
def test_matches_dense_reference(small_tiles, n, n_anchors, dim, k, p, chunk_size, budget):
    rng = np.random.default_rng(n * 1000 + n_anchors)
    queries, anchors = well_separated(rng, n, n_anchors, dim, k)
    got = relative_representation(queries, anchors, k=k, p=p, chunk_size=chunk_size, memory_budget=budget)
    expected = naive(queries, anchors, k, p)
    assert got.has_sorted_indices and np.all(np.diff(got.indptr) <= k)
    np.testing.assert_array_equal(got.toarray() != 0, expected != 0)
    # float32 cosines are off by ~1e-7; p < 1 magnifies that near 0 (d(c^p) = p c^(p-1) dc)
    np.testing.assert_allclose(got.toarray(), expected, rtol=2e-5, atol=1e-6 if p >= 1 else 1e-5)


def test_matches_dense_reference_without_clamping(small_tiles):
    rng = np.random.default_rng(5)
    queries, anchors = well_separated(rng, 30, 200, 6, 40)
    for p in (1, 2, 3):
        got = relative_representation(queries, anchors, k=40, p=p, clamp_negative=False).toarray()
        np.testing.assert_allclose(got, naive(queries, anchors, 40, p, clamp_negative=False), rtol=2e-5, atol=1e-6)


def test_default_tiles_match_reference_across_many_tiles():
    rng = np.random.default_rng(11)
    queries, anchors = well_separated(rng, 40, 5000, 16, 100)
    expected = naive(queries, anchors, 100, 8)
    got = relative_representation(queries, anchors, k=100, p=8).toarray()
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_ties_go_to_the_lowest_index_whatever_the_chunking():
    # 12 distinct anchors, each repeated 250 times in shuffled order: every similarity is tied 250 ways
    rng = np.random.default_rng(3)
    distinct = rng.standard_normal((12, 10)).astype(np.float32)
    owner = rng.permutation(np.repeat(np.arange(12), 250))
    anchors = distinct[owner]
    queries = rng.standard_normal((20, 10)).astype(np.float32)
    best = np.argmax(unit(queries) @ unit(distinct).T, axis=1)
    k = 7
    results = [relative_representation(queries, anchors, k=k, p=3, chunk_size=c, memory_budget=b)
               for c, b in [(None, None), (1, None), (2048, 1), (2500, 10**5), (3000, 2**30)]]
    for got in results[1:]:
        same_csr(got, results[0])
    for i, row in enumerate(results[0]):
        # the k lowest-indexed copies of the most similar distinct anchor, all with the same weight
        assert row.indices.tolist() == np.flatnonzero(owner == best[i])[:k].tolist()
        np.testing.assert_allclose(row.data, 1 / np.sqrt(k), rtol=1e-6)


def test_results_do_not_depend_on_chunk_size_memory_budget_or_batch():
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    anchors = rng.standard_normal((5000, 16)).astype(np.float32)
    reference = relative_representation(queries, anchors, k=300, p=8)
    for chunk_size, budget in [(1, None), (2049, 1), (4096, 3 * 10**5), (10**6, None)]:
        same_csr(relative_representation(queries, anchors, k=300, p=8, chunk_size=chunk_size,
                                         memory_budget=budget), reference)
    # a query's representation does not depend on the other queries it came with
    same_csr(relative_representation(queries[5:6], anchors, k=300, p=8), reference[5])
    same_csr(relative_representation(queries[:9], anchors, k=300, p=8), reference[:9])


def test_anchor_permutation_invariance():
    images, texts, rng = pair_data(1)
    queries_i = rng.standard_normal((15, images.shape[1])).astype(np.float32)
    queries_t = rng.standard_normal((11, texts.shape[1])).astype(np.float32)
    model = AsifModel(images, texts, k=30, p=5)
    order = rng.permutation(len(images))
    permuted = AsifModel(images[order], texts[order], k=30, p=5)
    np.testing.assert_allclose(permuted.similarity(queries_i, queries_t), model.similarity(queries_i, queries_t),
                               rtol=1e-5, atol=1e-7)
    # the same representation, with its columns moved along with the anchors
    np.testing.assert_allclose(permuted.encode_image(queries_i).toarray(),
                               model.encode_image(queries_i).toarray()[:, order], rtol=1e-5, atol=1e-7)


def test_inputs_numpy_torch_memmap_float16_and_1d(tmp_path):
    images, texts, rng = pair_data(2, n_pairs=3000)
    queries = rng.standard_normal((9, images.shape[1])).astype(np.float32)
    model = AsifModel(images, texts, k=40, p=8)
    reference = model.encode_image(queries)
    same_csr(AsifModel(torch.from_numpy(images), torch.from_numpy(texts), k=40, p=8).encode_image(
        torch.from_numpy(queries)), reference)
    # a memmap is kept as it is (not copied) and normalised chunk by chunk, to the same bits
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    mm_model = AsifModel(mapped, texts, k=40, p=8, chunk_size=1000)
    assert mm_model._images.raw is mapped
    same_csr(mm_model.encode_image(queries), reference)
    # float16 anchors: the same as their float32 values
    half = images.astype(np.float16)
    same_csr(AsifModel(half, texts, k=40, p=8).encode_image(queries),
             AsifModel(half.astype(np.float32), texts, k=40, p=8).encode_image(queries))
    # a 1-D input is one row
    same_csr(model.encode_image(queries[3]), reference[3])
    assert model.similarity(queries[3], rng.standard_normal(texts.shape[1])).shape == (1, 1)


def test_representation_rows_are_unit_and_sparse():
    images, texts, rng = pair_data(3)
    model = AsifModel(images, texts, k=25, p=8)
    ri = model.encode_image(rng.standard_normal((30, images.shape[1])))
    nnz = np.diff(ri.indptr)
    assert np.all((nnz > 0) & (nnz <= 25)) and np.all(ri.data > 0)
    np.testing.assert_allclose(scipy.sparse.linalg.norm(ri, axis=1), 1, rtol=1e-6)
    S = model.similarity(rng.standard_normal((4, images.shape[1])), rng.standard_normal((6, texts.shape[1])))
    assert S.dtype == np.float32 and S.shape == (4, 6) and np.all((S >= 0) & (S <= 1 + 1e-6))


@pytest.mark.parametrize("n_anchors,k", [(40, 30), (40000, 5)])  # the dense and the sparse product
def test_dot_routes_agree_with_dense_product(n_anchors, k):
    rng = np.random.default_rng(n_anchors)
    a = relative_representation(rng.standard_normal((20, 6)), rng.standard_normal((n_anchors, 6)), k=k, p=2)
    b = relative_representation(rng.standard_normal((9, 6)), rng.standard_normal((n_anchors, 6)), k=k, p=2)
    got = M._dot(a, b)
    assert got.dtype == np.float32 and got.shape == (20, 9)
    np.testing.assert_allclose(got, a.toarray() @ b.toarray().T, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# classify, explain, threshold_curve


def class_setup():
    # two classes, two templates each, class-major: rows (c0 t0, c0 t1, c1 t0, c1 t1)
    images = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float32)
    texts = images.copy()
    model = AsifModel(images, texts, k=2, p=1)
    prompts = np.array([[-2, 2, 3], [3, -1, -2], [1, -2, -2], [-2, -1, 3]], dtype=np.float32)
    return model, prompts


def test_classify_max_and_mean_rules():
    model, prompts = class_setup()
    queries = np.array([[1, 0, 0.05], [0, 1, 0.1], [2, 2, 3]], dtype=np.float32)
    pred, scores = model.classify(queries, prompts, n_templates=2, reduce="max")
    S = model.similarity(queries, prompts)
    np.testing.assert_allclose(scores, S.reshape(3, 2, 2).max(axis=2), rtol=1e-6)
    assert pred.dtype == np.int64 and pred.tolist() == scores.argmax(axis=1).tolist()
    # 'mean': similarity to the re-normalised mean of each class's template representations
    pred_mean, scores_mean = model.classify(queries, prompts, n_templates=2, reduce="mean")
    rt = model.encode_text(prompts).toarray()
    means = np.stack([rt[0:2].mean(0), rt[2:4].mean(0)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(scores_mean, model.encode_image(queries).toarray() @ means.T, rtol=1e-5, atol=1e-7)
    # the rules differ here: class 1's single best prompt wins 'max', class 0's two prompts together win 'mean'
    assert pred[2] == 1 and pred_mean[2] == 0


def test_classify_unknown_threshold():
    model, prompts = class_setup()
    queries = np.array([[1, 0, 0.05], [0, 1, 0.1], [-1, -1, -1]], dtype=np.float32)
    pred, scores = model.classify(queries, prompts, n_templates=2)
    cut = float(np.sort(scores.max(axis=1))[1])  # between the weakest and the middle best score
    pred_t, scores_t = model.classify(queries, prompts, n_templates=2, unknown_threshold=cut)
    np.testing.assert_array_equal(scores_t, scores)
    best = scores.max(axis=1)
    np.testing.assert_array_equal(pred_t, np.where(best < cut, -1, pred))
    assert (pred_t == -1).sum() == 1 and pred_t[2] == -1  # the query unlike every anchor scores 0


def test_explain_lists_the_shared_anchors_and_sums_to_the_score():
    images, texts, rng = pair_data(6, n_pairs=400)
    ids = [f"pair-{i}" for i in range(400)]
    model = AsifModel(images, texts, k=60, p=3, ids=ids)
    image, text = images[17] + 0.1 * rng.standard_normal(images.shape[1]), texts[17]
    rows = model.explain(image, text, top=None)
    score = float(model.similarity(image, text)[0, 0])
    assert rows and set(rows[0]) == {"anchor", "id", "image_weight", "text_weight", "contribution"}
    assert sum(r["contribution"] for r in rows) == pytest.approx(score, rel=1e-5)
    contributions = [r["contribution"] for r in rows]
    assert contributions == sorted(contributions, reverse=True)
    ri, rt = model.encode_image(image).toarray()[0], model.encode_text(text).toarray()[0]
    assert {r["anchor"] for r in rows} == set(np.flatnonzero((ri > 0) & (rt > 0)))
    for r in rows:
        assert r["id"] == ids[r["anchor"]]
        assert r["image_weight"] == pytest.approx(ri[r["anchor"]]) and r["text_weight"] == pytest.approx(rt[r["anchor"]])
        assert r["contribution"] == pytest.approx(r["image_weight"] * r["text_weight"])
    assert rows[0]["anchor"] == 17  # the pair itself explains most of the match
    assert model.explain(image, text, top=3) == rows[:3]


def test_threshold_curve_by_hand():
    scores = np.array([[0.9, 0.1], [0.2, 0.7], [0.4, 0.3], [0.05, 0.0]])
    labels = np.array([0, 0, 0, 1])  # right, wrong, right, wrong
    curve = threshold_curve(scores, labels)
    np.testing.assert_array_equal(curve["threshold"], [0.05, 0.4, 0.7, 0.9, np.inf])
    np.testing.assert_allclose(curve["accuracy"], [0.5, 0.5, 0.25, 0.25, 0])
    np.testing.assert_allclose(curve["wrong"], [0.5, 0.25, 0.25, 0, 0])
    np.testing.assert_allclose(curve["unknown"], [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve["accuracy"] + curve["wrong"] + curve["unknown"], 1)
    np.testing.assert_allclose(curve["coverage"], [1, 0.75, 0.5, 0.25, 0])
    np.testing.assert_allclose(curve["risk"][:4], [0.5, 1 / 3, 0.5, 0])
    assert np.isnan(curve["risk"][4])
    custom = threshold_curve(scores, labels, thresholds=[0.3])
    assert custom["accuracy"].tolist() == [0.5] and custom["unknown"].tolist() == [0.25]


def test_threshold_curve_agrees_with_classify():
    model, prompts = class_setup()
    queries = np.random.default_rng(0).standard_normal((25, 3)).astype(np.float32)
    labels = np.arange(25) % 2
    pred, scores = model.classify(queries, prompts, n_templates=2)
    curve = threshold_curve(scores, labels)
    for t, acc, unknown in zip(curve["threshold"], curve["accuracy"], curve["unknown"]):
        pred_t, _ = model.classify(queries, prompts, n_templates=2, unknown_threshold=t)
        assert acc == np.mean(pred_t == labels) and unknown == np.mean(pred_t == -1)


# ---------------------------------------------------------------------------------------------------------
# sweep


def sweep_data(seed=7, n_pairs=700, n_classes=5):
    rng = np.random.default_rng(seed)
    centres_i, centres_t = rng.standard_normal((n_classes, 10)), rng.standard_normal((n_classes, 6))
    owner = rng.integers(0, n_classes, n_pairs)
    images = (centres_i[owner] + 0.8 * rng.standard_normal((n_pairs, 10))).astype(np.float32)
    texts = (centres_t[owner] + 0.8 * rng.standard_normal((n_pairs, 6))).astype(np.float32)
    labels = rng.integers(0, n_classes, 60)
    queries = (centres_i[labels] + 0.8 * rng.standard_normal((60, 10))).astype(np.float32)
    prompts = np.repeat(centres_t, 2, axis=0) + 0.3 * rng.standard_normal((2 * n_classes, 6))
    return queries, labels, prompts.astype(np.float32), images, texts


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_sweep_equals_one_model_per_point(small_tiles, reduce):
    queries, labels, prompts, images, texts = sweep_data()
    sizes, ks, ps = [30, 100, 250, 700], [10, 50, 200], [1, 8]
    rows = sweep(queries, labels, prompts, images, texts, n_pairs=sizes, k=ks, p=ps, n_templates=2, reduce=reduce)
    assert [(r["n_pairs"], r["k"], r["p"]) for r in rows] == [(n, k, p) for n in sizes for k in ks for p in ps]
    for row in rows:
        if row["k"] > row["n_pairs"]:
            assert row["applicable"] is False and row["accuracy"] is None
            continue
        n = row["n_pairs"]
        model = AsifModel(images[:n], texts[:n], k=row["k"], p=row["p"])
        pred, _ = model.classify(queries, prompts, n_templates=2, reduce=reduce)
        assert row["applicable"] is True and row["accuracy"] == np.mean(pred == labels)
    assert max(r["accuracy"] for r in rows if r["applicable"]) > 0.5  # the clusters are learnable


def test_sweep_reads_each_anchor_once(monkeypatch):
    queries, labels, prompts, images, texts = sweep_data(n_pairs=5000)
    read = []
    original = M._Anchors.rows
    monkeypatch.setattr(M._Anchors, "rows", lambda self, a, b, device: read.append(b - a) or original(self, a, b, device))
    sweep(queries, labels, prompts, images, texts, n_pairs=[100, 1000, 2500, 5000], k=[5, 50], p=[1, 3, 8],
          n_templates=2)
    assert sum(read) == 2 * 5000  # image anchors once, text anchors once


# ---------------------------------------------------------------------------------------------------------
# editing: add and remove pairs


def test_remove_pairs_is_true_unlearning():
    images, texts, rng = pair_data(8, n_pairs=3000)
    queries_i = rng.standard_normal((12, images.shape[1])).astype(np.float32)
    queries_t = rng.standard_normal((12, texts.shape[1])).astype(np.float32)
    gone = rng.choice(3000, 400, replace=False)
    kept = np.setdiff1d(np.arange(3000), gone)
    clean = AsifModel(images[kept], texts[kept], k=50, p=8, ids=kept.tolist())
    outputs = []
    for trial in range(2):  # the removed pairs' embeddings differ between the trials
        changed_i, changed_t = images.copy(), texts.copy()
        changed_i[gone] = rng.standard_normal((400, images.shape[1]))
        changed_t[gone] = rng.standard_normal((400, texts.shape[1]))
        model = AsifModel(changed_i, changed_t, k=50, p=8)
        model.remove_pairs(gone.tolist())
        assert model.ids == tuple(kept.tolist()) and model.n_pairs == 2600
        outputs.append((model.encode_image(queries_i), model.encode_text(queries_t),
                        model.similarity(queries_i, queries_t)))
        stored = model._images.data.numpy()
        assert not np.isin(stored.view([("", stored.dtype)] * stored.shape[1]),
                           unit(changed_i[gone]).astype(np.float32).view([("", stored.dtype)] * stored.shape[1])).any()
    for ri, rt, S in outputs:  # equal to a model that never saw the removed pairs, bit for bit
        same_csr(ri, clean.encode_image(queries_i))
        same_csr(rt, clean.encode_text(queries_t))
        np.testing.assert_array_equal(S, clean.similarity(queries_i, queries_t))


def test_add_pairs_equals_building_with_them():
    images, texts, rng = pair_data(9)
    queries = rng.standard_normal((10, images.shape[1])).astype(np.float32)
    model = AsifModel(images[:200], texts[:200], k=30, p=4)
    model.add_pairs(images[200:], texts[200:])
    assert model.ids == tuple(range(300))
    same_csr(model.encode_image(queries), AsifModel(images, texts, k=30, p=4).encode_image(queries))
    named = AsifModel(images[:5], texts[:5], k=2, p=4, ids=list("abcde"))
    named.add_pairs(images[5:7], texts[5:7], ids=["f", "g"])
    assert named.ids == tuple("abcdefg")
    named.remove_pairs(["a", "f"])
    assert named.ids == tuple("bcdeg")


def test_failed_edits_change_nothing():
    images, texts, rng = pair_data(10, n_pairs=50)
    model = AsifModel(images, texts, k=10, p=2, ids=[f"x{i}" for i in range(50)])
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
    ]
    for attempt in attempts:
        with pytest.raises(ValueError):
            attempt()
        assert model.ids == before[0]
        same_csr(model.encode_image(queries), before[1])
    with pytest.raises(ValueError, match="k=60"):
        model.k = 60
    assert model.k == 10


# ---------------------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("name", ["model.safetensors", "model.npz"])
@pytest.mark.parametrize("ids", [None, list(range(100)) + [f"pair/{i} €" for i in range(100)]])
def test_save_load_round_trip_is_exact(tmp_path, name, ids):
    images, texts, rng = pair_data(12, n_pairs=200)
    model = AsifModel(images, texts, k=20, p=3.5, ids=ids)
    path = model.save(tmp_path / name) if ids is None else model.save(str(tmp_path / name))
    loaded = AsifModel.load(path)
    assert (loaded.k, loaded.p, loaded.clamp_negative, loaded.ids) == (model.k, model.p, model.clamp_negative,
                                                                       model.ids)
    queries = rng.standard_normal((8, images.shape[1])).astype(np.float32)
    prompts = rng.standard_normal((6, texts.shape[1])).astype(np.float32)
    same_csr(loaded.encode_image(queries), model.encode_image(queries))
    np.testing.assert_array_equal(loaded.similarity(queries, prompts), model.similarity(queries, prompts))
    assert not list(tmp_path.glob(".*part"))  # no temporary file left behind


@pytest.fixture
def unique_ids_model():
    images, texts, _ = pair_data(13, n_pairs=30)
    return AsifModel(images, texts, k=5, p=2, ids=[f"p{i}" for i in range(30)], clamp_negative=False)


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


def test_damaged_metadata_is_refused(tmp_path, unique_ids_model):
    import safetensors.torch

    path = unique_ids_model.save(tmp_path / "m.safetensors")
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    for change in ({"version": "99"}, {"k": "lots"}, {"ids": json.dumps(["a", "a"] * 15)}, {"k": "31"}):
        path.write_bytes(safetensors.torch.save(tensors, metadata={**meta, **change}))
        with pytest.raises(ValueError):
            AsifModel.load(path)


# ---------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0}, "k=0"), ({"k": 2.5}, "k=2.5"), ({"k": 11}, "k=11"), ({"k": True}, "k=True"),
    ({"p": 0}, "p=0"), ({"p": -1}, "p=-1"), ({"p": float("nan")}, "p=nan"), ({"p": float("inf")}, "p=inf"),
    ({"p": 2.5, "clamp_negative": False}, "integer p"),
    ({"ids": list(range(9))}, "9 entries"), ({"ids": [0] * 10}, "more than once"),
    ({"ids": [1.5] * 10}, "ints or strings"), ({"ids": "abcdefghij"}, "single string"),
    ({"chunk_size": 0}, "chunk_size"), ({"memory_budget": -5}, "memory_budget"),
    ({"device": "tpu"}, "device"),
])
def test_bad_model_arguments(kwargs, match):
    images, texts, _ = pair_data(14, n_pairs=10)
    with pytest.raises(ValueError, match=match):
        AsifModel(images, texts, **{"k": 3, "p": 2, **kwargs})


@pytest.mark.parametrize("fault,match", [
    ("nan", "anchor_images row 4 is not finite"), ("inf", "anchor_images row 4 is not finite"),
    ("zero", "anchor_images row 4 is a zero vector"), ("rows", "10 rows but anchor_texts has 9"),
    ("empty", "empty"), ("3d", "2-D"), ("strings", "dtype"),
])
def test_bad_anchors(fault, match):
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
        AsifModel(images, texts, k=3, p=2)


def test_bad_queries_and_calls():
    images, texts, rng = pair_data(16, n_pairs=20)
    model = AsifModel(images, texts, k=4, p=2)
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
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_bad_sweep_arguments():
    queries, labels, prompts, images, texts = sweep_data(n_pairs=100)
    cases = [
        ({"n_pairs": [50, 101]}, "n_pairs entry=101"), ({"n_pairs": []}, "n_pairs is empty"),
        ({"k": [0]}, "k=0"), ({"p": [-2]}, "p=-2"), ({"labels": labels[:5]}, "labels"),
        ({"labels": labels + 100}, "labels"), ({"n_templates": 3}, "multiple"),
        ({"anchor_texts": texts[:50]}, "different numbers of rows"), ({"reduce": "min"}, "reduce"),
    ]
    for change, match in cases:
        args = {"image_embeddings": queries, "labels": labels, "prompt_embeddings": prompts,
                "anchor_images": images, "anchor_texts": texts, "n_pairs": [50, 100], "k": [5], "p": [2],
                "n_templates": 2, **change}
        with pytest.raises(ValueError, match=match):
            sweep(**args)


def test_repr_and_properties():
    images, texts, _ = pair_data(17, n_pairs=20)
    model = AsifModel(images, texts, k=4, p=2, device="cpu")
    assert model.n_pairs == 20 and model.ids == tuple(range(20))
    model.k, model.p = 6, 3
    assert (model.k, model.p) == (6, 3.0)
    assert "n_pairs=20" in repr(model) and "k=6" in repr(model)
    with pytest.raises(ValueError, match="p=0"):
        model.p = 0
