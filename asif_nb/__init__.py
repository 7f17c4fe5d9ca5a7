"""asif_nb — ASIF (Norelli et al.): a CLIP-like image–text model built from two frozen encoders and a
collection of image–caption pairs, with no training.

Data flows one way through the modules:

    data (collections, eval sets, downloads) → encoders → cache → model (AsifModel) → metrics → plots

``asif_nb.load(profile)`` strings them together into a CLIP-shaped object; every stage is also usable alone.
Imports are lazy so that ``import asif_nb`` is instant and does not pull in torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    # settings / io
    "cache_dir": "settings",
    "resolve_device": "settings",
    "atomic_write": "fileio",
    # the ASIF model (paper §2)
    "AsifModel": "model",
    "relative_representation": "model",
    "sweep": "sweeps",
    # encoders and the embedding cache
    "load_image_encoder": "encoders",
    "load_text_encoder": "encoders",
    "list_encoders": "encoders",
    "to_rgb": "images",
    "embed_cached": "cache",
    "cache_info": "cache",
    "EncoderUnavailableError": "encoders",
    # anchors at scale: streamed embedding into bundles, sharing them
    "embed_collection": "embed",
    "AnchorSet": "bundle",
    "ShardedRows": "bundle",
    "load_bundle": "share",
    "push_bundle": "share",
    "hub_webdataset": "stream",
    "local_webdataset": "stream",
    # data: collections, evaluation sets, the download manifest
    "load_collection": "data",
    "load_eval": "data",
    "list_collections": "data",
    "list_evals": "data",
    "fetch": "download",
    "fetch_file": "download",
    "load_manifest": "download",
    "load_tensors": "safeload",
    "load_labels": "safeload",
    "load_precomputed": "precomputed",
    # memory editing, pruning, compression (notebook 07)
    "usage_counts": "memory",
    "prune": "memory",
    "quantize_anchors": "memory",
    "topk_agreement": "memory",
    "pruning_curve": "memory",
    # the trained baselines (notebook 08)
    "clip_loss": "contrastive",
    "train_contrastive": "contrastive",
    "CLIP": "contrastive",
    "CLIPConfig": "contrastive",
    "lit_heads": "contrastive",
    "linear_heads": "contrastive",
    # evaluation (one tie rule: predict / accuracy)
    "predict": "metrics",
    "accuracy": "metrics",
    "threshold_curve": "metrics",
    "accuracy_topk": "metrics",
    "mean_per_class_recall": "metrics",
    "retrieval_recall": "metrics",
    # profiles and the CLIP-shaped front door
    "PROFILES": "profiles",
    "get_profile": "profiles",
    "Profile": "profiles",
    "PAPER_TABLE1": "profiles",
    "load": "pipeline",
    "profile_anchors": "pipeline",
    "embed_eval": "pipeline",
    "evaluate": "pipeline",
    "Asif": "pipeline",
    "embed_anchors": "pipeline",
    "EvalEmbeddings": "pipeline",
    "prompts_for": "pipeline",
    # what notebooks write
    "results_dir": "results",
    "save_results": "results",
    "load_results": "results",
    "save_figure": "results",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'asif_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
