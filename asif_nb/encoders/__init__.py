"""The two frozen unimodal encoders ASIF needs, one name each.

ASIF never trains anything: an image encoder and a text encoder are used as they are, and only their output
vectors matter. This package turns a name from a notebook dropdown into an object with one method::

    enc = load_image_encoder("efficientnet-lite2")      # or load_text_encoder("all-MiniLM-L6-v2")
    feats = enc.encode(items)                            # float32, one row per item, shape (n, enc.dim)

The contract every encoder follows (``base.Encoder``):

- ``name``, ``dim``, ``modality`` ("image" | "text"), ``weights_id`` (changes whenever the weights change),
  ``device``, ``preprocessing`` (a human-readable description a notebook can print), ``runtime``, ``precision``;
- ``encode(items, batch_size=32, progress=True, on_error="raise")`` and ``last_skipped``;
- ``prepare(item)`` (decode + preprocess one item, thread-safe; ``ValueError`` naming an unusable item) and
  ``forward(prepared)`` (a batch → float32 ``(n, dim)``): the two halves ``encode`` and a streaming embedder use;
- ``features`` (what decides the numbers: name, weights_id, preprocessing tag and config sha256, runtime,
  precision, device) and ``features_id`` (its short hash, what the embedding cache keys on);
- image encoders: ``tensor_preprocess`` (the same preprocessing as torch ops on a uint8 tensor on any device, e.g.
  a GPU-decoded JPEG), or None when the preprocessing needs PIL.

Names (``list_encoders()`` shows them with their dimension and whether they work offline here):

- ``efficientnet-lite2``  EfficientNet-Lite2, ImageNet-1k supervised, 1280-d pooled features (PyPI, offline)
- ``all-MiniLM-L6-v2``    sentence-transformers, 384-d (PyPI, offline)
- ``all-mpnet-base-v2``   sentence-transformers, 768-d, the paper's "SentenceT" (split PyPI zip, or the hub)
- ``vit-b16-in21k``       ViT-B/16 ImageNet-21k, CLS token, 768-d, the paper's supervised encoder (hub)
- ``dino-vits8``          DINO ViT-S/8, CLS token, 384-d, the paper's self-supervised encoder (hub)
- ``timm:<model>``, ``sentence-transformers:<model or folder>``, ``hf:<folder>`` (a local ViT-style folder)

The paper's two image encoders default to the ASIF authors' own preprocessing (``authors.py``): their precomputed
evaluation embeddings were made with it, and anchors must match them. Otherwise the libraries' own loaders and
preprocessing configs are used (timm's data config, transformers' image processor, sentence-transformers); the
one hand-written pipeline besides the authors' is EfficientNet-Lite2's, whose package ships none.

Modules: ``base`` (the contract, ``load_image``), ``authors`` (the authors' preprocessing), ``efficientnet``,
``hub`` (transformers ViTs, timm), ``text`` (sentence-transformers, the split mpnet zip), ``registry`` (names).
"""
from __future__ import annotations

from ..images import to_rgb
from .authors import (AUTHORS_ANTIALIAS, AUTHORS_CONFIG, AUTHORS_PREPROCESSING, AUTHORS_SIZE,
                      authors_tensor_preprocess)
from .base import (IMAGE_DECODE, IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderUnavailableError, ImageEncoder,
                   TextEncoder, config_sha256, load_image)
from .efficientnet import (EFFICIENTNET_LITE2_FEATURES_VERSION, EFFICIENTNET_LITE2_MEAN,
                           EFFICIENTNET_LITE2_PREPROCESSING, EFFICIENTNET_LITE2_RUNTIMES, EFFICIENTNET_LITE2_SIZE,
                           EFFICIENTNET_LITE2_STD, EfficientNetLite2Encoder)
from .hub import PREPROCESSING_CHOICES, VIT_AUTHORS_PREPROCESSING, HFViTEncoder, TimmEncoder
from .registry import PAPER_IMAGE_PREPROCESSING, list_encoders, load_image_encoder, load_text_encoder
from .text import SentenceTransformerEncoder, assemble_split_zip

__all__ = [
    "AUTHORS_ANTIALIAS", "AUTHORS_CONFIG", "AUTHORS_PREPROCESSING", "AUTHORS_SIZE",
    "EFFICIENTNET_LITE2_FEATURES_VERSION", "EFFICIENTNET_LITE2_MEAN", "EFFICIENTNET_LITE2_PREPROCESSING",
    "EFFICIENTNET_LITE2_RUNTIMES",
    "EFFICIENTNET_LITE2_SIZE", "EFFICIENTNET_LITE2_STD", "EfficientNetLite2Encoder", "Encoder",
    "EncoderUnavailableError", "HFViTEncoder", "IMAGE_DECODE", "IMAGENET_MEAN", "IMAGENET_STD", "ImageEncoder",
    "PAPER_IMAGE_PREPROCESSING", "PREPROCESSING_CHOICES", "SentenceTransformerEncoder", "TextEncoder", "TimmEncoder",
    "VIT_AUTHORS_PREPROCESSING", "assemble_split_zip", "authors_tensor_preprocess", "config_sha256", "list_encoders",
    "load_image", "load_image_encoder", "load_text_encoder", "to_rgb",
]
