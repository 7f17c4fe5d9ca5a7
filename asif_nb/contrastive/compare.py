"""Scoring the trained models as ASIF is scored, and the comparison loop of notebook 08."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import accuracy_topk, mean_per_class_recall, retrieval_recall
from ..prompts import prompts_for
from .training import _length, _take, _to


@torch.no_grad()
def encode_in_batches(encode, inputs, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """``encode`` (e.g. ``model.encode_image``) over ``inputs`` in batches; L2-normalised float32 numpy rows."""
    out = []
    for start in range(0, _length(inputs), batch_size):
        batch = _to(_take(inputs, slice(start, start + batch_size)), device)
        out.append(F.normalize(encode(batch).float(), dim=1).cpu())
    return torch.cat(out).numpy()


def _unit_rows(x) -> np.ndarray:
    return F.normalize(torch.as_tensor(np.asarray(x, dtype=np.float32)), dim=1).numpy()


def evaluate_features(image_features, prompt_features=None, labels=None, n_templates: int = 1,
                      caption_features=None, reduce: str = "max") -> dict:
    """The metrics ``pipeline.evaluate`` reports for ASIF, for any model that embeds images and texts in one
    space: cosine scores, a class scores its best template (``reduce="max"``, the rule ASIF uses) or the mean of
    its normalised templates (``"mean"``, CLIP's); ties counted against us. Captions: caption i belongs to image i."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce={reduce!r} is not known: use 'max' or 'mean'.")
    images = _unit_rows(image_features)
    result = {"n_images": int(len(images))}
    if prompt_features is not None:
        prompts = _unit_rows(prompt_features)
        if len(prompts) % n_templates:
            raise ValueError(f"{len(prompts)} prompts is not a multiple of n_templates={n_templates}: pass "
                             "class-major prompts (class c, template t at row c*T + t).")
        n_classes = len(prompts) // n_templates
        if reduce == "max":
            scores = (images @ prompts.T).reshape(len(images), n_classes, n_templates).max(axis=2)
        else:
            means = prompts.reshape(n_classes, n_templates, -1).mean(axis=1)
            scores = images @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T
        labels = np.asarray(labels)
        result.update(accuracy_topk(scores, labels, k=(1, 5), ties="worst"))
        result["mean_per_class_recall"] = float(mean_per_class_recall(scores, labels, ties="worst"))
        result["chance"] = 1.0 / n_classes
    if caption_features is not None:
        captions = _unit_rows(caption_features)
        similarity = images @ captions.T
        result.update(retrieval_recall(similarity, np.arange(len(similarity)), k=(1, 5), ties="worst"))
    return result


# ---------------------------------------------------------------------------------------------- notebook 08's comparison

METHODS = ("CLIP from scratch", "LiT-style", "frozen-frozen linear", "ASIF")


def compare(anchor_images, anchor_texts, captions, evals: dict, counts, *, k: int, p: float, reduce: str = "max",
            head_steps: int = 100, batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
            clip_config=None, clip_steps: int = 150, anchor_pixels=None, eval_pixels: dict | None = None,
            progress: bool = True) -> list[dict]:
    """Train and evaluate the four methods of notebook 08 on the first ``n`` pairs, for each ``n`` in ``counts``.

    ``anchor_images`` / ``anchor_texts``: the frozen encoders' embeddings of the pairs (row i = pair i), ``captions``
    their captions; ``evals``: name → ``EvalEmbeddings`` (``pipeline.embed_eval``), all scored alike
    (``pipeline.evaluate`` for ASIF, ``evaluate_features`` for the others: same metrics, ties against the model).

    - **ASIF**: ``AsifModel`` on the first n pairs (``k`` capped at n, ``p``); "training" is building it.
    - **LiT-style** and **frozen-frozen linear**: ``lit_heads`` / ``linear_heads`` trained ``head_steps`` steps.
    - **CLIP from scratch** (only with ``clip_config``): ``CLIP`` on ``anchor_pixels`` (``image_pixels`` of the
      first pairs' images) and a ``WordTokenizer`` of the captions, ``clip_steps`` steps, for every n up to
      ``len(anchor_pixels)``; scored on ``eval_pixels[name]`` and on prompts / captions tokenised the same way.

    Every trained model starts from ``torch.manual_seed(seed)``; AdamW at ``lr``, ``batch_size`` (see
    ``train_contrastive``). Returns one dict per (method, n, eval): ``method``, ``n_pairs``, ``eval``,
    ``train_seconds``, ``flops``, ``parameters``, the trained ones' ``final_loss`` and ``tau``, and the metrics.
    ``progress`` prints one line per n."""
    from ..model import AsifModel
    from ..pipeline import evaluate
    from .models import CLIP, WordTokenizer, linear_heads, lit_heads
    from .training import train_contrastive

    n_total = _length(anchor_images)
    if _length(anchor_texts) != n_total or len(captions) != n_total:
        raise ValueError(f"anchor_images has {n_total} rows, anchor_texts {_length(anchor_texts)}, captions "
                         f"{len(captions)}: pass the same pairs in all three (row i = pair i).")
    counts = list(counts)
    bad = [n for n in counts if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= n_total]
    if not counts or bad:
        raise ValueError(f"counts={counts!r}: give numbers of pairs between 2 and {n_total}, e.g. [250, 500, {n_total}].")
    if not evals:
        raise ValueError("evals is empty: pass {name: pipeline.embed_eval(...)} for at least one evaluation set.")
    if clip_config is not None:
        if anchor_pixels is None:
            raise ValueError("clip_config needs anchor_pixels: image_pixels(collection.images[:n], config.image_size).")
        missing = [name for name in evals if name not in (eval_pixels or {}) or evals[name].evalset is None]
        if missing:
            raise ValueError(f"CLIP from scratch needs the raw images of every eval set: eval_pixels lacks (or the "
                             f"set has no images for) {missing}; pass eval_pixels={{name: image_pixels(...)}}.")
    image_dim, text_dim = anchor_images.shape[1], anchor_texts.shape[1]
    rows = []
    for n in counts:
        n = int(n)
        images_n = torch.from_numpy(np.ascontiguousarray(anchor_images[:n], dtype=np.float32))
        texts_n = torch.from_numpy(np.ascontiguousarray(anchor_texts[:n], dtype=np.float32))
        done = len(rows)
        # ASIF: no training, only the anchors
        t0 = time.perf_counter()
        asif = AsifModel(anchor_images[:n], anchor_texts[:n], k=min(k, n), p=p, device=device)
        build_seconds = time.perf_counter() - t0
        for name, e in evals.items():
            rows.append({"method": "ASIF", "n_pairs": n, "eval": name, "train_seconds": build_seconds, "flops": 0.0,
                         "parameters": 0, **{key: value for key, value in evaluate(asif, e, reduce=reduce).items()
                                             if key != "predictions"}})
        # LiT-style and frozen-frozen linear: heads on the frozen embeddings
        for method, make in (("LiT-style", lit_heads), ("frozen-frozen linear", linear_heads)):
            torch.manual_seed(seed)
            heads = make(image_dim, text_dim)
            fit = train_contrastive(heads, images_n, texts_n, steps=head_steps, batch_size=batch_size, lr=lr,
                                    seed=seed, device=device)
            for name, e in evals.items():
                metrics = _score(heads.encode_image, heads.encode_text, torch.from_numpy(e.images),
                                 _maybe(torch.from_numpy, e.prompts), e, _maybe(torch.from_numpy, e.captions), reduce,
                                 device)
                rows.append(_trained_row(method, n, name, fit, heads, metrics))
        # CLIP from scratch on raw pixels and word tokens of the same n pairs
        if clip_config is not None and n <= len(anchor_pixels):
            tokenizer = WordTokenizer(captions[:n])
            length = clip_config.context_length
            torch.manual_seed(seed)
            clip = CLIP(clip_config, len(tokenizer))
            fit = train_contrastive(clip, anchor_pixels[:n], tokenizer(captions[:n], length), steps=clip_steps,
                                    batch_size=batch_size, lr=lr, seed=seed, device=device,
                                    tokens_per_example=clip.tokens_per_example())
            for name, e in evals.items():
                prompts = None if e.prompts is None else tokenizer(prompts_for(e.class_names, e.templates), length)
                texts = None if e.captions is None else tokenizer(e.evalset.captions, length)
                metrics = _score(clip.encode_image, clip.encode_text, eval_pixels[name], prompts, e, texts, reduce,
                                 device)
                rows.append(_trained_row("CLIP from scratch", n, name, fit, clip, metrics))
        if progress:
            print(f"n={n:>6,}: " + "; ".join(f"{r['method']} {r['eval']} acc1 {r.get('acc1', float('nan')):.3f} "
                                             f"({r['train_seconds']:.1f} s)" for r in rows[done:] if "acc1" in r))
    return rows


def winners(rows, metrics=("acc1", "text_retrieval_recall@1"), reference: str = "ASIF") -> list[dict]:
    """For every (eval, n_pairs) of ``compare`` rows and every metric measured there: the best method (the first
    row listed among equals) beside ``reference``'s value. Groups in (eval, n_pairs) order; values rounded to 3
    places. Returns ``{"eval", "metric", "n_pairs", "best", "best value", reference}`` dicts."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["eval"], row["n_pairs"]), []).append(row)
    out = []
    for (name, n), group in sorted(groups.items()):
        for metric in metrics:
            measured = [row for row in group if _number(row.get(metric)) is not None]
            if not measured:
                continue
            best = measured[0]
            for row in measured[1:]:
                if row[metric] > best[metric]:
                    best = row
            mine = next((_number(row.get(metric)) for row in group if row["method"] == reference), None)
            out.append({"eval": name, "metric": metric, "n_pairs": n, "best": best["method"],
                        "best value": round(best[metric], 3), reference: None if mine is None else round(mine, 3)})
    return out


def _score(encode_image, encode_text, images, prompts, e, captions, reduce, device) -> dict:
    """``evaluate_features`` of a trained model on one eval set (``e``: its ``EvalEmbeddings``)."""
    return evaluate_features(
        encode_in_batches(encode_image, images, device=device),
        None if prompts is None else encode_in_batches(encode_text, prompts, device=device),
        e.labels, e.n_templates,
        None if captions is None else encode_in_batches(encode_text, captions, device=device),
        reduce=reduce)


def _trained_row(method, n, name, fit, model, metrics) -> dict:
    return {"method": method, "n_pairs": n, "eval": name, "train_seconds": fit.seconds, "flops": fit.flops,
            "parameters": fit.n_parameters, "final_loss": fit.losses[-1], "tau": float(model.tau.detach()), **metrics}


def _maybe(convert, value):
    return None if value is None else convert(value)


def _number(value):
    """A metric's value, or None where it was not measured (missing, None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value
