"""Reading a classification through its anchors, and curating the anchors to fix it (notebook 04).

``explain_labels`` explains one image's score for any labels — the predicted one *and the true one*, which is what
tells a curator what the collection lacks. ``class_report`` measures accuracy and per-class recall (with Wilson
intervals) on an evaluation set (``balanced_subset``: the same number of images per class, taken from embeddings
already computed); ``with_pairs`` is a copy of a model with pairs added or removed (the model itself is
untouched). The exercise's test is ``asif_nb.exercises.curation_check``.
"""
from __future__ import annotations

import re

import numpy as np

from .metrics import accuracy, wilson_interval
from .model import AsifModel

__all__ = ["balanced_subset", "captions_mentioning", "class_report", "explain_labels", "with_pairs"]


def explain_labels(model: AsifModel, embedded, index: int, classes) -> list[dict]:
    """Why image ``index`` of ``embedded`` (``EvalEmbeddings``) scores what it scores for each of ``classes``:
    per class, ``{"class", "label", "score", "prompt", "rows", "shared"}``. A class scores its best template
    (``classify``'s ``reduce="max"``); ``rows`` are ``model.explain`` of the image and that prompt, every shared
    anchor (they sum to ``score``); ``shared`` is their count (0: the image and the label share no anchor)."""
    T = embedded.n_templates
    image = embedded.images[index]
    explained = []
    for c in classes:
        c = int(c)
        prompts = embedded.prompts[c * T:(c + 1) * T]
        scores = model.similarity(image[None], prompts)[0]
        best = int(np.argmax(scores))
        rows = model.explain(image, prompts[best], top=None)
        template = embedded.templates[best] if embedded.templates else "{c}"
        explained.append({"class": c, "label": embedded.class_names[c], "score": float(scores[best]),
                          "prompt": template.replace("{c}", embedded.class_names[c]), "rows": rows,
                          "shared": len(rows)})
    return explained


def captions_mentioning(captions, label: str) -> list[int]:
    """Positions of the captions that mention ``label`` as a word (case-insensitive, plural "s" allowed; each
    part of a label such as "T-shirt/top" counts): how much the collection says about a class."""
    parts = [part.strip() for part in re.split(r"[/,]", label) if part.strip()]
    pattern = re.compile(r"\b(" + "|".join(re.escape(part) for part in parts) + r")(s|es)?\b", re.I)
    return [i for i, caption in enumerate(captions) if pattern.search(str(caption))]


def class_report(model: AsifModel, embedded) -> dict:
    """Accuracy and per-class recall of ``model`` on ``embedded`` (the suite's tie rule: a tied best score is no
    answer, never right): ``accuracy``, ``recall`` (n_classes,), ``n`` per class, ``low`` / ``high`` (95 % Wilson
    intervals of each recall), ``pred``."""
    labels = np.asarray(embedded.labels)
    pred, _ = model.classify(embedded.images, embedded.prompts, n_templates=embedded.n_templates)
    n_classes = len(embedded.class_names)
    n = np.bincount(labels, minlength=n_classes)
    hits = np.bincount(labels[pred == labels], minlength=n_classes)
    intervals = [wilson_interval(h, m) if m else (np.nan, np.nan) for h, m in zip(hits, n)]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
    return {"accuracy": accuracy(pred, labels), "recall": recall, "n": n,
            "low": np.array([i[0] for i in intervals]), "high": np.array([i[1] for i in intervals]), "pred": pred}


def with_pairs(model: AsifModel, images=None, texts=None, ids=None, remove=()) -> AsifModel:
    """A copy of ``model`` with the pairs ``ids`` removed and then the pairs (``images``, ``texts``: embeddings,
    one row per pair, new ``ids``) added. ``model`` itself does not change."""
    images_now, texts_now = model.anchor_embeddings()
    copy = AsifModel.from_unit_rows(images_now, texts_now, **model.settings())
    if len(remove):
        copy.remove_pairs(list(remove))
    if images is not None and len(images):
        copy.add_pairs(images, texts, ids=ids)
    return copy


def balanced_subset(embedded, per_class: int):
    """The first ``per_class`` images of each class of ``embedded`` (``EvalEmbeddings``), in their order: a smaller
    evaluation set from embeddings already computed (nothing is embedded again; ``evalset`` is cut alike)."""
    import dataclasses

    labels = np.asarray(embedded.labels)
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(embedded.class_names))]))
    evalset = embedded.evalset
    if evalset is not None:
        pick = lambda values: None if values is None else [values[i] for i in keep]  # noqa: E731
        evalset = dataclasses.replace(evalset, images=pick(evalset.images), labels=np.asarray(evalset.labels)[keep],
                                      captions=pick(evalset.captions), ids=pick(evalset.ids))
    return dataclasses.replace(embedded, images=embedded.images[keep], labels=labels[keep], evalset=evalset,
                               captions=None if embedded.captions is None else embedded.captions[keep])
