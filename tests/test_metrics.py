"""Metrics on small matrices whose answers are worked out by hand in the comments."""
import numpy as np
import pytest
import scipy.sparse

from asif_nb import metrics
from asif_nb.metrics import (accuracy, accuracy_topk, classification_report, mean_per_class_recall, predict,
                             retrieval_recall, threshold_curve)

# 4 samples, 3 classes. Rank of the true class (0 = top):
#   s0 label 0: 0.9 is the top                      -> 0
#   s1 label 2: 0.5 beats 0.3                       -> 1
#   s2 label 0: tied with class 1 at 0.3            -> 0 with ties="first" (lower index), 1 with "worst"
#   s3 label 0: 0.7 and 0.2 beat 0.1                -> 2
SCORES = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.3, 0.3, 0.1], [0.1, 0.2, 0.7]])
LABELS = np.array([0, 2, 0, 0])

# 3 images x 4 texts; texts 0 and 1 describe image 0, text 2 image 1, text 3 image 2 (all its scores tie at 0).
SIMILARITY = np.array([[0.9, 0.2, 0.1, 0.0], [0.1, 0.8, 0.7, 0.0], [0.0, 0.0, 0.0, 0.0]])
POSITIVES = [0, 0, 1, 2]


def test_topk_accuracy_by_hand():
    assert accuracy_topk(SCORES, LABELS, k=(1, 2), ties="first") == {"acc1": 0.5, "acc2": 0.75}
    assert accuracy_topk(SCORES, LABELS, k=(1, 2), ties="worst") == {"acc1": 0.25, "acc2": 0.75}
    # the default is the suite's one rule: a tie is never credited
    assert accuracy_topk(SCORES, LABELS, k=(1, 2)) == {"acc1": 0.25, "acc2": 0.75}


def test_k_larger_than_the_number_of_classes_is_clipped():
    assert accuracy_topk(SCORES, LABELS) == {"acc1": 0.25, "acc5": 1.0}
    assert accuracy_topk(SCORES, LABELS, k=3) == {"acc3": 1.0}


def test_mean_per_class_recall_averages_only_classes_present_in_the_labels():
    # class 0: samples 0, 2, 3 -> 2 of 3 right; class 1 never occurs; class 2: sample 1 wrong -> (2/3 + 0) / 2
    assert mean_per_class_recall(SCORES, LABELS, ties="first") == pytest.approx(1 / 3)
    # "worst" (the default) makes the tie in s2 wrong: class 0 -> 1/3
    assert mean_per_class_recall(SCORES, LABELS) == pytest.approx(1 / 6)


def test_predictions_with_unknown_count_as_wrong():
    pred = np.array([0, -1, 0, 1])  # same right/wrong pattern as SCORES under ties="first"
    assert mean_per_class_recall(pred, LABELS) == pytest.approx(1 / 3)
    assert mean_per_class_recall(np.array([-1, -1, -1, -1]), LABELS, n_classes=3) == 0.0
    assert mean_per_class_recall(np.array([0, 2, 0, 0]), LABELS) == 1.0


def test_mean_per_class_recall_differs_from_accuracy_on_unbalanced_classes():
    labels = np.array([0, 0, 0, 1])
    pred = np.array([0, 0, 0, 0])  # accuracy 0.75, but class 1 is never found
    assert mean_per_class_recall(pred, labels) == 0.5


def test_classification_report_gathers_the_three_numbers_and_per_class_recall():
    report = classification_report(SCORES, LABELS, ["cat", "dog", "fish"], ties="first")
    assert report["acc1"] == 0.5 and report["acc5"] == 1.0
    assert report["mean_per_class_recall"] == pytest.approx(1 / 3)
    assert report["per_class_recall"][0] == pytest.approx(2 / 3)
    honest = classification_report(SCORES, LABELS, ["cat", "dog", "fish"])
    assert honest["acc1"] == 0.25 and honest["per_class_recall"][0] == pytest.approx(1 / 3)
    assert np.isnan(report["per_class_recall"][1]) and report["per_class_recall"][2] == 0.0
    with pytest.raises(ValueError, match="class_names has 2 names but scores has 3 columns"):
        classification_report(SCORES, LABELS, ["cat", "dog"])


