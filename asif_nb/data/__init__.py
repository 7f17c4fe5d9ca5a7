"""Collections of image–caption pairs (the anchors ASIF is "defined by") and the evaluation sets.

Collections — ``load_collection(name, n_pairs=None)`` returns an ordered ``Collection`` of ``Pair``s:

- ``demo``: about 5,000 pairs built offline from three packages, cached on first use
  (``python -m asif_nb.data prepare demo``):

  * Debian ``tuxpaint-stamps-default`` (GPL-2): human-captioned stamps, most of them photo cut-outs.
    Caption = first line of the ``.txt`` beside the image. ``symbols/`` (letters, coins, shapes) is left out.
    Category = first folder under ``stamps/`` (animals, food, ...). A stamp shipped both as SVG and PNG keeps the
    PNG (same drawing, no rendering); the ``*_mirror.png`` variants have no ``.txt`` and are skipped.
  * Debian ``openclipart-svg`` (public domain): SVG drawings captioned with their ``dc:title``, cleaned by
    ``clean_title`` and filtered by ``keep_title`` (collection tags, "Clipart by …", single non-English words),
    at most ``MAX_TITLE_REPEATS`` drawings per title; rendered once with cairosvg.
  * npm ``emoji-datasource-google`` (MIT data, Apache-2.0 images): ``img/google/64`` emoji captioned with their
    Unicode names (lower-cased). The "Component" category is dropped; skin-tone variants are not top-level
    entries of ``emoji.json`` and so never enter; flags are kept (they are real pictures with real names).

  Every image is stored once as an RGB PNG composited on white, at most ``IMAGE_SIZE`` px on the long side,
  so every encoder sees the same pixels. SVGs are rendered in cairosvg's safe mode only (an SVG that needs XML
  entities or would embed a local file is left out); a source file that cannot be read or rendered is counted
  in ``meta.json`` (``failed_to_render``, ``failed``: id → reason) and skipped, never fatal.

  Held-out split (never anchors): Tux Paint pairs are grouped by caption (so a caption shared by a photo and a
  cartoon never sits on both sides). Within each category the groups are ranked by a sha256 of the caption and
  the first ``max(2, round(HELDOUT_FRACTION * groups))`` (at most all but one) are held out. Held-out groups
  give one image each (the first id) to the ``tuxpaint-heldout`` evaluation set, so its captions are unique;
  the group's other images are used nowhere.

  Order: anchors are sorted by a sha256 of their id. That order is a fixed pseudo-random shuffle, so any
  prefix (the paper's "first n pairs", Figure 4) mixes photos, clipart and emoji in proportion, and adding or
  removing one pair does not move the others.

- ``folder:<path>``: bring your own pairs — images plus ``captions.csv`` / ``captions.jsonl`` (keys ``image``,
  ``caption``, optional ``id``) or a ``.txt`` beside each image. Order: the captions file's order, or sorted
  file names for ``.txt`` pairs. Checked strictly (``asif_nb.data.folder``): an image without its ``.txt`` or a
  ``.txt`` without its image, a caption that is not a string, a file that is not UTF-8 are errors, never skipped.
- ``cc3m`` / ``cc12m`` (paper profile) are never stored as files: they are streamed straight into an anchor bundle
  (``python -m asif_nb.embed cc12m ...``, ``asif_nb.stream``, ``asif_nb.bundle``); ``load_bundle(...).collection``
  then holds their keys and captions.

Evaluation sets — ``load_eval(name, ...)`` returns an ``EvalSet``: ``tuxpaint-heldout``, ``fashion-mnist``,
``imagenet-samples`` (offline) and ``imagenet``, ``imagenet-v2``, ``cifar100``, ``pets`` (paper profile).

Modules: ``records`` (Pair, Collection, EvalSet, the catalogue), ``archives`` (.deb / npm / tar unpacking),
``render`` (SVG rendering, image normalising), ``sources`` (the three parsers), ``demo`` (the demo build),
``folder`` (``folder:`` collections), ``collection`` (``load_collection``), ``evalsets`` (``load_eval``),
``cli`` (``prepare``). Every public name is importable from ``asif_nb.data`` itself.
"""
from __future__ import annotations

from ..settings import cache_dir
from .archives import LOCK_TIMEOUT_S, UNPACK_FILTERS, deb_version, package_source, unpack_archive, unpack_package, \
    unpacked_version
from .cli import main, prepare
from .collection import load_collection
from .demo import (BUILDER_VERSION, DEMO_PACKAGES, FASHION_MNIST_PACKAGE, HELDOUT_FRACTION, PREPARE_PACKAGES,
                   SOURCE_INFO, build_demo, check_packages, demo_dir, heldout_split, read_demo, stable_hash)
from .evalsets import (FASHION_MNIST_CLASSES, FASHION_MNIST_TEMPLATES, IMAGENET_TEMPLATES, IMAGENET_V2_URL,
                       PETS_CLASSES, PETS_TEMPLATES, TUXPAINT_TEMPLATES, clip_benchmark_json, imagenet_wnids,
                       load_eval)
from .folder import IMAGE_SUFFIXES, load_folder
from .records import COLLECTIONS, EVALS, Collection, EvalSet, Pair, list_collections, list_evals
from .render import IMAGE_SIZE, MAX_RENDER_PIXELS, MAX_SVG_BYTES, RenderError, render_svg
from .sources import (MAX_TITLE_REPEATS, clean_title, emoji_items, english_vocabulary, filter_titles, keep_title,
                      openclipart_items, svg_title, tuxpaint_stamps)

# The name asif_nb.precomputed and tests imported before the split; same function.
_clip_benchmark_json = clip_benchmark_json

__all__ = [
    "BUILDER_VERSION", "COLLECTIONS", "DEMO_PACKAGES", "EVALS", "FASHION_MNIST_CLASSES", "FASHION_MNIST_PACKAGE",
    "FASHION_MNIST_TEMPLATES", "HELDOUT_FRACTION", "IMAGENET_TEMPLATES", "IMAGENET_V2_URL", "IMAGE_SIZE",
    "IMAGE_SUFFIXES", "LOCK_TIMEOUT_S", "MAX_RENDER_PIXELS", "MAX_SVG_BYTES", "MAX_TITLE_REPEATS", "PETS_CLASSES",
    "PETS_TEMPLATES", "PREPARE_PACKAGES", "SOURCE_INFO", "TUXPAINT_TEMPLATES", "UNPACK_FILTERS", "Collection",
    "EvalSet", "Pair", "RenderError", "build_demo", "cache_dir", "check_packages", "clean_title",
    "clip_benchmark_json", "deb_version", "demo_dir", "emoji_items", "english_vocabulary", "filter_titles",
    "heldout_split", "imagenet_wnids", "keep_title", "list_collections", "list_evals", "load_collection",
    "load_eval", "load_folder", "main", "openclipart_items", "package_source", "prepare", "read_demo",
    "render_svg", "stable_hash", "svg_title", "tuxpaint_stamps", "unpack_archive", "unpack_package",
    "unpacked_version",
]
