"""Notebook 04's curation helpers and the tests behind notebooks 03-05's exercises (asif_nb.curation,
asif_nb.exercises), and the figures they draw, on small synthetic data."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from asif_nb import curation, exercises  # noqa: E402
from asif_nb.model import AsifModel  # noqa: E402
from asif_nb.pipeline import EvalEmbeddings  # noqa: E402
from asif_nb.plots.explain import plot_class_recall, plot_explanation  # noqa: E402
from asif_nb.results import unlabelled_axes  # noqa: E402


def toy(seed=0, n_anchors=40, n_classes=3, per_class=10, d1=6, d2=5):
    """A model whose anchors come in ``n_classes`` clusters (image and text alike), an evaluation set drawn from the
    same clusters, and one prompt per class at its text cluster's centre."""
    rng = np.random.default_rng(seed)
    centres_i, centres_t = rng.standard_normal((n_classes, d1)) * 3, rng.standard_normal((n_classes, d2)) * 3
    owner = np.arange(n_anchors) % n_classes
    images = centres_i[owner] + rng.standard_normal((n_anchors, d1))
    texts = centres_t[owner] + rng.standard_normal((n_anchors, d2))
    model = AsifModel(images, texts, k=5, p=2, ids=[f"a{i}" for i in range(n_anchors)], device="cpu")
    labels = np.repeat(np.arange(n_classes), per_class)
    queries = centres_i[labels] + rng.standard_normal((len(labels), d1))
    embedded = EvalEmbeddings("toy", queries.astype(np.float32), centres_t.astype(np.float32), None, labels,
                              [f"class {c}" for c in range(n_classes)], ["{c}"], 1)
    return model, embedded, centres_i, centres_t


def test_explain_labels_sums_to_the_class_score():
    model, embedded, _, _ = toy()
    _, scores = model.classify(embedded.images, embedded.prompts)
    for e in curation.explain_labels(model, embedded, 4, [0, 1, 2]):
        assert e["score"] == pytest.approx(float(scores[4, e["class"]]), abs=1e-6)
        assert sum(row["contribution"] for row in e["rows"]) == pytest.approx(e["score"], abs=1e-6)
        assert e["shared"] == len(e["rows"]) and e["prompt"] == e["label"]


def test_class_report_and_wilson_intervals():
    model, embedded, _, _ = toy()
    report = curation.class_report(model, embedded)
    assert report["n"].tolist() == [10, 10, 10]
    assert np.all(report["low"] <= report["recall"]) and np.all(report["recall"] <= report["high"])
    assert report["accuracy"] == pytest.approx(float(np.mean(report["pred"] == embedded.labels)))


def test_with_pairs_is_a_copy():
    model, _, centres_i, centres_t = toy()
    before = model.anchor_embeddings()
    edited = curation.with_pairs(model, centres_i[:1], centres_t[:1], ids=["new"], remove=["a0", "a1"])
    assert edited.n_pairs == model.n_pairs - 1 and "new" in edited.ids and "a0" not in edited.ids
    assert model.n_pairs == 40 and all(np.array_equal(a, b) for a, b in zip(before, model.anchor_embeddings()))


def test_captions_mentioning_matches_words_and_label_parts():
    captions = ["A sandal.", "feet in sandals", "sandalwood", "a T-shirt", "a top hat", "Ankle boots"]
    assert curation.captions_mentioning(captions, "Sandal") == [0, 1]
    assert curation.captions_mentioning(captions, "T-shirt/top") == [3, 4]
    assert curation.captions_mentioning(captions, "Ankle boot") == [5]


def test_balanced_subset_takes_the_first_of_each_class():
    _, embedded, _, _ = toy()
    small = curation.balanced_subset(embedded, 3)
    assert small.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.array_equal(small.images[3], embedded.images[10])


