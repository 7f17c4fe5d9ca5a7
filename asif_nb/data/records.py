"""What the data stages hand on: ``Pair`` (one anchor), ``Collection`` (an ordered sequence of pairs) and
``EvalSet`` (an evaluation set), and the catalogue of the names ``load_collection`` / ``load_eval`` accept."""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..images import to_rgb

COLLECTIONS = {
    "demo": "about 5,000 offline pairs: Tux Paint stamps (photos), OpenClipart drawings, Noto emoji",
    "folder:<path>": "your own pairs: a folder of images with captions.csv / captions.jsonl or a .txt per image",
    "cc3m": "paper profile: Conceptual Captions 3M, streamed into an anchor bundle (python -m asif_nb.embed cc3m)",
    "cc12m": "paper profile: Conceptual 12M (the paper used the first 1.6M pairs), streamed into an anchor bundle",
}

EVALS = {
    "tuxpaint-heldout": "demo: image→caption retrieval on held-out Tux Paint stamps (never anchors), + their categories",
    "fashion-mnist": "demo: Fashion-MNIST test set (10k, 10 classes), inverted to dark-on-white by default",
    "imagenet-samples": "demo: the 20 ImageNet photos shipped in foolbox, 1000-class label space",
    "imagenet": "paper: your ImageNet val folder (root= or $IMAGENET_DIR); the authors' seeded val/test halves",
    "imagenet-v2": "paper: ImageNetV2 matched-frequency (root= or $IMAGENET_V2_DIR)",
    "cifar100": "paper: CIFAR-100 test set (the verified download, read without unpickling code), CLIP's 18 templates",
    "pets": "paper: Oxford-IIIT Pets test set (torchvision download), the authors' 3 templates",
}


@dataclasses.dataclass(frozen=True)
class Pair:
    """One anchor: an image file on disk and its caption, with a stable id and where it came from."""

    id: str
    caption: str
    image: Path
    source: str
    licence: str
    category: str | None = None

    def load_image(self):
        """The image as an RGB PIL image, transparent pixels composited on white."""
        from PIL import Image

        with Image.open(self.image) as image:
            return to_rgb(image)


class Collection(Sequence):
    """An ordered sequence of ``Pair``s; slicing returns a ``Collection`` (so ``coll[:1000]`` = the first 1000).

    ``sources`` lists the packages behind it (package, version, licence, count, url, citation); ``split`` says
    how held-out pairs were chosen (empty for collections without one).
    """

    def __init__(self, name: str, pairs, sources=(), split=None):
        self.name = name
        self.pairs = list(pairs)
        self.sources = [dict(s) for s in sources]
        self.split = dict(split or {})

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Collection(self.name, self.pairs[index], self.sources, self.split)
        return self.pairs[index]

    def __repr__(self):
        counts = Counter(pair.source for pair in self.pairs)
        return f"Collection({self.name!r}, {len(self)} pairs: {dict(counts)})"

    @property
    def ids(self) -> list[str]:
        return [pair.id for pair in self.pairs]

    @property
    def captions(self) -> list[str]:
        return [pair.caption for pair in self.pairs]

    @property
    def images(self) -> list[Path]:
        return [pair.image for pair in self.pairs]

    @property
    def categories(self) -> list[str | None]:
        return [pair.category for pair in self.pairs]


@dataclasses.dataclass
class EvalSet:
    """An evaluation set. ``task`` is "classification" or "retrieval".

    ``images``: file paths or PIL images, row i ↔ ``labels[i]`` (int64 index into ``class_names``) and, for
    retrieval, ``captions[i]`` (the one caption of image i). ``templates`` are format strings with ``{c}``
    (CLIP_benchmark's convention): the prompts of class c are ``t.format(c=c)``.
    """

    name: str
    task: str
    images: list
    labels: np.ndarray
    class_names: list[str]
    templates: list[str]
    captions: list[str] | None = None
    ids: list[str] | None = None
    source: str = ""
    licence: str = ""

    def __len__(self):
        return len(self.images)

    def __repr__(self):
        return (f"EvalSet({self.name!r}, task={self.task!r}, {len(self)} images, {len(self.class_names)} classes, "
                f"{len(self.templates)} templates)")


def list_collections() -> dict[str, str]:
    """Collection names (``folder:<path>`` stands for any folder) with a one-line description."""
    return dict(COLLECTIONS)


def list_evals() -> dict[str, str]:
    """Evaluation-set names with a one-line description."""
    return dict(EVALS)


def check_count(value, what: str, whole: str):
    """``value`` as a positive int, or None; anything else (0, negative, float, str, bool) is a ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what}={value!r}: pass a positive int, or None for {whole}.")
    return int(value)
