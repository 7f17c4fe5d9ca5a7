"""Notebook 08's comparison loop, ``contrastive.compare``, and its table of winners, on tiny synthetic pairs."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asif_nb.contrastive import (METHODS, CLIPConfig, compare, encode_in_batches, evaluate_features, lit_heads,
                                 train_contrastive, winners)
from asif_nb.model import AsifModel
from asif_nb.pipeline import EvalEmbeddings, evaluate

torch.set_num_threads(2)
MICRO = CLIPConfig(image_size=8, patch=4, vision_width=16, vision_layers=1, vision_heads=2, text_width=16,
                   text_layers=1, text_heads=2, context_length=6, embed_dim=8, mlp_ratio=2)
WORDS = ["red", "green", "blue", "round", "square", "big", "small"]


@pytest.fixture(scope="module")
def pairs():
    """40 pairs whose text embedding is a linear map of the image embedding plus noise; a 4-class eval set built
    the same way, and a 6-image retrieval set."""
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((6, 5))
    images = rng.standard_normal((40, 6)).astype(np.float32)
    texts = (images @ mix + 0.1 * rng.standard_normal((40, 5))).astype(np.float32)
    captions = [" ".join(rng.choice(WORDS, 3)) for _ in range(40)]
    centres = rng.standard_normal((4, 6))
    labels = np.repeat(np.arange(4), 3)
    names, templates = ["red", "green", "blue", "round"], ["a {c} thing"]
    classification = EvalEmbeddings(
        "cls", (centres[labels] + 0.3 * rng.standard_normal((12, 6))).astype(np.float32),
        (centres @ mix).astype(np.float32), None, labels, names, templates, 1,
        evalset=SimpleNamespace(class_names=names, templates=templates, labels=labels, captions=None))
    ret_images = rng.standard_normal((6, 6)).astype(np.float32)
    ret_captions = [" ".join(rng.choice(WORDS, 2)) for _ in range(6)]
    retrieval = EvalEmbeddings("ret", ret_images, None, (ret_images @ mix).astype(np.float32), np.zeros(6, np.int64),
                               [], [], 1, evalset=SimpleNamespace(captions=ret_captions))
    pixels = torch.rand(16, 3, 8, 8) * 2 - 1
    eval_pixels = {"cls": torch.rand(12, 3, 8, 8) * 2 - 1, "ret": torch.rand(6, 3, 8, 8) * 2 - 1}
    return SimpleNamespace(images=images, texts=texts, captions=captions, evals={"cls": classification, "ret": retrieval},
                           pixels=pixels, eval_pixels=eval_pixels)


def _run(pairs, **options):
    settings = dict(k=20, p=2, head_steps=4, batch_size=8, seed=3, device="cpu", clip_config=MICRO, clip_steps=3,
                    anchor_pixels=pairs.pixels, eval_pixels=pairs.eval_pixels, progress=False)
    settings.update(options)
    return compare(pairs.images, pairs.texts, pairs.captions, pairs.evals, [8, 16, 40], **settings)


@pytest.fixture(scope="module")
def rows(pairs):
    return _run(pairs)


def _metrics(row):
    return {key: value for key, value in row.items() if key not in ("train_seconds",)}


def test_every_method_on_every_eval_at_every_n_and_clip_only_where_it_has_pixels(rows):
    seen = {(row["method"], row["n_pairs"], row["eval"]) for row in rows}
    trained = {(m, n, e) for m in METHODS if m != "CLIP from scratch" for n in (8, 16, 40) for e in ("cls", "ret")}
    clip = {("CLIP from scratch", n, e) for n in (8, 16) for e in ("cls", "ret")}  # 16 pixel rows: n <= 16
    assert seen == trained | clip and len(rows) == len(seen)
    for row in rows:
        assert ("acc1" in row) == (row["eval"] == "cls") and ("text_retrieval_recall@1" in row) == (row["eval"] == "ret")
        assert (row["flops"] == 0) == (row["method"] == "ASIF")


def test_asif_rows_are_the_model_on_the_first_n_pairs_with_k_capped(pairs, rows):
    for n in (8, 40):
        model = AsifModel(pairs.images[:n], pairs.texts[:n], k=min(20, n), p=2, device="cpu")
        for name, e in pairs.evals.items():
            expected = {key: value for key, value in evaluate(model, e).items() if key != "predictions"}
            row = next(r for r in rows if r["method"] == "ASIF" and r["n_pairs"] == n and r["eval"] == name)
            assert {key: row[key] for key in expected} == expected


def test_a_head_row_is_that_head_trained_on_the_first_n_pairs_from_the_seed(pairs, rows):
    torch.manual_seed(3)
    heads = lit_heads(6, 5)
    fit = train_contrastive(heads, torch.from_numpy(pairs.images[:16]), torch.from_numpy(pairs.texts[:16]), steps=4,
                            batch_size=8, lr=1e-3, seed=3)
    e = pairs.evals["cls"]
    expected = evaluate_features(encode_in_batches(heads.encode_image, torch.from_numpy(e.images)),
                                 encode_in_batches(heads.encode_text, torch.from_numpy(e.prompts)), e.labels, 1)
    row = next(r for r in rows if r["method"] == "LiT-style" and r["n_pairs"] == 16 and r["eval"] == "cls")
    assert {key: row[key] for key in expected} == expected
    assert row["final_loss"] == fit.losses[-1] and row["parameters"] == fit.n_parameters


def test_the_comparison_is_reproducible(pairs, rows):
    again = _run(pairs)
    assert [_metrics(row) for row in again] == [_metrics(row) for row in rows]


def test_without_a_clip_config_only_the_three_frozen_encoder_methods_run(pairs):
    rows = compare(pairs.images, pairs.texts, pairs.captions, {"cls": pairs.evals["cls"]}, [8], k=4, p=1,
                   head_steps=2, batch_size=8, progress=False)
    assert sorted(row["method"] for row in rows) == ["ASIF", "LiT-style", "frozen-frozen linear"]


@pytest.mark.parametrize("change, message", [
    ({"counts": [1, 8]}, "between 2 and 40"),
    ({"counts": [8, 41]}, "between 2 and 40"),
    ({"counts": []}, "between 2 and 40"),
    ({"captions": ["x"] * 39}, "captions 39"),
    ({"evals": {}}, "evals is empty"),
    ({"anchor_pixels": None}, "needs anchor_pixels"),
    ({"eval_pixels": {"cls": None}}, r"eval_pixels lacks.*\['ret'\]"),
])
def test_bad_arguments_are_refused_before_any_training(pairs, change, message):
    args = dict(anchor_images=pairs.images, anchor_texts=pairs.texts, captions=pairs.captions, evals=pairs.evals,
                counts=[8], k=4, p=1, clip_config=MICRO, anchor_pixels=pairs.pixels, eval_pixels=pairs.eval_pixels,
                progress=False)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        compare(**args)


def test_winners_by_hand():
    rows = [
        {"method": "ASIF", "eval": "b", "n_pairs": 10, "acc1": 0.4},
        {"method": "LiT-style", "eval": "b", "n_pairs": 10, "acc1": 0.6},
        {"method": "linear", "eval": "b", "n_pairs": 10, "acc1": 0.6},           # tied with LiT: listed later
        {"method": "ASIF", "eval": "a", "n_pairs": 10, "text_retrieval_recall@1": 0.5, "acc1": float("nan")},
        {"method": "LiT-style", "eval": "a", "n_pairs": 10, "text_retrieval_recall@1": 0.12345, "acc1": None},
        {"method": "ASIF", "eval": "b", "n_pairs": 2, "acc1": 0.3},
    ]
    assert winners(rows) == [
        {"eval": "a", "metric": "text_retrieval_recall@1", "n_pairs": 10, "best": "ASIF", "best value": 0.5,
         "ASIF": 0.5},
        {"eval": "b", "metric": "acc1", "n_pairs": 2, "best": "ASIF", "best value": 0.3, "ASIF": 0.3},
        {"eval": "b", "metric": "acc1", "n_pairs": 10, "best": "LiT-style", "best value": 0.6, "ASIF": 0.4},
    ]
