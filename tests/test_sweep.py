"""asif_nb.sweeps.sweep (Figure 4): every point equals one model's classify under the suite's one tie rule, on
synthetic data across tiles and on the demo's real embeddings, where it equals ``evaluate``'s acc1."""
from __future__ import annotations

import numpy as np
import pytest

import asif_nb
from asif_nb import metrics
from asif_nb.model import AsifModel
from asif_nb.pipeline import evaluate
from asif_nb.sweeps import sweep

CPU = {"device": "cpu"}


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
def test_sweep_equals_one_model_per_point(reduce):
    # prefix sizes inside a tile (tiles are 2,048 anchors), at the end of one, and at the end of the anchors
    queries, labels, prompts, images, texts = sweep_data(n_pairs=20000)
    sizes, ks, ps = [30, 100, 8192, 9000, 20000], [1, 10, 50, 200], [1, 8]
    rows = sweep(queries, labels, prompts, images, texts, n_pairs=sizes, k=ks, p=ps, n_templates=2, reduce=reduce,
                 **CPU)
    assert [(r["n_pairs"], r["k"], r["p"]) for r in rows] == [(n, k, p) for n in sizes for k in ks for p in ps]
    for row in rows:
        if row["k"] > row["n_pairs"]:
            assert row["applicable"] is False and row["accuracy"] is None
            continue
        n = row["n_pairs"]
        model = AsifModel(images[:n], texts[:n], k=row["k"], p=row["p"], **CPU)
        pred, _ = model.classify(queries, prompts, n_templates=2, reduce=reduce)
        assert row["applicable"] is True and row["accuracy"] == metrics.accuracy(pred, labels)
    assert max(r["accuracy"] for r in rows if r["applicable"]) > 0.5  # the clusters are learnable
    again = sweep(queries, labels, prompts, images, texts, n_pairs=sizes, k=ks, p=ps, n_templates=2, reduce=reduce,
                  chunk_size=1, memory_budget=1, **CPU)  # several passes over the images, small steps
    assert again == rows