def test_retrieval_recall_by_hand():
    # Texts query images: t0 -> image 0 first; t1 -> image 1 beats image 0; t2 -> image 1 first;
    # t3 -> all tie at 0, image 2 comes third. Ranks 0, 1, 0, 2.
    # Images query texts: image 0 finds t0 first; image 1 is beaten by t1 (rank 1); image 2 ties everywhere
    # and its text t3 comes fourth (rank 3).
    result = retrieval_recall(SIMILARITY, POSITIVES, k=(1, 2, 5))
    assert result == {
        "image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": pytest.approx(1 / 3),
        "image_retrieval_recall@2": 0.75, "text_retrieval_recall@2": pytest.approx(2 / 3),
        "image_retrieval_recall@5": 1.0, "text_retrieval_recall@5": 1.0,  # k clipped to 3 images / 4 texts
    }


def test_a_list_of_positives_counts_a_hit_for_any_of_them():
    # Text 1 now also describes image 1, which it scores highest: its rank becomes 0.
    result = retrieval_recall(SIMILARITY, [0, [0, 1], 1, 2], k=1)
    assert result["image_retrieval_recall@1"] == 0.75


def test_retrieval_ties_first_versus_worst():
    flat = np.zeros((2, 2))  # every score ties: "first" hands query 0 a hit by index, "worst" none
    assert retrieval_recall(flat, [0, 1], k=1, ties="first") == {"image_retrieval_recall@1": 0.5,
                                                                 "text_retrieval_recall@1": 0.5}
    assert retrieval_recall(flat, [0, 1], k=1) == {
        "image_retrieval_recall@1": 0.0, "text_retrieval_recall@1": 0.0}


def test_images_no_text_describes_are_left_out_of_text_retrieval():
    similarity = np.array([[0.9, 0.1], [0.1, 0.9], [1.0, 1.0]])  # image 2 is a distractor that beats everything
    result = retrieval_recall(similarity, [0, 1], k=1)
    assert result == {"image_retrieval_recall@1": 0.0, "text_retrieval_recall@1": 1.0}


def test_sparse_and_torch_inputs_give_the_same_numbers():
    expected = retrieval_recall(SIMILARITY, POSITIVES)
    assert retrieval_recall(scipy.sparse.csr_matrix(SIMILARITY), POSITIVES) == expected
    import torch
    assert accuracy_topk(torch.tensor(SCORES), torch.tensor(LABELS)) == accuracy_topk(SCORES, LABELS)


def test_blocked_computation_matches_one_block(monkeypatch):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(37, 6)).astype(float)  # many ties
    labels = rng.integers(0, 6, size=37)
    expected = [accuracy_topk(scores, labels, ties=t) for t in ("first", "worst")]
    monkeypatch.setattr(metrics, "_BLOCK", 5)
    assert [accuracy_topk(scores, labels, ties=t) for t in ("first", "worst")] == expected


def test_first_ties_agree_with_a_stable_argsort():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=(50, 7)).astype(float)
    labels = rng.integers(0, 7, size=50)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.argmax(order == labels[:, None], axis=1)
    assert accuracy_topk(scores, labels, k=(1, 3), ties="first") == {"acc1": np.mean(ranks < 1),
                                                                     "acc3": np.mean(ranks < 3)}


def test_predict_answers_the_unique_best_class_and_no_answer_on_a_tie():
    # SCORES: s0 -> 0; s1 -> 1; s2 ties classes 0 and 1 at 0.3 -> no answer; s3 -> 2
    assert predict(SCORES).tolist() == [0, 1, -1, 2]
    assert predict(np.zeros((3, 4))).tolist() == [-1, -1, -1]  # no shared anchor at all: every class scores 0
    assert predict(np.array([[0.0, 0.0, 1e-30]], dtype=np.float32)).tolist() == [2]
    assert predict(scipy.sparse.csr_matrix(SCORES)).dtype == np.int64
    assert accuracy(SCORES, LABELS) == 0.25  # only s0 is right: s2's tie is no answer, not class 0
    assert accuracy(np.array([0, -1, -1, 0]), LABELS) == 0.5  # predictions, -1 never right


def test_the_tie_rule_is_the_pessimistic_top1_everywhere():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 3, size=(200, 5)).astype(np.float32)  # many ties, many all-equal rows
    scores[:20] = 0
    labels = rng.integers(0, 5, size=200)
    honest = accuracy(scores, labels)
    assert honest == accuracy_topk(scores, labels, k=1, ties="worst")["acc1"]
    assert honest == np.mean(predict(scores) == labels) < accuracy_topk(scores, labels, k=1, ties="first")["acc1"]
    assert mean_per_class_recall(scores, labels, ties="worst") == mean_per_class_recall(predict(scores), labels,
                                                                                          n_classes=5)


