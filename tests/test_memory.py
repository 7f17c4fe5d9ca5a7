"""asif_nb.memory: usage counts, pruning, one pair's influence, perturbation and forgetting, compressed anchors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from asif_nb import memory, metrics
from asif_nb.model import AsifModel
from conftest import assert_same_csr as same_csr
from conftest import random_pairs


def pair_data(seed=0, n_pairs=300):
    return random_pairs(seed, n_pairs, d1=24, d2=16)


def nonzero_ids(model, representation):
    """Per row, the set of pair ids that are non-zero (ids, not columns, so models of different N compare)."""
    return [{model.ids[j] for j in representation[i].indices} for i in range(representation.shape[0])]


@pytest.fixture
def setup():
    images, texts, rng = pair_data()
    model = AsifModel(images, texts, k=10, p=3, ids=[f"pair{i}" for i in range(len(images))], device="cpu")
    queries = rng.standard_normal((40, images.shape[1])).astype(np.float32)
    prompts = rng.standard_normal((12, texts.shape[1])).astype(np.float32)  # 6 classes x 2 templates
    return model, images, texts, queries, prompts


# ---------------------------------------------------------------------------------------------------------
# the stored anchors


def test_anchor_embeddings_are_the_stored_rows(setup, tmp_path):
    model, images, *_ = setup
    stored_images, stored_texts = memory.anchor_embeddings(model)
    model.save(tmp_path / "m.npz")  # the model's own file format holds exactly what it stores
    with np.load(tmp_path / "m.npz") as archive:
        assert np.array_equal(stored_images, archive["anchor_images"])
        assert np.array_equal(stored_texts, archive["anchor_texts"])
    np.testing.assert_allclose(np.linalg.norm(stored_images, axis=1), 1, atol=1e-6)
    before = model.encode_image(images[:5])
    stored_images[:] = 0  # a copy: changing it changes nothing in the model
    same_csr(model.encode_image(images[:5]), before)


# ---------------------------------------------------------------------------------------------------------
# usage and pruning


def test_usage_counts_count_non_zeros_per_anchor(setup):
    model, _, _, queries, prompts = setup
    counts = memory.usage_counts(model, queries, prompts)
    by_hand = np.zeros(model.n_pairs, dtype=np.int64)
    for representation in (model.encode_image(queries), model.encode_text(prompts)):
        for row in range(representation.shape[0]):
            for column in representation[row].indices:
                by_hand[column] += 1
    assert counts.dtype == np.int64 and np.array_equal(counts, by_hand)
    assert counts.sum() == 52 * model.k  # random data: no similarity clamped away here
    assert np.array_equal(memory.usage_counts(model, image_embeddings=queries)
                          + memory.usage_counts(model, text_embeddings=prompts), counts)
    with pytest.raises(ValueError, match="workload"):
        memory.usage_counts(model)


def test_most_used_keeps_the_highest_counts_ties_to_the_earlier_pair():
    images, texts, _ = pair_data(n_pairs=6)
    model = AsifModel(images, texts, k=2, p=2, ids=list("abcdef"))
    counts = np.array([3, 9, 3, 0, 3, 7])
    assert memory.most_used(model, counts, 2) == ["b", "f"]
    assert memory.most_used(model, counts, 4) == ["a", "b", "c", "f"]  # of the three 3s, the first wins
    assert memory.most_used(model, counts, 6) == list("abcdef")
    with pytest.raises(ValueError, match="counts"):
        memory.most_used(model, counts[:5], 2)
    with pytest.raises(ValueError, match="counts"):
        memory.most_used(model, counts.astype(float), 2)
    for n in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match="n="):
            memory.most_used(model, counts, n)


def test_prune_equals_the_model_built_from_the_kept_pairs(setup):
    model, images, texts, queries, _ = setup
    keep = [f"pair{i}" for i in range(0, 300, 3)]
    before = model.encode_image(queries)
    pruned = memory.prune(model, reversed(keep))  # the given order does not matter: the model's order is kept
    assert pruned.ids == tuple(keep) and (pruned.k, pruned.p) == (model.k, model.p)
    alone = AsifModel(images[::3], texts[::3], k=10, p=3, ids=keep)
    same_csr(pruned.encode_image(queries), alone.encode_image(queries))
    assert model.n_pairs == 300
    same_csr(model.encode_image(queries), before)  # the original is unchanged
    with pytest.raises(ValueError, match="fewer than k=10"):
        memory.prune(model, keep[:9])
    with pytest.raises(ValueError, match="nope"):
        memory.prune(model, keep + ["nope"])
    with pytest.raises(ValueError, match="AsifModel"):
        memory.prune("model", keep)


def test_prune_takes_ids_or_a_mask_and_scales_to_many_anchors():
    images, texts, rng = pair_data(5, n_pairs=50_000)
    model = AsifModel(images, texts, k=10, p=3, ids=[f"id{i}" for i in range(50_000)], device="cpu")
    keep = rng.random(50_000) < 0.5
    pruned = memory.prune(model, keep)  # one id lookup per pair, not a scan of all ids per kept id
    assert pruned.ids == tuple(f"id{i}" for i in np.flatnonzero(keep))
    assert memory.prune(model, list(pruned.ids)).ids == pruned.ids
    queries = rng.standard_normal((5, images.shape[1])).astype(np.float32)
    alone = AsifModel(images[keep], texts[keep], k=10, p=3, device="cpu")
    np.testing.assert_array_equal(pruned.similarity(queries, texts[:7]), alone.similarity(queries, texts[:7]))


def test_pruning_curve_is_prune_then_the_honest_accuracy(setup):
    model, _, _, queries, prompts = setup
    labels = np.arange(len(queries)) % 6
    counts = memory.usage_counts(model, queries[::2], prompts)
    rows = memory.pruning_curve(model, counts, queries[1::2], labels[1::2], prompts, n_templates=2,
                                fractions=(1.0, 0.5, 0.1), seed=3)
    assert [row["kept"] for row in rows] == [300, 150, 30]
    rng = np.random.default_rng(3)
    for row in rows:
        top = memory.prune(model, memory.most_used(model, counts, row["kept"]))
        random = memory.prune(model, [model.ids[i] for i in rng.choice(300, row["kept"], replace=False)])
        for name, pruned in (("acc_most_used", top), ("acc_random", random)):
            pred, _ = pruned.classify(queries[1::2], prompts, n_templates=2)
            assert row[name] == metrics.accuracy(pred, labels[1::2])
        assert row["fraction"] == row["kept"] / 300 and row["MB_saved"] == (300 - row["kept"]) * 4 * 40 / 1e6
    assert rows[0]["acc_most_used"] == rows[0]["acc_random"]  # both keep everything
    assert memory.pruning_curve(model, counts, queries, labels, prompts, n_templates=2, fractions=0.01)[0]["kept"] == 10
    for bad in ((0.0,), (1.5,), (), ("half",), (True,)):
        with pytest.raises(ValueError, match="fractions"):
            memory.pruning_curve(model, counts, queries, labels, prompts, n_templates=2, fractions=bad)


def test_pruning_to_the_used_anchors_changes_no_workload_output(setup):
    # The top-k of a query over a subset that contains its top-k is that same top-k: keeping the anchors a
    # workload used leaves the workload's representations (as sets of pairs, with their weights) unchanged.
    model, _, _, queries, prompts = setup
    counts = memory.usage_counts(model, queries, prompts)
    used = [model.ids[i] for i in np.flatnonzero(counts)]
    assert len(used) < model.n_pairs  # the test means something only if some anchors are unused
    pruned = memory.prune(model, used)
    for encode in ("encode_image", "encode_text"):
        workload = queries if encode == "encode_image" else prompts
        full, small = getattr(model, encode)(workload), getattr(pruned, encode)(workload)
        assert nonzero_ids(model, full) == nonzero_ids(pruned, small)
        np.testing.assert_allclose(full.data, small.data, rtol=1e-5)
    pred, scores = model.classify(queries, prompts, n_templates=2)
    pred_small, scores_small = pruned.classify(queries, prompts, n_templates=2)
    np.testing.assert_allclose(scores, scores_small, atol=1e-6)
    assert np.array_equal(pred, pred_small)


# ---------------------------------------------------------------------------------------------------------
# influence, perturbation, forgetting


def test_influence_is_what_explain_reports_for_the_predicted_prompt(setup):
    model, _, _, queries, prompts = setup
    counts = memory.usage_counts(model, queries, prompts)
    pair = model.ids[int(np.argmax(counts))]
    pred, contribution = memory.influence(model, pair, queries, prompts, n_templates=2)
    assert np.array_equal(pred, model.classify(queries, prompts, n_templates=2)[0])
    assert (contribution > 0).any() and (contribution == 0).any()
    similarity = model.similarity(queries, prompts)
    for q in np.flatnonzero(pred >= 0):
        best = 2 * pred[q] + int(np.argmax(similarity[q, 2 * pred[q]:2 * pred[q] + 2]))
        rows = {row["id"]: row["contribution"] for row in model.explain(queries[q], prompts[best], top=None)}
        assert contribution[q] == pytest.approx(rows.get(pair, 0.0), rel=1e-5, abs=1e-7)
    column = model.ids.index(pair)
    image_rows = model.encode_image(queries)
    outside = [q for q in range(len(queries)) if column not in image_rows[q].indices]
    assert outside and (contribution[outside] == 0).all()  # not among the image's non-zeros: no part in it
    with pytest.raises(ValueError, match="nope"):
        memory.influence(model, "nope", queries, prompts, n_templates=2)
    with pytest.raises(ValueError, match="one id"):
        memory.influence(model, [pair], queries, prompts, n_templates=2)


def test_influence_is_zero_where_there_is_no_answer():
    # the toy of test_model: query 0 shares no anchor with either prompt (all scores 0, no answer)
    images = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    model = AsifModel(images, images.copy(), k=2, p=1, device="cpu")
    prompts = np.array([[1, 0.05], [1, 0.02]], dtype=np.float32)
    queries = np.array([[0.02, 1], [1, 0.03]], dtype=np.float32)
    for pair in model.ids:
        pred, contribution = memory.influence(model, pair, queries, prompts)
        assert pred[0] == -1 and contribution[0] == 0


def test_perturbing_then_removing_a_pair_leaves_no_trace(setup):
    model, _, _, queries, prompts = setup
    counts = memory.usage_counts(model, queries)
    gone = [model.ids[i] for i in np.argsort(-counts, kind="stable")[:3]]
    perturbed = memory.perturb_pairs(model, gone, seed=1)
    stored, stored_perturbed = memory.anchor_embeddings(model), memory.anchor_embeddings(perturbed)
    rows = [model.ids.index(i) for i in gone]
    others = np.setdiff1d(np.arange(model.n_pairs), rows)
    for a, b in zip(stored, stored_perturbed):
        assert np.array_equal(a[others], b[others])  # every other anchor keeps its bits
        assert not np.isclose(a[rows], b[rows]).all(axis=1).any()
        np.testing.assert_allclose(np.linalg.norm(b[rows], axis=1), 1, atol=1e-6)
    assert perturbed.ids == model.ids
    # before forgetting, outputs depend on these pairs ...
    assert not np.array_equal(model.similarity(queries, prompts), perturbed.similarity(queries, prompts))
    # ... after it, nothing does: the two models agree bit for bit
    model.remove_pairs(gone)
    perturbed.remove_pairs(gone)
    same_csr(model.encode_image(queries), perturbed.encode_image(queries))
    same_csr(model.encode_text(prompts), perturbed.encode_text(prompts))
    assert np.array_equal(model.similarity(queries, prompts), perturbed.similarity(queries, prompts))
    with pytest.raises(ValueError, match="nope"):
        memory.perturb_pairs(model, ["nope"])
    with pytest.raises(ValueError, match="empty"):
        memory.perturb_pairs(model, [])


# ---------------------------------------------------------------------------------------------------------
# compression


def test_quantize_formats_bytes_and_errors():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 20)).astype(np.float32)
    exact = memory.quantize(x, "fp32")
    assert np.array_equal(exact.dequantize(), x) and exact.nbytes == x.nbytes
    half = memory.quantize(x, "fp16")
    assert half.nbytes == x.size * 2
    # round to nearest: relative error <= 2**-11, absolute 2**-25 among float16's subnormals (below 6e-5)
    np.testing.assert_allclose(half.dequantize(), x, rtol=2 ** -11, atol=2 ** -25)
    int8 = memory.quantize(x, "int8")
    assert int8.codes.dtype == np.int8 and int8.nbytes == x.size + 4 * len(x)
    scale = np.abs(x).max(axis=1) / 127
    assert (np.abs(int8.dequantize() - x) <= scale[:, None] / 2 * (1 + 1e-5)).all()
    assert (np.abs(int8.codes).max(axis=1) == 127).all()  # each row uses the full range


def test_product_quantisation():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 20)).astype(np.float32)
    pq = memory.quantize(x, "pq", dims_per_code=8, n_centroids=16, seed=0)
    assert pq.codes.shape == (300, 3) and pq.codes.dtype == np.uint8  # sub-vectors of 8, 8 and 4 dims
    assert [b.shape for b in pq.codebooks] == [(16, 8), (16, 8), (16, 4)]
    assert pq.nbytes == 300 * 3 + 4 * 16 * 20
    again = memory.quantize(x, "pq", dims_per_code=8, n_centroids=16, seed=0)
    assert np.array_equal(again.codes, pq.codes)  # deterministic for a seed
    # each row decodes to its sub-vectors' nearest centroids
    decoded = pq.dequantize()
    for j, ((start, stop), book) in enumerate(zip(pq.splits, pq.codebooks)):
        distances = ((x[:, None, start:stop] - book[None]) ** 2).sum(-1)
        assert np.array_equal(pq.codes[:, j], distances.argmin(1))
        assert np.array_equal(decoded[:, start:stop], book[pq.codes[:, j]])
    # more centroids, less error; one centroid per row reproduces every row exactly
    error = [np.abs(memory.quantize(x, "pq", n_centroids=c).dequantize() - x).mean() for c in (4, 64)]
    assert error[1] < error[0]
    np.testing.assert_allclose(memory.quantize(x[:50], "pq", n_centroids=50).dequantize(), x[:50], atol=1e-6)
    # centroids learnt on a sample of rows; every row is still coded by its nearest centroid
    sampled = memory.quantize(x, "pq", dims_per_code=8, n_centroids=16, train_rows=40)
    for j, ((start, stop), book) in enumerate(zip(sampled.splits, sampled.codebooks)):
        distances = ((x[:, None, start:stop] - book[None]) ** 2).sum(-1)
        assert np.array_equal(sampled.codes[:, j], distances.argmin(1))
    assert not np.array_equal(sampled.codebooks[0], pq.codebooks[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "int4"}, "method"),
    ({"embeddings": np.ones(5, dtype=np.float32)}, "2-D"),
    ({"embeddings": np.ones((3, 2), dtype=np.int64)}, "float"),
    ({"embeddings": np.array([[1.0, np.nan]])}, "NaN"),
    ({"embeddings": np.full((2, 2), 1e6), "method": "fp16"}, "float16"),
    ({"method": "pq", "n_centroids": 300}, "256"),
    ({"method": "pq", "n_centroids": 11}, "rows"),
    ({"method": "pq", "dims_per_code": 0}, "dims_per_code"),
    ({"method": "pq", "n_centroids": 4, "train_rows": 3}, "3 rows"),
])
def test_quantize_refuses_bad_input(kwargs, match):
    arguments = {"embeddings": np.ones((10, 4), dtype=np.float32), "method": "int8"} | kwargs
    with pytest.raises(ValueError, match=match):
        memory.quantize(**arguments)


def test_fp32_anchors_are_lossless(setup):
    model, _, _, queries, prompts = setup
    stored = memory.quantize_anchors(model, "fp32")
    assert stored.model is not model and stored.model.ids == model.ids
    same_csr(stored.model.encode_image(queries), model.encode_image(queries))
    same_csr(stored.model.encode_text(prompts), model.encode_text(prompts))
    assert stored.nbytes == 4 * 300 * (24 + 16) and stored.bytes_per_pair == 4 * (24 + 16)


# least: the share of the fp32 top-k kept; a random top-10 of 300 anchors would keep 0.03
@pytest.mark.parametrize("method, least", [("fp16", 0.99), ("int8", 0.95), ("pq", 0.3)])
def test_compressed_anchors_give_a_working_model(setup, tmp_path, method, least):
    model, _, _, queries, prompts = setup
    before = model.encode_image(queries)
    stored = memory.quantize_anchors(model, method, n_centroids=64) if method == "pq" \
        else memory.quantize_anchors(model, method)
    small = stored.model
    assert (small.ids, small.k, small.p, small.clamp_negative) == (model.ids, model.k, model.p, model.clamp_negative)
    assert memory.topk_agreement(before, small.encode_image(queries)) >= least
    assert stored.nbytes < 4 * 300 * (24 + 16)
    same_csr(model.encode_image(queries), before)  # the original is unchanged
    # the core API works on it as on any model, exactness rules included
    dequantised = stored.images.dequantize(), stored.texts.dequantize()
    same_csr(small.encode_image(queries), AsifModel(*dequantised, k=10, p=3).encode_image(queries))
    small.save(tmp_path / "small.npz")
    same_csr(AsifModel.load(tmp_path / "small.npz").encode_text(prompts), small.encode_text(prompts))
    small.remove_pairs(["pair0"])
    assert small.n_pairs == 299


def test_topk_agreement():
    reference = scipy.sparse.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=np.float32))
    other = scipy.sparse.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=np.float32))
    # row 0 keeps 1 of 2, row 1 all 3; row 2 has no top-k to keep and is left out
    assert memory.topk_agreement(reference, other) == pytest.approx((0.5 + 1.0) / 2)
    assert memory.topk_agreement(reference, reference) == 1.0
    with pytest.raises(ValueError, match="shape"):
        memory.topk_agreement(reference, other[:2])
    with pytest.raises(ValueError, match="no non-zero"):
        memory.topk_agreement(reference[2:], other[2:])