class CountingRows:
    """An on-disk-like array (``shape`` + contiguous slices), streamed by AsifModel; counts the rows read."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.read = array, array.shape, array.dtype, 0

    def __getitem__(self, index):
        rows = self.array[index]
        self.read += len(rows)
        return rows


def test_sweep_reads_each_anchor_once_whatever_the_number_of_points():
    queries, labels, prompts, images, texts = sweep_data(n_pairs=20000)
    counted = CountingRows(images), CountingRows(texts)
    rows = sweep(queries, labels, prompts, *counted, n_pairs=[100, 1000, 8192, 20000], k=[5, 50], p=[1, 3, 8],
                 n_templates=2, **CPU)
    # each modality: once for its row norms, once for the similarities
    assert [c.read for c in counted] == [2 * 20000, 2 * 20000]
    assert rows == sweep(queries, labels, prompts, images, texts, n_pairs=[100, 1000, 8192, 20000], k=[5, 50],
                         p=[1, 3, 8], n_templates=2, **CPU)


def test_bad_sweep_arguments():
    queries, labels, prompts, images, texts = sweep_data(n_pairs=100)
    cases = [
        ({"n_pairs": [50, 101]}, "n_pairs entry=101"), ({"n_pairs": []}, "n_pairs is empty"),
        ({"k": [0]}, "k=0"), ({"p": [-2]}, "p=-2"), ({"labels": labels[:5]}, "labels"),
        ({"labels": labels + 100}, "labels"), ({"n_templates": 3}, "multiple"),
        ({"anchor_texts": texts[:50]}, "different numbers of rows"), ({"reduce": "min"}, "reduce"),
        ({"memory_budget": 0}, "memory_budget"), ({"chunk_size": -1}, "chunk_size"),
    ]
    for change, match in cases:
        args = {"image_embeddings": queries, "labels": labels, "prompt_embeddings": prompts,
                "anchor_images": images, "anchor_texts": texts, "n_pairs": [50, 100], "k": [5], "p": [2],
                "n_templates": 2, **change}
        with pytest.raises(ValueError, match=match):
            sweep(**args)


def test_sweep_is_importable_where_it_was():
    from asif_nb.model import sweep as from_model

    assert asif_nb.sweep is sweep is from_model
    assert asif_nb.threshold_curve is metrics.threshold_curve


# ---------------------------------------------------------------------------------------------------------
# the demo's real embeddings: held-out Tux Paint against the demo anchors


def test_sweep_equals_evaluate_at_every_point_of_the_demo(demo_embeddings):
    anchors, heldout = demo_embeddings
    n_total = len(anchors.anchor_images)
    sizes, ks, ps = [100, 300, 1000, n_total], [1, 3, 10, 30, 100], [1, 3, 8]
    rows = sweep(heldout.images, heldout.labels, heldout.prompts, anchors.anchor_images, anchors.anchor_texts,
                 n_pairs=sizes, k=ks, p=ps, n_templates=heldout.n_templates, **CPU)
    zero_rows = 0
    for row in rows:
        assert row["applicable"]
        n, k, p = row["n_pairs"], row["k"], row["p"]
        model = AsifModel(anchors.anchor_images[:n], anchors.anchor_texts[:n], k=k, p=p, **CPU)
        result = evaluate(model, heldout)
        assert row["accuracy"] == result["acc1"], (n, k, p)
        _, scores = model.classify(heldout.images, heldout.prompts, n_templates=heldout.n_templates)
        zero_rows += int((scores == 0).all(axis=1).sum())
    assert zero_rows > 0  # the small-k points have queries that share no anchor with any prompt
    for n, k, p in [(300, 10, 3), (n_total, 30, 8)]:  # CLIP's rule too
        (row,) = sweep(heldout.images, heldout.labels, heldout.prompts, anchors.anchor_images,
                       anchors.anchor_texts, n_pairs=[n], k=[k], p=[p], n_templates=heldout.n_templates,
                       reduce="mean", **CPU)
        model = AsifModel(anchors.anchor_images[:n], anchors.anchor_texts[:n], k=k, p=p, **CPU)
        assert row["accuracy"] == evaluate(model, heldout, reduce="mean")["acc1"]


def test_queries_sharing_no_anchor_with_any_prompt_are_never_credited(demo_embeddings):
    anchors, heldout = demo_embeddings
    model = AsifModel(anchors.anchor_images[:1000], anchors.anchor_texts[:1000], k=10, p=8, **CPU)
    pred, scores = model.classify(heldout.images, heldout.prompts, n_templates=heldout.n_templates)
    zero = (scores == 0).all(axis=1)
    assert 0.1 < zero.mean() < 0.5  # about a fifth of the held-out images at this size and k
    assert (pred[zero] == -1).all()
    honest = metrics.accuracy(pred, heldout.labels)
    assert honest == evaluate(model, heldout)["acc1"] == metrics.accuracy_topk(scores, heldout.labels, k=1,
                                                                             ties="worst")["acc1"]
    # argmax credits the lowest class index on every tie: class 0 on each all-zero row
    argmax_right = scores.argmax(axis=1) == heldout.labels
    by_argmax = float(np.mean(argmax_right))
    assert by_argmax - honest == pytest.approx(np.mean(argmax_right & (pred == -1)))
    assert np.mean(zero & (heldout.labels == 0)) > 0 and by_argmax > honest


def test_the_index_path_of_the_sweep_finds_the_exact_points_when_it_searches_every_list():
    queries, labels, prompts, images, texts = sweep_data(n_pairs=3000)
    grid = dict(n_pairs=[100, 900, 3000], k=(10, 50, 200), p=(1, 8), device="cpu")
    exact = sweep(queries, labels, prompts, images, texts, **grid)
    # every inverted list probed and the candidates rescored: the index holds the exact top-k of every prefix
    indexed = sweep(queries, labels, prompts, images, texts, index="ivf-flat",
                    index_options={"nlist": 8, "nprobe": 8, "refine": 2}, **grid)
    assert indexed == exact


def test_an_index_that_cannot_answer_prefixes_is_refused_with_the_fix():
    queries, labels, prompts, images, texts = sweep_data()
    with pytest.raises(ValueError, match="FAISS kind"):
        sweep(queries, labels, prompts, images, texts, k=10, device="cpu", index="pruned")
    with pytest.raises(ValueError, match="only with an index"):
        sweep(queries, labels, prompts, images, texts, k=10, device="cpu", index_options={"nlist": 4})
