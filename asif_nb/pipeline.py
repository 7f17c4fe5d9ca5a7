"""``asif_nb.load(profile)``: ASIF as a drop-in for CLIP's ``clip.load``.

This is the end of the data flow — it only strings the stages together:
collection (data) → frozen encoders → embedding cache or anchor bundle → AsifModel. Everything it returns can
also be built by hand from those stages, which is what notebook 02 does step by step.

Collections stored as files (``demo``, ``folder:``) are embedded through the embedding cache; streamed ones
(``cc12m``, ``cc3m``: the paper's) go into an anchor bundle (``asif_nb.embed``), or come from a bundle someone
shared (``bundle=``).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .bundle import AnchorSet
from .cache import embed_cached
from .data import load_collection
from .encoders import load_image_encoder, load_text_encoder
from .metrics import accuracy_topk, mean_per_class_recall, retrieval_recall
from .model import AsifModel
from .profiles import Profile, get_profile
from .prompts import check_class_names, check_templates, prompts_for  # prompts_for: public here too


def cache_key(*parts: str) -> str:
    """A cache key safe for a file name, readable by a person: ``folder:/a/b`` → ``folder-a-b``."""
    return "-".join(re.sub(r"[^A-Za-z0-9._]+", "-", str(part)).strip("-") for part in parts if part)


def embed_anchors(collection, image_encoder, text_encoder, progress: bool = True) -> AnchorSet:
    """Embed both halves of a collection once (cached by content), keeping row i = pair i."""
    base = cache_key(collection.name)
    anchor_images = embed_cached(image_encoder, list(collection.images), key=f"{base}-images", progress=progress)
    anchor_texts = embed_cached(text_encoder, list(collection.captions), key=f"{base}-captions", progress=progress)
    return AnchorSet(collection, anchor_images, anchor_texts, _describe(image_encoder), _describe(text_encoder))


def _describe(encoder) -> dict:
    features = dict(getattr(encoder, "features", None) or {"name": encoder.name, "weights_id": encoder.weights_id})
    features.setdefault("features_id", getattr(encoder, "features_id", None))
    return features


# What must agree between the encoders that made a bundle and those that embed the queries. Runtime, precision and
# device may differ (a bundle made on a GPU in fp16 serves queries embedded on a CPU): the numbers agree to ~1e-3.
_SAME_NUMBERS = ("name", "weights_id", "preprocessing")


def check_encoders(anchors: AnchorSet, image_encoder, text_encoder) -> None:
    """Refuse query encoders that compute other numbers than the ones that embedded the anchors."""
    for half, encoder, made in (("image", image_encoder, anchors.image_encoder),
                                ("text", text_encoder, anchors.text_encoder)):
        if not made:
            continue
        mine = _describe(encoder)
        differs = [key for key in _SAME_NUMBERS if key in made and key in mine and made[key] != mine[key]]
        if differs:
            raise ValueError(
                f"the anchors' {half} half was embedded by {made.get('name')} ({', '.join(f'{k} {made[k]!r}' for k in differs)}) "
                f"but the {half} encoder here is {mine.get('name')} ({', '.join(f'{k} {mine[k]!r}' for k in differs)}): "
                f"load the same encoder (name and preprocessing) as the anchors, or embed the anchors again.")


def preview_pairs(prof: Profile, n: int = 12, seed: int = 0) -> tuple[list, list[str], list[dict]]:
    """Up to ``n`` anchor pairs to look at, as ``(images, captions, sources)``: a random sample of a stored
    collection, or the first pairs of a streamed one (decoded in memory; nothing is written)."""
    if prof.collection in ("cc12m", "cc3m") or prof.collection.startswith("wds:"):
        from .embed import resolve_source
        from .stream import peek

        source = resolve_source(prof.collection)
        pairs = peek(source, n)
        return [image for image, _ in pairs], [caption for _, caption in pairs], [
            {"source": source.name, "licence": source.licence, **source.identity}]
    collection = load_collection(prof.collection, n_pairs=prof.n_pairs)
    shown = np.random.default_rng(seed).choice(len(collection), size=min(n, len(collection)), replace=False)
    return ([collection[int(i)].image for i in shown], [collection[int(i)].caption for i in shown],
            collection.sources)


def profile_anchors(prof: Profile, image_encoder, text_encoder, *, bundle=None, device: str = "auto",
                    progress: bool = True) -> AnchorSet:
    """The anchors of a profile. ``bundle``: a shared anchor bundle (folder, URL, hub repo, manifest id; see
    ``load_bundle``); else a streamed collection is embedded into a bundle in the cache (resumable; a finished one
    is reused), and a stored one through the embedding cache."""
    from .share import load_bundle

    if bundle is not None:
        anchors = load_bundle(bundle, prof.n_pairs if prof.n_pairs is not None else None)
    elif prof.collection in ("cc12m", "cc3m") or prof.collection.startswith("wds:"):
        from .embed import embed_collection

        out = embed_collection(prof.collection, image_encoder, text_encoder, n_pairs=prof.n_pairs, device=device,
                               progress=progress)
        anchors = load_bundle(out, prof.n_pairs)
    else:
        return embed_anchors(load_collection(prof.collection, n_pairs=prof.n_pairs), image_encoder, text_encoder,
                             progress=progress)
    check_encoders(anchors, image_encoder, text_encoder)
    return anchors


@dataclass
class EvalEmbeddings:
    """An evaluation set in embedding space: what ``evaluate`` needs, and nothing that needs the raw images.

    ``images`` (n, d1) row i ↔ ``labels[i]`` (int64 index into ``class_names``); ``prompts`` are class-major
    (class c, template t at row ``c * n_templates + t``); ``captions`` (retrieval sets) row i is the caption of
    image i. ``evalset`` is the ``EvalSet`` the embeddings were computed from (``None`` for precomputed
    embeddings, e.g. ``load_precomputed``). ``image_encoder`` / ``text_encoder`` name the encoders that made them.
    """

    name: str
    images: np.ndarray
    prompts: np.ndarray | None  # class-major, len(class_names) * n_templates rows
    captions: np.ndarray | None
    labels: np.ndarray
    class_names: list
    templates: list
    n_templates: int
    evalset: object = None
    image_encoder: str | None = None
    text_encoder: str | None = None


def embed_eval(evalset, image_encoder, text_encoder, progress: bool = True) -> EvalEmbeddings:
    """Embed an evaluation set once (cached by content): its images, its class prompts, its captions."""
    base = cache_key(evalset.name)
    images = embed_cached(image_encoder, list(evalset.images), key=f"{base}-images", progress=progress)
    prompts = captions = None
    templates = list(getattr(evalset, "templates", None) or [])
    if getattr(evalset, "class_names", None) and templates:
        prompts = embed_cached(text_encoder, prompts_for(evalset.class_names, templates),
                               key=f"{base}-prompts", progress=progress)
    if getattr(evalset, "captions", None):
        captions = embed_cached(text_encoder, list(evalset.captions), key=f"{base}-captions", progress=progress)
    return EvalEmbeddings(evalset.name, images, prompts, captions, np.asarray(evalset.labels, dtype=np.int64),
                          list(evalset.class_names), templates, max(len(templates), 1), evalset,
                          image_encoder.name, text_encoder.name)


def eval_embeddings(name: str, image_encoder, text_encoder, *, precomputed=None, n: int | None = None,
                    progress: bool = True) -> EvalEmbeddings:
    """The evaluation set ``name`` in embedding space. ``precomputed`` (a manifest id or a path to the authors'
    tar or folder) serves ``imagenet`` from the authors' precomputed embeddings (``load_precomputed``: no ImageNet
    download, and a refusal when they were made by other encoders than ``image_encoder`` / ``text_encoder``);
    every other set is loaded and embedded (cached)."""
    if precomputed and name == "imagenet":
        from .precomputed import load_precomputed

        return load_precomputed(precomputed, image_encoder=image_encoder, text_encoder=text_encoder)
    from .data import load_eval

    return embed_eval(load_eval(name, n=n), image_encoder, text_encoder, progress=progress)


def precomputed_for(prof: Profile, choice: str | None = "auto") -> str | None:
    """A notebook's ``precomputed`` parameter: "auto" → the profile's default (the paper: the authors' ImageNet
    test half), "" / None → none, anything else (manifest id or path) as given."""
    if choice == "auto":
        return prof.precomputed_imagenet
    return choice or None


def evaluate(model: AsifModel, embedded: EvalEmbeddings, reduce: str = "max") -> dict:
    """Zero-shot metrics as CLIP_benchmark reports them: ``acc1``, ``acc5``, ``mean_per_class_recall``
    for classification; retrieval recall@1/@5 both ways (caption i belongs to image i):
    ``text_retrieval_recall@k`` is image→text, ``image_retrieval_recall@k`` text→image.

    Ties are counted against us (``ties="worst"``): sparse ASIF scores often tie at exactly 0 (no shared
    anchor), and a stable argsort would then credit the lowest class index with a correct answer by luck.
    ``acc1`` is ``metrics.accuracy(predictions, labels)``, the suite's one tie rule; ``predictions`` holds
    -1 where the best score is shared by several classes (no answer)."""
    result = {"eval": embedded.name, "n_images": int(len(embedded.images))}
    if embedded.prompts is not None:
        labels = np.asarray(embedded.labels)
        pred, scores = model.classify(embedded.images, embedded.prompts, n_templates=embedded.n_templates, reduce=reduce)
        result.update(accuracy_topk(scores, labels, k=(1, 5), ties="worst"))
        result["mean_per_class_recall"] = float(mean_per_class_recall(scores, labels, ties="worst"))
        result["n_classes"] = len(embedded.class_names)
        result["chance"] = 1.0 / len(embedded.class_names)
        result["predictions"] = pred
    if embedded.captions is not None:
        similarity = model.similarity(embedded.images, embedded.captions)
        result.update(retrieval_recall(similarity, np.arange(len(similarity)), k=(1, 5), ties="worst"))
    return result


class Asif:
    """A CLIP-shaped ASIF model over raw inputs: images (paths, PIL images, bytes) and strings.

    ``encode_image`` / ``encode_text`` return the sparse relative representations (scipy CSR, one row per
    input, N = number of anchor pairs columns); ``similarity`` is their dense product, the cosine similarity of
    the normalised representations; ``classify`` picks the best class prompt.

    Images and texts are lists; a single image (a path, a PIL image, bytes) or a single string is one row, as
    ``clip.tokenize("a cat")`` does (a bare string is never read as a list of characters). Class names and
    templates must be lists (``check_class_names``, ``check_templates``): ``classify(images, "cat")`` is refused,
    since one class is no classification.
    """

    def __init__(self, model: AsifModel, image_encoder, text_encoder, anchors: AnchorSet | None = None,
                 profile: Profile | None = None):
        self.model = model
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.anchors = anchors  # the raw anchor embeddings and the collection they came from
        self.collection = anchors.collection if anchors is not None else None
        self.profile = profile
        self._positions = self._positions_of = None  # the collection's id -> position, built on first use

    def __repr__(self):
        return (
            f"Asif(image_encoder={self.image_encoder.name!r}, text_encoder={self.text_encoder.name!r}, "
            f"n_pairs={self.model.n_pairs}, k={self.model.k}, p={self.model.p})"
        )

    def embed_images(self, images, progress: bool = False) -> np.ndarray:
        return self.image_encoder.encode(_image_list(images), progress=progress)

    def embed_texts(self, texts, progress: bool = False) -> np.ndarray:
        return self.text_encoder.encode(_text_list(texts), progress=progress)

    def encode_image(self, images):
        return self.model.encode_image(self.embed_images(images))

    def encode_text(self, texts):
        return self.model.encode_text(self.embed_texts(texts))

    def similarity(self, images, texts) -> np.ndarray:
        images, texts = _image_list(images), _text_list(texts)  # checked before either is embedded
        return self.model.similarity(self.embed_images(images), self.embed_texts(texts))

    def classify(self, images, class_names, templates=("a photo of a {c}.",), reduce="max", unknown_threshold=None):
        """``(pred, scores)`` of ``AsifModel.classify`` for raw images against ``class_names`` (a list) filled
        into ``templates`` (a list of ``{c}`` strings; ``"{}"`` is read as ``{c}``)."""
        images = _image_list(images)
        templates = check_templates(templates)
        prompt_embeddings = self.embed_texts(prompts_for(check_class_names(class_names), templates))
        return self.model.classify(
            self.embed_images(images),
            prompt_embeddings,
            n_templates=len(templates),
            reduce=reduce,
            unknown_threshold=unknown_threshold,
        )

    def anchor_pair(self, pair_id):
        """The collection's pair with id ``pair_id`` (``.caption``, ``.image``): anchors are found by id, never
        by position, so edits of the model (``add_pairs``, ``remove_pairs``, ``prune``) cannot mix them up."""
        if self.collection is None:
            raise ValueError("this Asif has no collection to look pairs up in: build it with asif_nb.load(...) or "
                             "pass anchors= (an AnchorSet) to Asif(...).")
        pair = self._find_pair(pair_id)
        if pair is None:
            raise ValueError(f"no pair of the collection {getattr(self.collection, 'name', '')!r} has id "
                             f"{pair_id!r}: check the ids in asif.model.ids or asif.collection.ids.")
        return pair

    def explain(self, image, text: str, top: int = 20) -> list[dict]:
        """The anchors behind one image–text score (``AsifModel.explain`` rows), each with its ``id`` and the
        ``caption`` and ``image`` of that pair in the collection, looked up by id (both ``None`` for a pair the
        collection does not hold, e.g. one added with ``model.add_pairs`` under a new id)."""
        if not isinstance(text, str):
            raise TypeError(f"explain takes one text (a string), got {type(text).__name__}: call it once per text.")
        images = _image_list(image)
        if len(images) != 1:
            raise TypeError(f"explain takes one image, got {len(images)}: call it once per image.")
        rows = self.model.explain(self.embed_images(images)[0], self.embed_texts([text])[0], top=top)
        for row in rows:
            row.setdefault("id", self.model.ids[int(row["anchor"])])
            if self.collection is not None:
                pair = self._find_pair(row["id"])
                row["caption"], row["image"] = (None, None) if pair is None else (pair.caption, pair.image)
        return rows

    def _find_pair(self, pair_id):
        if self._positions_of is not self.collection:  # built once per collection: ids -> positions
            self._positions = {known: i for i, known in enumerate(self.collection.ids)}
            self._positions_of = self.collection
        position = self._positions.get(pair_id)
        return None if position is None else self.collection[position]


def _image_list(images) -> list:
    """A list of image items; one image (path, bytes, PIL image) becomes a list of one."""
    from PIL import Image

    if isinstance(images, (str, bytes, bytearray, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, Mapping) or not isinstance(images, Iterable):
        raise TypeError(f"images must be a list of images (paths, PIL images or bytes) or one image, got "
                        f"{type(images).__name__}.")
    return list(images)


def _text_list(texts) -> list:
    """A list of strings; one string becomes a list of one."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray, Mapping)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of strings or one string, got {type(texts).__name__}: decode bytes "
                        "first (b.decode('utf-8')).")
    return list(texts)