def test_threshold_curve_by_hand():
    scores = np.array([[0.9, 0.1], [0.2, 0.7], [0.4, 0.3], [0.05, 0.0], [0.6, 0.6]])
    labels = np.array([0, 0, 0, 1, 0])  # right, wrong, right, wrong, a tie: never answered
    curve = threshold_curve(scores, labels)
    np.testing.assert_array_equal(curve["threshold"], [0.05, 0.4, 0.6, 0.7, 0.9, np.inf])
    np.testing.assert_allclose(curve["accuracy"], [0.4, 0.4, 0.2, 0.2, 0.2, 0])
    np.testing.assert_allclose(curve["wrong"], [0.4, 0.2, 0.2, 0.2, 0, 0])
    np.testing.assert_allclose(curve["unknown"], [0.2, 0.4, 0.6, 0.6, 0.8, 1])
    np.testing.assert_allclose(curve["accuracy"] + curve["wrong"] + curve["unknown"], 1)
    np.testing.assert_allclose(curve["coverage"], [0.8, 0.6, 0.4, 0.4, 0.2, 0])
    np.testing.assert_allclose(curve["risk"][:5], [0.5, 1 / 3, 0.5, 0.5, 0])
    assert np.isnan(curve["risk"][5])
    custom = threshold_curve(scores, labels, thresholds=[0.3])
    assert custom["accuracy"].tolist() == [0.4] and custom["unknown"].tolist() == [0.4]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: accuracy_topk(SCORES, [0, 1, 3, 0]), r"labels must lie in \[0, 3\)"),
        (lambda: accuracy_topk(SCORES, [0, 1]), r"labels has shape \(2,\), expected \(4,\)"),
        (lambda: accuracy_topk(SCORES, [0.0, 1.0, 2.0, 0.0]), "integer class indices"),
        (lambda: accuracy_topk(SCORES, LABELS, k=0), "k=0"),
        (lambda: accuracy_topk(SCORES, LABELS, ties="random"), "ties='random'"),
        (lambda: accuracy_topk(np.full((2, 2), np.nan), [0, 1]), "contains NaN"),
        (lambda: accuracy_topk(np.zeros(3), [0, 1, 2]), "2-D matrix"),
        (lambda: mean_per_class_recall(np.array([0, 5, 0, 0]), LABELS, n_classes=3), r"predictions must lie in \[-1, 3\)"),
        (lambda: mean_per_class_recall(SCORES, LABELS, n_classes=4), "n_classes=4 but scores have 3 columns"),
        (lambda: retrieval_recall(SIMILARITY, [0, 0, 1]), "positives has 3 entries"),
        (lambda: retrieval_recall(SIMILARITY, [0, 0, 1, 3]), r"positives\[3\]=3"),
        (lambda: retrieval_recall(SIMILARITY, [0, [], 1, 2]), r"positives\[1\]"),
        (lambda: predict(np.zeros(3)), r"shape \(3,\)"),
        (lambda: predict(np.array([[np.nan, 1.0]])), "NaN"),
        (lambda: accuracy(np.array([0.5, 1.5]), [0, 1]), "integer predictions"),
        (lambda: accuracy(SCORES, LABELS[:2]), "labels has shape"),
        (lambda: threshold_curve(SCORES, LABELS, thresholds=[]), "thresholds"),
    ],
)
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_wilson_interval_brackets_the_proportion_and_narrows_with_n():
    low, high = metrics.wilson_interval(4, 20)
    assert 0 < low < 0.2 < high < 0.5
    low_big, high_big = metrics.wilson_interval(400, 2000)
    assert low < low_big < 0.2 < high_big < high
    assert metrics.wilson_interval(0, 20)[0] == 0.0 and metrics.wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError, match="successes <= n"):
        metrics.wilson_interval(5, 4)


def test_a_figure_without_axis_labels_is_flagged_when_saved(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asif_nb.results import save_figure

    monkeypatch.setenv("ASIF_RESULTS", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with pytest.warns(UserWarning, match="lack an x or y axis label"):
        save_figure(fig, "unlabelled")
    ax.set_xlabel("pairs"), ax.set_ylabel("accuracy")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert save_figure(fig, "labelled").exists()
    plt.close(fig)