def test_curation_check_measures_and_never_crashes_on_bad_answers():
    model, embedded, centres_i, centres_t = toy()
    pool = EvalEmbeddings("pool", np.repeat(centres_i, 2, axis=0).astype(np.float32), None, None,
                          np.repeat(np.arange(3), 2), embedded.class_names, [], 1)
    test = exercises.curation_check(model, embedded, pool, lambda texts: np.repeat(centres_t[:1], len(texts), axis=0),
                                    target=0, min_recall=0.0, max_pairs=2)
    for bad in ("text", [], [(0, "a")] * 3, [("0", "a")], [(True, "a")], [(99, "a")], [(0, "")], {0: "a"}):
        ok, feedback = test(bad)
        assert not ok and feedback
    ok, feedback = test([(0, "class 0")])
    assert "recall" in feedback and "accuracy" in feedback


def test_threshold_check_accepts_the_lowest_threshold_meeting_the_goal():
    rng = np.random.default_rng(1)
    best = rng.random(2000)
    right = rng.random(2000) < best  # high scores are right more often
    wrong = ~right
    test = exercises.threshold_check(best, right, wrong, max_wrong=0.25)
    lowest = next(t for t in np.append(np.unique(best), np.inf) if np.mean((best >= t) & wrong) <= 0.25)
    assert test(float(lowest))[0]
    assert not test(0.0)[0]  # answers everything: too many wrong
    ok, feedback = test(0.99)
    assert not ok and "too cautious" in feedback
    assert not test("0.5")[0] and not test(float("nan"))[0] and not test(True)[0]


def test_caption_check(tiny_asif):
    image = tiny_asif.collection[3].image
    test = exercises.caption_check(tiny_asif, image, "caption 0", factor=1.0, forbidden="cat")
    assert test("caption 3")[0]  # the image's own caption: it keeps the same anchor
    assert not test("a cat")[0] and "without it" in test("Cats")[1]
    assert not test("")[0] and not test(3)[0]


def test_explanation_figure_has_no_empty_panels_and_says_what_is_left_out(tiny_asif):
    image = tiny_asif.collection[5].image
    rows = tiny_asif.model.explain(tiny_asif.embed_images([image])[0], tiny_asif.embed_texts(["caption 5"])[0], top=None)
    rows = [dict(rows[0], contribution=0.1 * i) for i in range(9)]
    fig = plot_explanation(image, rows, tiny_asif.collection, title="x", n_show=6, ncols=4)
    assert len(fig.axes) == 7  # the query and 6 anchors, on 2 rows of 4: the empty 8th panel is removed
    assert "3 more shared anchors" in fig._supxlabel.get_text()
    plt.close(fig)


def test_class_recall_figure_is_labelled():
    model, embedded, _, _ = toy()
    report = curation.class_report(model, embedded)
    fig = plot_class_recall(report, embedded.class_names, after=report, highlight=1)
    assert unlabelled_axes(fig) == []
    plt.close(fig)


def test_the_fashion_mnist_pool_is_the_train_split(tmp_path):
    """Notebook 04's pool of extra pairs: Fashion-MNIST's training images, never the test images it evaluates on."""
    from test_evalsets import write_idx

    from asif_nb.data import load_eval

    for prefix, count, value in (("t10k", 4, 10), ("train", 6, 200)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", np.full((count, 28, 28), value, dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 2)
    pool = load_eval("fashion-mnist", split="train", root=tmp_path, n=4)
    assert pool.name == "fashion-mnist-train" and len(pool) == 4 and pool.labels.tolist() == [0, 1, 0, 1]
    assert pool.ids[0] == "fashion-mnist/train/0" and pool.images[0].getpixel((0, 0)) == (55, 55, 55)
    test = load_eval("fashion-mnist", root=tmp_path)
    assert test.name == "fashion-mnist" and len(test) == 4 and test.ids[0] == "fashion-mnist/test/0"
    with pytest.raises(ValueError, match="split='val'"):
        load_eval("fashion-mnist", split="val", root=tmp_path)