def load(profile: str = "demo", *, bundle=None, device: str = "auto", progress: bool = True, **overrides) -> Asif:
    """Build the profile's ASIF model: both encoders, the anchors (embedded once and cached, or streamed into an
    anchor bundle, or ``bundle=`` someone shared: see ``profile_anchors``), and return an :class:`Asif`.
    ``overrides`` replace profile fields (``k``, ``p``, ``n_pairs``, ``image_encoder``, ``image_preprocessing``,
    ``text_encoder``, ``collection``).

    The image encoder is loaded with the profile's ``image_preprocessing`` ("authors" for the paper profile: the
    anchors must be embedded the way the authors' precomputed evaluation embeddings were)."""
    prof = get_profile(profile, **overrides)
    image_encoder = load_image_encoder(prof.image_encoder, device=device, preprocessing=prof.image_preprocessing)
    text_encoder = load_text_encoder(prof.text_encoder, device=device)
    anchors = profile_anchors(prof, image_encoder, text_encoder, bundle=bundle, device=device, progress=progress)
    model = AsifModel(anchors.anchor_images, anchors.anchor_texts, k=prof.k, p=prof.p,
                      ids=list(anchors.collection.ids), device=device)
    return Asif(model, image_encoder, text_encoder, anchors=anchors, profile=prof)

