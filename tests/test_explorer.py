"""The k/p explorer (issue #13): every number it shows is the AsifModel's for that slider setting; its static
fallback (papermill, nbclient, nbmake) draws labelled axes and no widget; its sliders carry stable descriptions and
recompute on a move."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from asif_nb import AsifModel  # noqa: E402
from asif_nb.explorer import Explorer, similarities  # noqa: E402
from asif_nb.metrics import accuracy, wilson_interval  # noqa: E402
from asif_nb.results import unlabelled_axes  # noqa: E402

N, D1, D2, CLASSES, TEMPLATES, IMAGES = 240, 16, 12, 6, 2, 40


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    """Synthetic anchors whose two halves agree (captions are a noisy linear map of the images), a labelled set."""
    rng = np.random.default_rng(7)
    images = rng.normal(size=(N, D1)).astype(np.float32)
    texts = (images @ rng.normal(size=(D1, D2)) + 0.5 * rng.normal(size=(N, D2))).astype(np.float32)
    centres = rng.normal(size=(CLASSES, D1))
    labels = np.arange(IMAGES) % CLASSES
    queries = (centres[labels] + 0.7 * rng.normal(size=(IMAGES, D1))).astype(np.float32)
    mapping = np.linalg.lstsq(images, texts, rcond=None)[0]
    prompts = np.repeat(centres @ mapping, TEMPLATES, axis=0) + 0.3 * rng.normal(size=(CLASSES * TEMPLATES, D2))
    embedded = SimpleNamespace(name="synthetic", images=queries, prompts=prompts.astype(np.float32), labels=labels,
                               n_templates=TEMPLATES, class_names=[f"class {c}" for c in range(CLASSES)],
                               templates=["a {c}.", "the {c}."], evalset=None)
    captions = [f"caption of pair {i}" for i in range(N)]
    return images, texts, embedded, captions


SETTINGS = [(1, 1.0, N, 0), (10, 3.0, N, 5), (50, 8.0, 120, 11), (120, 2.5, 120, 39), (300, 5.0, 60, 2), (N, 2.0, N, 7)]


@pytest.mark.parametrize("k, p, pairs, image", SETTINGS)
def test_each_setting_gives_the_numbers_of_a_fresh_asif_model(data, k, p, pairs, image):
    images, texts, embedded, captions = data
    explorer = Explorer(images, texts, embedded, captions=captions, n_eval=25, device="cpu")
    for _ in range(2):  # the second time from the explorer's cached model, k and p set on it
        found = explorer.compute(k, p, pairs, image)
    model = AsifModel(images[:pairs], texts[:pairs], k=min(k, pairs), p=p, device="cpu")
    assert (found.k, found.p, found.pairs, found.k_capped) == (min(k, pairs), p, pairs, k > pairs)
    expected_row = model.encode_image(embedded.images[image][None])
    assert np.array_equal(found.representation.toarray(), expected_row.toarray())
    pred, scores = model.classify(embedded.images, embedded.prompts, n_templates=TEMPLATES)
    assert np.array_equal(found.scores, scores[image]) and found.predicted == pred[image]
    # the compared prompt: the predicted class's best template, and the shared anchors are explain()'s
    c = found.compared_class
    per_template = model.similarity(embedded.images[image][None], embedded.prompts[c * TEMPLATES:(c + 1) * TEMPLATES])[0]
    assert found.prompt == c * TEMPLATES + int(np.argmax(per_template))
    assert found.score == pytest.approx(float(scores[image, c]), abs=0)
    explained = model.explain(embedded.images[image], embedded.prompts[found.prompt], top=None)
    assert [{key: item[key] for key in explained[0]} for item in found.shared] == explained if explained else not found.shared
    assert all(item["caption"] == captions[item["anchor"]] for item in found.shared)
    assert found.score == pytest.approx(sum(item["contribution"] for item in found.shared), abs=1e-6)
    # the accuracy on the evaluation rows, with its Wilson interval
    rows = explorer.eval_rows
    assert len(rows) == 25 and rows[0] == 0 and rows[-1] == IMAGES - 1
    measured = accuracy(pred[rows], embedded.labels[rows])
    assert found.accuracy == measured
    assert found.interval == wilson_interval(round(measured * len(rows)), len(rows))


def test_the_static_fallback_draws_one_labelled_figure_and_no_widget(data, capsys, monkeypatch):
    images, texts, embedded, captions = data
    monkeypatch.setenv("ASIF_HEADLESS", "1")  # a batch run, whatever the environment of the test
    explorer = Explorer(images, texts, embedded, captions=captions, n_eval=0, device="cpu")
    fig = explorer.show(k=10, p=3.0)
    assert isinstance(fig, matplotlib.figure.Figure)
    data_axes = [ax for ax in fig.axes if ax.axison and (ax.lines or ax.collections or ax.patches or ax.images)]
    assert len(data_axes) == 3 and unlabelled_axes(fig) == []
    said = capsys.readouterr().out
    assert "k = 10, p = 3, 240 pairs: image 0 →" in said and "shares" in said and "accuracy" not in said
    assert not hasattr(explorer, "widget")


def test_a_prompt_sharing_no_anchor_is_said_in_words(data):
    images, texts, embedded, captions = data
    explorer = Explorer(images, texts, embedded, n_eval=0, device="cpu")
    found = explorer.compute(1, 1.0, 20, 0)   # one kept anchor each side, among 20: rarely the same
    fig = explorer.figure(found)
    assert unlabelled_axes(fig) == []
    if not found.shared:
        assert found.score == 0 and "0 shared anchors" in fig.axes[-1].get_title()


def test_sliders_have_stable_descriptions_and_recompute_on_a_move(data, monkeypatch):
    import ipywidgets

    images, texts, embedded, captions = data
    explorer = Explorer(images, texts, embedded, captions=captions, n_eval=10, device="cpu")
    monkeypatch.setattr("IPython.display.display", lambda *args, **kwargs: None)
    assert explorer.show(k=10, p=3.0, interactive=True) is None
    pairs = explorer.sliders["pairs"]
    assert pairs.max == N and (pairs.max - pairs.min) % pairs.step == 0
    sliders = {w.description: w for w in explorer.widget.children if isinstance(w, (ipywidgets.IntSlider, ipywidgets.FloatSlider))}
    assert set(sliders) == {"k", "p", "pairs", "image"}
    assert all(not w.continuous_update for w in sliders.values())
    assert (sliders["k"].value, sliders["p"].value, sliders["pairs"].value) == (10, 3.0, N)
    assert explorer.last.k == 10
    sliders["k"].value = 25
    sliders["pairs"].value = 100
    assert (explorer.last.k, explorer.last.pairs) == (25, 100)
    model = AsifModel(images[:100], texts[:100], k=25, p=3.0, device="cpu")
    assert np.array_equal(explorer.last.scores, model.classify(embedded.images[:1], embedded.prompts, TEMPLATES)[1][0])


def test_differences_measure_a_hand_written_representation_against_the_model(data):
    images, texts, embedded, captions = data
    explorer = Explorer(images, texts, embedded, n_eval=0, device="cpu")

    def by_hand(s, k, p):
        row = np.zeros_like(s, dtype=np.float64)
        top = np.argsort(-s, kind="stable")[:k]
        row[top] = np.maximum(s[top], 0) ** p
        return row / np.linalg.norm(row)

    def unclamped(s, k, p):
        row = np.zeros_like(s, dtype=np.float64)
        top = np.argsort(-s, kind="stable")[:k]
        row[top] = s[top] ** p
        return row / np.linalg.norm(row)

    cases = [("an image", "image", embedded.images[0], 10, 3.0), ("a prompt", "text", embedded.prompts[0], N, 2.0)]
    gaps = explorer.differences(by_hand, cases)
    assert list(gaps) == ["an image at k=10, p=3", f"a prompt at k={N}, p=2"] and max(gaps.values()) < 1e-5
    assert explorer.differences(unclamped, cases)[f"a prompt at k={N}, p=2"] > 1e-3  # negatives squared
    with pytest.raises(ValueError, match="one per anchor pair"):
        explorer.differences(lambda s, k, p: s[:k], cases)


def test_similarities_are_cosines_in_blocks(data):
    images, texts, embedded, captions = data
    s = similarities(images, embedded.images[3], block=7)
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    q = embedded.images[3] / np.linalg.norm(embedded.images[3])
    assert s.shape == (N,) and np.allclose(s, unit @ q, atol=1e-6)


def test_given_the_notebooks_model_it_shares_its_anchors_and_never_changes_it(data):
    images, texts, embedded, captions = data
    model = AsifModel(images, texts, k=30, p=5.0, ids=[f"pair-{i}" for i in range(N)], device="cpu")
    explorer = Explorer(images, texts, embedded, model=model, n_eval=0, device="cpu")
    found = explorer.compute(7, 2.0, N, 4)
    assert (model.k, model.p) == (30, 5.0)
    served = explorer.model(7, 2.0)
    assert served is not model and served._images is model._images and served.ids is model.ids
    fresh = AsifModel(images, texts, k=7, p=2.0, device="cpu")
    assert np.array_equal(found.scores, fresh.classify(embedded.images[4:5], embedded.prompts, TEMPLATES)[1][0])
    assert all(item["id"] == f"pair-{item['anchor']}" for item in found.shared)
    explorer.compute(7, 2.0, 100, 4)  # a prefix: its own model; the full one is kept
    explorer.compute(7, 2.0, 50, 4)
    assert sorted(explorer._models) == [50, N]
    with pytest.raises(ValueError, match="pass the anchors the model was built from"):
        Explorer(images[:100], texts[:100], embedded, model=model)


def test_the_mean_rule_scores_are_the_models_too(data):
    images, texts, embedded, captions = data
    explorer = Explorer(images, texts, embedded, reduce="mean", n_eval=12, device="cpu")
    found = explorer.compute(20, 4.0, 150, 9)
    model = AsifModel(images[:150], texts[:150], k=20, p=4.0, device="cpu")
    pred, scores = model.classify(embedded.images, embedded.prompts, n_templates=TEMPLATES, reduce="mean")
    assert np.array_equal(found.scores, scores[9]) and found.predicted == pred[9]
    assert found.accuracy == accuracy(pred[explorer.eval_rows], embedded.labels[explorer.eval_rows])
    assert found.prompt_score == pytest.approx(float(model.similarity(embedded.images[9][None],
                                                                      embedded.prompts[found.prompt][None])[0, 0]))
    assert "mean-rule score" in found.summary()
