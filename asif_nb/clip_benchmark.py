"""ASIF inside LAION's CLIP_benchmark, the harness the field compares CLIP-like models with.

    import asif_nb
    from asif_nb.clip_benchmark import model as asif_for_clip_benchmark
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    asif = asif_nb.load("demo")
    model, transform, tokenizer = asif_for_clip_benchmark(asif)
    # any CLIP_benchmark dataset built with `transform`, then its own evaluation:
    zeroshot_classification.evaluate(model, dataloader, tokenizer, classnames, templates, device="cpu")

CLIP_benchmark asks a model for ``encode_image(pixels)`` and ``encode_text(tokens)``, L2-normalises what they return
and compares by dot products. ASIF's answer is the dense relative representation (one coordinate per anchor pair):
cosine similarity of those is exactly ASIF's similarity. CLIP_benchmark averages a class's template embeddings —
that is ``reduce="mean"`` in ``asif_nb``'s ``evaluate``, and the two report the same numbers. ``transform`` is the
image encoder's own preprocessing (PIL image → tensor); ``tokenizer`` hands the raw strings through (ASIF's text
encoder tokenizes them itself). Both encoders run outside CLIP_benchmark's autocast, so ``amp=True`` does not change
a number. Memory: each batch's representation is (batch, N) floats and the class matrix N × classes — fine for the
demo's 5k anchors; at 1.6M anchors use ``asif_nb.pipeline.evaluate`` (sparse) instead.
"""
from __future__ import annotations

import numpy as np
import torch


class TextBatch(list):
    """A batch of raw strings that CLIP_benchmark can move ``.to(device)`` like a tensor of tokens."""

    def to(self, device):
        return self


class Tokenizer:
    """CLIP_benchmark's ``tokenizer(texts)``: keeps the strings (ASIF's text encoder tokenizes them itself)."""

    def __call__(self, texts) -> TextBatch:
        if isinstance(texts, str):
            texts = [texts]
        return TextBatch(texts)


class ImageTransform:
    """CLIP_benchmark's ``transform``: a PIL image → the image encoder's preprocessed tensor (3, H, W)."""

    def __init__(self, image_encoder):
        self.image_encoder = image_encoder

    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.image_encoder.prepare(image)))


class AsifForClipBenchmark(torch.nn.Module):
    """``encode_image`` / ``encode_text`` returning dense relative representations (n, N) as float32 tensors."""

    def __init__(self, asif):
        super().__init__()
        self.asif = asif

    @staticmethod
    def _dense(representation, like) -> torch.Tensor:
        device = like.device if isinstance(like, torch.Tensor) else "cpu"
        return torch.from_numpy(np.asarray(representation.toarray(), dtype=np.float32)).to(device)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=pixels.device.type, enabled=False):
            features = self.asif.image_encoder.forward(pixels.float())
        return self._dense(self.asif.model.encode_image(features), pixels)

    def encode_text(self, texts) -> torch.Tensor:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError("encode_text takes the list of strings the tokenizer returned (asif_nb.clip_benchmark."
                            "Tokenizer), not token ids.")
        prepared = [self.asif.text_encoder.prepare(text) for text in texts]
        with torch.autocast(device_type="cpu", enabled=False):
            features = self.asif.text_encoder.forward(prepared)
        return self._dense(self.asif.model.encode_text(features), None)


def model(asif) -> tuple[AsifForClipBenchmark, ImageTransform, Tokenizer]:
    """``(model, transform, tokenizer)`` for CLIP_benchmark's ``zeroshot_classification.evaluate`` and
    ``zeroshot_retrieval.evaluate``, from an ``asif_nb.Asif`` (``asif_nb.load(...)``)."""
    for attribute in ("model", "image_encoder", "text_encoder"):
        if not hasattr(asif, attribute):
            raise TypeError(f"model() takes an asif_nb.Asif (asif_nb.load('demo')), got {type(asif).__name__}.")
    return AsifForClipBenchmark(asif).eval(), ImageTransform(asif.image_encoder), Tokenizer()


class EvalDataset(torch.utils.data.Dataset):
    """One of the suite's evaluation sets (``asif_nb.load_eval``) in the shape CLIP_benchmark's datasets have:
    items ``(transform(image), label)`` — or ``(transform(image), [caption])`` with ``retrieval=True`` — and the
    class names as ``.classes`` (its classification ``evaluate`` reads them)."""

    def __init__(self, evalset, transform, retrieval: bool = False):
        if retrieval and evalset.captions is None:
            raise ValueError(f"{evalset.name!r} has no captions: retrieval needs a set with one caption per image.")
        self.evalset, self.transform, self.retrieval = evalset, transform, retrieval
        self.classes = list(evalset.class_names)

    def __len__(self) -> int:
        return len(self.evalset.images)

    def __getitem__(self, i):
        from .encoders import load_image

        target = [self.evalset.captions[i]] if self.retrieval else int(self.evalset.labels[i])
        return self.transform(load_image(self.evalset.images[i])), target
