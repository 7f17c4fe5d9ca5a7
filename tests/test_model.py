"""asif_nb.model: the ASIF recipe (paper §2), its exactness rules, classify and explain.

Bit-identity claims are pinned to the CPU (``device="cpu"``): a GPU picks its kernels by shape and agrees to
float tolerance only. 9,000+ anchors cross several of the streaming top-k's 2,048-anchor tiles."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

from asif_nb import ShardedRows, metrics
from asif_nb.model import AsifModel, relative_representation

CPU = {"device": "cpu"}


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def naive(queries, anchors, k, p, clamp_negative=True):
    """The recipe written out densely in float64: the reference the streaming path must match."""
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
        if (top[:, k - 1] - top[:, k]).min() > 1e-6:
            return queries, anchors


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
    # the authors' bare primitives: (-0.7071)^2 = 0.5 makes a dissimilar anchor the whole representation
    raw = hand_model(clamp_negative=False).encode_image(np.array([[-1.0, 0.0]]))
    assert raw.indices.tolist() == [2]
    np.testing.assert_allclose(raw.data, [1.0], rtol=1e-6)


@pytest.mark.parametrize("n,n_anchors,dim,k,p,chunk_size,budget", [
    (1, 5, 3, 1, 1, None, None),
    (7, 64, 5, 64, 2, None, None),
    (33, 20000, 8, 10, 8, 1, None),
    (40, 17000, 6, 50, 3.5, 9000, 1),
    (50, 25000, 16, 900, 8, None, 2**16),
    (65, 8193, 4, 100, 1, 7, 10**5),
    (17, 9000, 12, 8192, 0.5, None, None),
])
def test_matches_dense_reference(n, n_anchors, dim, k, p, chunk_size, budget):
    rng = np.random.default_rng(n * 1000 + n_anchors)
    queries, anchors = well_separated(rng, n, n_anchors, dim, k)
    got = relative_representation(queries, anchors, k=k, p=p, chunk_size=chunk_size, memory_budget=budget, **CPU)
    expected = naive(queries, anchors, k, p)
    assert got.has_sorted_indices and np.all(np.diff(got.indptr) <= k)
    np.testing.assert_array_equal(got.toarray() != 0, expected != 0)
    # float32 cosines are off by ~1e-7; p < 1 magnifies that near 0 (d(c^p) = p c^(p-1) dc)
    np.testing.assert_allclose(got.toarray(), expected, rtol=2e-5, atol=1e-6 if p >= 1 else 1e-5)


def test_matches_dense_reference_without_clamping():
    rng = np.random.default_rng(5)
    queries, anchors = well_separated(rng, 30, 12000, 6, 40)
    for p in (1, 2, 3):
        got = relative_representation(queries, anchors, k=40, p=p, clamp_negative=False, **CPU).toarray()
        np.testing.assert_allclose(got, naive(queries, anchors, 40, p, clamp_negative=False), rtol=2e-5, atol=1e-6)


def test_ties_go_to_the_lowest_index_whatever_the_chunking(same_csr):
    # 12 distinct anchors, each repeated 2,000 times in shuffled order: every similarity is tied 2,000 ways,
    # across tiles, and the k-th value is tied inside the first tile too
    rng = np.random.default_rng(3)
    distinct = rng.standard_normal((12, 10)).astype(np.float32)
    owner = rng.permutation(np.repeat(np.arange(12), 2000))
    anchors = distinct[owner]
    queries = rng.standard_normal((20, 10)).astype(np.float32)
    best = np.argmax(unit(queries) @ unit(distinct).T, axis=1)
    for k in (7, 900):
        results = [relative_representation(queries, anchors, k=k, p=3, chunk_size=c, memory_budget=b, **CPU)
                   for c, b in [(None, None), (1, None), (8192, 1), (9000, 10**5), (30000, 2**30)]]
        for got in results[1:]:
            same_csr(got, results[0])
        for i, row in enumerate(results[0]):
            # the k lowest-indexed copies of the most similar distinct anchor, all with the same weight
            assert row.indices.tolist() == np.flatnonzero(owner == best[i])[:k].tolist()
            np.testing.assert_allclose(row.data, 1 / np.sqrt(k), rtol=1e-5)


def test_results_do_not_depend_on_chunk_size_memory_budget_or_batch(same_csr):
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    anchors = rng.standard_normal((20000, 16)).astype(np.float32)
    reference = relative_representation(queries, anchors, k=300, p=8, **CPU)
    for chunk_size, budget in [(1, None), (8193, 1), (16384, 3 * 10**5), (10**6, None)]:
        same_csr(relative_representation(queries, anchors, k=300, p=8, chunk_size=chunk_size,
                                         memory_budget=budget, **CPU), reference)
    # a query's representation does not depend on the other queries it came with
    same_csr(relative_representation(queries[5:6], anchors, k=300, p=8, **CPU), reference[5])
    same_csr(relative_representation(queries[:9], anchors, k=300, p=8, **CPU), reference[:9])


def test_anchor_permutation_invariance(pair_data):
    images, texts, rng = pair_data(1)
    queries_i = rng.standard_normal((15, images.shape[1])).astype(np.float32)
    queries_t = rng.standard_normal((11, texts.shape[1])).astype(np.float32)
    model = AsifModel(images, texts, k=30, p=5, **CPU)
    order = rng.permutation(len(images))
    permuted = AsifModel(images[order], texts[order], k=30, p=5, **CPU)
    np.testing.assert_allclose(permuted.similarity(queries_i, queries_t), model.similarity(queries_i, queries_t),
                               rtol=1e-5, atol=1e-7)
    # the same representation, with its columns moved along with the anchors
    np.testing.assert_allclose(permuted.encode_image(queries_i).toarray(),
                               model.encode_image(queries_i).toarray()[:, order], rtol=1e-5, atol=1e-7)


def test_inputs_numpy_torch_memmap_sharded_float16_and_1d(tmp_path, pair_data, same_csr):
    images, texts, rng = pair_data(2, n_pairs=20000)
    queries = rng.standard_normal((9, images.shape[1])).astype(np.float32)
    model = AsifModel(images, texts, k=40, p=8, **CPU)
    reference = model.encode_image(queries)
    same_csr(AsifModel(torch.from_numpy(images), torch.from_numpy(texts), k=40, p=8, **CPU).encode_image(
        torch.from_numpy(queries)), reference)
    # a memmap is streamed and normalised chunk by chunk, to the same bits
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    same_csr(AsifModel(mapped, texts, k=40, p=8, chunk_size=1000, **CPU).encode_image(queries), reference)
    # so is a bundle's ShardedRows, across its shards, in float16 too (= its float32 values)
    half = images.astype(np.float16)
    for i, rows in enumerate((half[:7000], half[7000:7001], half[7001:])):
        np.save(tmp_path / f"half-{i}.npy", rows)
    sharded = ShardedRows([tmp_path / f"half-{i}.npy" for i in range(3)])
    in_memory = AsifModel(half.astype(np.float32), texts, k=40, p=8, **CPU).encode_image(queries)
    same_csr(AsifModel(sharded, texts, k=40, p=8, **CPU).encode_image(queries), in_memory)
    same_csr(AsifModel(half, texts, k=40, p=8, **CPU).encode_image(queries), in_memory)
    # a 1-D input is one row
    same_csr(model.encode_image(queries[3]), reference[3])
    assert model.similarity(queries[3], rng.standard_normal(texts.shape[1])).shape == (1, 1)


def test_representation_rows_are_unit_and_sparse(pair_data):
    images, texts, rng = pair_data(3)
    model = AsifModel(images, texts, k=25, p=8, **CPU)
    ri = model.encode_image(rng.standard_normal((30, images.shape[1])))
    nnz = np.diff(ri.indptr)
    assert np.all((nnz > 0) & (nnz <= 25)) and np.all(ri.data > 0)
    np.testing.assert_allclose(scipy.sparse.linalg.norm(ri, axis=1), 1, rtol=1e-6)
    S = model.similarity(rng.standard_normal((4, images.shape[1])), rng.standard_normal((6, texts.shape[1])))
    assert S.dtype == np.float32 and S.shape == (4, 6) and np.all((S >= 0) & (S <= 1 + 1e-6))


@pytest.mark.parametrize("n_anchors,k", [(40, 30), (40000, 5)])  # every anchor shared / almost none
def test_similarity_is_the_product_of_the_representations_whatever_the_batch(n_anchors, k):
    rng = np.random.default_rng(n_anchors)
    model = AsifModel(rng.standard_normal((n_anchors, 6)), rng.standard_normal((n_anchors, 5)), k=k, p=2, **CPU)
    images, texts = rng.standard_normal((20, 6)), rng.standard_normal((9, 5))
    got = model.similarity(images, texts)
    assert got.dtype == np.float32 and got.shape == (20, 9)
    a, b = model.encode_image(images).toarray(), model.encode_text(texts).toarray()
    np.testing.assert_allclose(got, a @ b.T, rtol=1e-5, atol=1e-7)
    # each score depends on its two rows only, bit for bit
    assert np.array_equal(model.similarity(images[3:4], texts[5:7]), got[3:4, 5:7])


def test_a_score_does_not_depend_on_how_many_texts_come_with_it():
    # 8 texts against 2,000 anchors with k=300 are dense rows; 8,400 texts are too many to hold densely:
    # the scores are computed by different scipy products, and must agree bit for bit
    rng = np.random.default_rng(21)
    model = AsifModel(rng.standard_normal((2000, 6)), rng.standard_normal((2000, 5)), k=300, p=3, **CPU)
    images, texts = rng.standard_normal((20, 6)), rng.standard_normal((8400, 5))
    many = model.similarity(images, texts)
    assert np.array_equal(model.similarity(images, texts[:8]), many[:, :8])
    assert np.array_equal(model.similarity(images[:1], texts[-3:]), many[:1, -3:])


# ---------------------------------------------------------------------------------------------------------
# classify, explain, the tie rule


def class_setup():
    # two classes, two templates each, class-major: rows (c0 t0, c0 t1, c1 t0, c1 t1)
    images = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float32)
    texts = images.copy()
    model = AsifModel(images, texts, k=2, p=1, **CPU)
    prompts = np.array([[-2, 2, 3], [3, -1, -2], [1, -2, -2], [-2, -1, 3]], dtype=np.float32)
    return model, prompts


def test_classify_max_and_mean_rules():
    model, prompts = class_setup()
    queries = np.array([[1, 0, 0.05], [0, 1, 0.1], [2, 2, 3]], dtype=np.float32)
    pred, scores = model.classify(queries, prompts, n_templates=2, reduce="max")
    S = model.similarity(queries, prompts)
    np.testing.assert_allclose(scores, S.reshape(3, 2, 2).max(axis=2), rtol=1e-6)
    assert pred.dtype == np.int64 and pred.tolist() == metrics.predict(scores).tolist()
    # 'mean': similarity to the re-normalised mean of each class's template representations
    pred_mean, scores_mean = model.classify(queries, prompts, n_templates=2, reduce="mean")
    rt = model.encode_text(prompts).toarray()
    means = np.stack([rt[0:2].mean(0), rt[2:4].mean(0)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(scores_mean, model.encode_image(queries).toarray() @ means.T, rtol=1e-5, atol=1e-7)
    # the rules differ here: class 1's single best prompt wins 'max', class 0's two prompts together win 'mean'
    assert pred[2] == 1 and pred_mean[2] == 0


def test_classify_gives_no_answer_when_no_anchor_is_shared_with_any_prompt():
    # image anchors 0, 1 point along x, anchors 2, 3 along y; text anchors 0, 1 along u, 2, 3 along v.
    images = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    texts = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    model = AsifModel(images, texts, k=2, p=1, **CPU)
    prompts = np.array([[1, 0.05], [1, 0.02]], dtype=np.float32)  # both classes use text anchors 0 and 1 only
    queries = np.array([[0.02, 1], [1, 0.03]], dtype=np.float32)  # query 0 uses image anchors 2, 3: no overlap
    labels = np.array([0, 0])
    pred, scores = model.classify(queries, prompts)
    assert scores[0].tolist() == [0.0, 0.0]  # an all-zero row: nothing to tell the classes apart
    assert pred[0] == -1  # no answer, where argmax would have credited class 0 with a correct answer
    assert scores[0].argmax() == labels[0]
    assert pred[1] >= 0
    assert metrics.accuracy(pred, labels) == np.mean(pred == labels) == metrics.accuracy(scores, labels)


def test_classify_unknown_threshold():
    model, prompts = class_setup()
    queries = np.array([[1, 0, 0.05], [0, 1, 0.1], [-1, -1, -1]], dtype=np.float32)
    pred, scores = model.classify(queries, prompts, n_templates=2)
    cut = float(np.sort(scores.max(axis=1))[1])  # between the weakest and the middle best score
    pred_t, scores_t = model.classify(queries, prompts, n_templates=2, unknown_threshold=cut)
    np.testing.assert_array_equal(scores_t, scores)
    np.testing.assert_array_equal(pred_t, np.where(scores.max(axis=1) < cut, -1, pred))
    assert (pred_t == -1).sum() == 1 and pred_t[2] == -1  # the query unlike every anchor scores 0


def test_threshold_curve_agrees_with_classify():
    model, prompts = class_setup()
    queries = np.random.default_rng(0).standard_normal((25, 3)).astype(np.float32)
    labels = np.arange(25) % 2
    pred, scores = model.classify(queries, prompts, n_templates=2)
    assert (pred == -1).any()  # some queries share no anchor with any prompt: the curve must count them too
    curve = metrics.threshold_curve(scores, labels)
    for t, acc, unknown in zip(curve["threshold"], curve["accuracy"], curve["unknown"]):
        pred_t, _ = model.classify(queries, prompts, n_templates=2, unknown_threshold=t)
        assert acc == metrics.accuracy(pred_t, labels) and unknown == np.mean(pred_t == -1)


def test_explain_lists_the_shared_anchors_and_sums_to_the_score(pair_data):
    images, texts, rng = pair_data(6, n_pairs=400)
    ids = [f"pair-{i}" for i in range(400)]
    model = AsifModel(images, texts, k=60, p=3, ids=ids, **CPU)
    image, text = images[17] + 0.1 * rng.standard_normal(images.shape[1]), texts[17]
    rows = model.explain(image, text, top=None)
    score = float(model.similarity(image, text)[0, 0])
    assert rows and set(rows[0]) == {"id", "anchor", "image_weight", "text_weight", "contribution"}
    assert sum(r["contribution"] for r in rows) == pytest.approx(score, rel=1e-5)
    contributions = [r["contribution"] for r in rows]
    assert contributions == sorted(contributions, reverse=True)
    ri, rt = model.encode_image(image).toarray()[0], model.encode_text(text).toarray()[0]
    assert {r["anchor"] for r in rows} == set(np.flatnonzero((ri > 0) & (rt > 0)))
    for r in rows:
        assert r["id"] == ids[r["anchor"]]
        assert r["image_weight"] == pytest.approx(ri[r["anchor"]])
        assert r["text_weight"] == pytest.approx(rt[r["anchor"]])
        assert r["contribution"] == pytest.approx(r["image_weight"] * r["text_weight"])
    assert rows[0]["id"] == "pair-17"  # the pair itself explains most of the match
    assert model.explain(image, text, top=3) == rows[:3]


def test_explain_names_the_same_pairs_by_id_after_edits(pair_data):
    images, texts, rng = pair_data(7, n_pairs=400)
    model = AsifModel(images, texts, k=60, p=3, **CPU)
    image, text = images[250] + 0.1 * rng.standard_normal(images.shape[1]), texts[250]
    before = {r["id"]: r["contribution"] for r in model.explain(image, text, top=None)}
    model.remove_pairs(list(range(0, 200, 2)))  # shifts the rows of every later pair
    model.add_pairs(images[:5] + 1, texts[:5] + 1, ids=[1000, 1001, 1002, 1003, 1004])
    rows = model.explain(image, text, top=None)
    assert rows[0]["id"] == 250 and rows[0]["anchor"] != 250
    for r in rows:
        assert model.ids[r["anchor"]] == r["id"]
        original = r["id"] if r["id"] < 1000 else None
        if original is not None:  # an untouched pair keeps its identity: its embeddings are those of its id
            np.testing.assert_allclose(model.anchor_embeddings()[0][r["anchor"]], unit(images[original]), rtol=1e-6)
    assert set(before) & {r["id"] for r in rows}
