"""The CLIP-shaped front door, ``Asif``: no silent wrong answer from a bare string, a bad template, or anchors
looked up by position after the model was edited (see ``tiny_asif`` in conftest.py)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from asif_nb.plots import plot_explanation  # noqa: E402


def _embedded(asif):
    return sum(len(batch) for batch in asif.image_encoder.calls + asif.text_encoder.calls)


# ------------------------------------------------------------------------------------------------ bare strings

def test_a_bare_string_of_class_names_is_refused_before_anything_is_embedded(tiny_asif):
    image = tiny_asif.collection[0].image
    with pytest.raises(TypeError, match=r"one string.*pass a list of class names"):
        tiny_asif.classify([image], "cat")
    assert _embedded(tiny_asif) == 0


def test_one_image_path_is_one_image_not_one_per_character(tiny_asif):
    image = str(tiny_asif.collection[3].image)
    pred, scores = tiny_asif.classify(image, ["caption 3", "caption 7"], templates=["{c}"])
    assert scores.shape == (1, 2) and pred.tolist() == [0]
    assert tiny_asif.image_encoder.calls[-1] == [image]
    # the same answer as a list of one
    pred_list, scores_list = tiny_asif.classify([image], ["caption 3", "caption 7"], templates=["{c}"])
    assert np.array_equal(scores, scores_list) and np.array_equal(pred, pred_list)


def test_encode_and_similarity_take_one_item_or_a_list(tiny_asif):
    images = [tiny_asif.collection[i].image for i in range(3)]
    assert tiny_asif.encode_image(str(images[0])).shape == (1, 12)
    assert tiny_asif.encode_image(images).shape == (3, 12)
    assert tiny_asif.encode_text("caption 1").shape == (1, 12)
    assert tiny_asif.similarity(images[0], "caption 0").shape == (1, 1)
    assert tiny_asif.similarity(images, ["caption 0", "caption 1"]).shape == (3, 2)
    with pytest.raises(TypeError, match="decode bytes"):
        tiny_asif.encode_text(b"caption 1")
    with pytest.raises(TypeError, match="images must be a list"):
        tiny_asif.encode_image(3)


# ------------------------------------------------------------------------------------------------ templates

@pytest.mark.parametrize("templates, message", [
    (["a photo."], r"no \{c\} placeholder"),
    (["a {x}."], r"field \{x\}"),
    (["a {0}."], r"field \{0\}"),
    (["a {c"], "not a valid template"),
    ("a photo of a {c}.", "one string"),
    ([], "empty"),
])
def test_a_bad_template_is_refused_with_the_fix_before_anything_is_embedded(tiny_asif, templates, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_asif.classify([tiny_asif.collection[0].image], ["cat", "dog"], templates=templates)
    assert _embedded(tiny_asif) == 0


def test_clip_style_braces_are_read_as_the_class_name(tiny_asif):
    image = tiny_asif.collection[0].image
    _, ours = tiny_asif.classify([image], ["cat", "dog"], templates=["a photo of a {c}."])
    _, clips = tiny_asif.classify([image], ["cat", "dog"], templates=["a photo of a {}."])
    assert tiny_asif.text_encoder.calls[-1] == ["a photo of a cat.", "a photo of a dog."]
    assert np.array_equal(ours, clips)


# ------------------------------------------------------------------------------------------------ explain by id

def _check_rows_name_their_pairs(rows):
    assert rows
    for row in rows:
        number = row["id"][1:]  # pair p{i}: caption "caption {i}", image anchor-{i}.png
        assert row["caption"] == f"caption {number}"
        assert row["image"].name == f"anchor-{number}.png"


def test_explain_names_the_right_pairs_after_pairs_are_removed(tiny_asif):
    image, caption = tiny_asif.collection[5].image, "caption 5"
    before = tiny_asif.explain(image, caption, top=None)
    _check_rows_name_their_pairs(before)
    assert before[0]["id"] == "p5"
    tiny_asif.model.remove_pairs(["p0", "p1", "p2"])  # every later anchor moves three positions up
    after = tiny_asif.explain(image, caption, top=None)
    _check_rows_name_their_pairs(after)
    assert after[0]["id"] == "p5" and after[0]["anchor"] == 2
    assert {row["id"] for row in after} <= {row["id"] for row in before} | {f"p{i}" for i in range(3, 12)}


def test_explain_after_adding_a_pair_the_collection_lacks(tiny_asif):
    model = tiny_asif.model
    image = tiny_asif.collection[4].image
    query = tiny_asif.embed_images([image])
    # a new pair at position 0's old place in the order: its image is the query itself, its text the caption's
    model.remove_pairs(["p0"])
    model.add_pairs(query, tiny_asif.embed_texts(["caption 4"]), ids=["new"])
    rows = tiny_asif.explain(image, "caption 4", top=None)
    new = [row for row in rows if row["id"] == "new"]
    assert new and new[0]["caption"] is None and new[0]["image"] is None
    _check_rows_name_their_pairs([row for row in rows if row["id"] != "new"])


def test_plot_explanation_looks_anchors_up_by_id(tiny_asif):
    image = tiny_asif.collection[5].image
    tiny_asif.model.remove_pairs(["p0", "p1"])
    rows = tiny_asif.model.explain(tiny_asif.embed_images([image])[0], tiny_asif.embed_texts(["caption 5"])[0])
    fig = plot_explanation(image, rows, tiny_asif.collection)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes[1:]]
    assert titles == [f"caption {row['id'][1:]}" for row in rows]
    plt.close(fig)
    with pytest.raises(ValueError, match="pass the collection"):
        plot_explanation(image, rows)
    with pytest.raises(ValueError, match="not in the collection"):
        plot_explanation(image, [{**rows[0], "id": "gone"}], tiny_asif.collection)


def test_anchor_pair_finds_pairs_by_id(tiny_asif):
    assert tiny_asif.anchor_pair("p7").caption == "caption 7"
    with pytest.raises(ValueError, match="has id 'nope'"):
        tiny_asif.anchor_pair("nope")


@pytest.mark.parametrize("image, text, message", [
    ("IMAGES", "caption 1", "one image, got 2"),
    ("IMAGE", ["caption 1"], "one text"),
])
def test_explain_takes_one_image_and_one_text(tiny_asif, image, text, message):
    one = tiny_asif.collection[1].image
    image = [one, one] if image == "IMAGES" else one
    with pytest.raises(TypeError, match=message):
        tiny_asif.explain(image, text)
