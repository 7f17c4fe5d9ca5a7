"""The encoder contract every frozen encoder follows, and the one way an image item becomes pixels.

An encoder is used in two ways. A notebook calls ``encode(items)``. A streaming embedder (``asif_nb.embed``) drives
the two halves itself: ``prepare(item)`` on worker threads (decode + preprocess one item, thread-safe), then
``forward(prepared)`` on batches; ``encode`` is exactly that loop. ``features`` / ``features_id`` say what decides
the numbers (weights, preprocessing, runtime, precision, device), so a cache keyed on ``features_id`` never
serves embeddings computed another way.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import re
import warnings
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..images import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How every image item becomes an RGB image before any encoder-specific step: PIL decodes the whole image at full
# resolution (no JPEG draft mode, so a path, its bytes and the PIL image give the same pixels), then ``to_rgb``.
# Part of every image encoder's preprocessing config, so a change here changes every image ``features_id``.
IMAGE_DECODE = "PIL full-resolution decode + asif_nb.images.to_rgb (EXIF orientation, alpha on white)"


class EncoderUnavailableError(RuntimeError):
    """An encoder cannot be loaded here (no network for a hub model, a package not installed)."""


def describe(item: Any) -> str:
    """A short label for an item in error messages: the path (or text), ``<n bytes>``, or ``<type>``."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, (bytes, bytearray)):
        return f"<{len(item)} bytes>"
    return f"<{type(item).__name__}>"


def load_image(item: Any) -> Image.Image:
    """Open one image item (a PIL image, a file path, or raw bytes from an upload widget) as RGB via ``to_rgb``.

    Files and bytes are always decoded at full resolution: JPEG draft decoding would make the same JPEG give
    different pixels as a path than as an already-opened PIL image. Raises ``ValueError`` naming the item when it
    cannot be read, including PIL's decompression-bomb guard for oversized images.
    """
    label = describe(item)
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
            image.load()
            return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(
            f"Image {label} is too large to open safely ({exc}). If you trust it, raise the limit with "
            "PIL.Image.MAX_IMAGE_PIXELS = <pixels> (or None), or downscale the file."
        ) from exc
    except Exception as exc:  # unreadable, truncated, not an image, missing file, wrong type
        raise ValueError(f"Cannot read image {label}: {error_text(exc)}") from exc


def error_text(exc: BaseException) -> str:
    """``Type: message`` without the object addresses PIL puts in it (``<_io.BytesIO object at 0x7f…>``), so a reason
    recorded in a bundle is the same in every run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` itself when it is already upright 8-bit RGB (what ``load_image`` returns), else ``to_rgb(image)``:
    no second copy of a big photo on the ``prepare`` path, the same pixels for a direct ``preprocess`` call."""
    if (isinstance(image, Image.Image) and image.mode == "RGB" and "transparency" not in image.info
            and image.getexif().get(0x0112, 1) == 1):
        return image
    return to_rgb(image)


def config_sha256(config: Any) -> str:
    """sha256 of a JSON-serialisable config, canonically encoded (sorted keys): the preprocessing's identity."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def torch_precision(device: str) -> str:
    """What the torch encoders compute in on ``device``: fp16 autocast on a GPU (see ``autocast``), else float32."""
    return "float16-autocast" if device.startswith("cuda") else "float32"


def autocast(device: str):
    """fp16 autocast on a GPU (about twice the throughput, features unchanged to ~1e-3); a no-op on the CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def state_dict_sha256(module) -> str:
    """sha256 over a torch module's parameter names and raw bytes: the weights' identity, whatever their source."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The encoder interface


class Encoder:
    """A frozen encoder: ``encode(items) -> float32 array (n, dim)``, built on ``prepare`` and ``forward``.

    Attributes: ``name``, ``dim``, ``modality`` ("image" | "text"), ``weights_id`` (changes when the weights
    change), ``device``, ``preprocessing`` (human-readable), ``runtime`` ("torch" | "onnxruntime"), ``precision``
    ("float32" | "float16-autocast"), ``last_skipped``: after ``encode(..., on_error="skip")``, a list of
    ``(index, item, reason)`` for the items left out (empty after a call that skipped nothing; unchanged by a
    call that raised).

    ``features`` is the dict of everything that decides the numbers and ``features_id`` its short hash: two
    encoders with the same ``features_id`` compute the same embeddings, so caches key on it.

    Subclasses set ``preprocessing_tag`` (short: "authors", "library", "lite2-v2", "tokenizer:...") and
    ``preprocessing_config`` (JSON-serialisable, the exact configuration; its sha256 goes into ``features``), and
    implement ``_prepare_one(item)`` and ``_forward(prepared)``.
    """

    name: str
    dim: int
    modality: str
    weights_id: str
    device: str
    preprocessing: str
    runtime: str = "torch"
    precision: str = "float32"
    preprocessing_tag: str = "library"
    preprocessing_config: Any = None  # None: the human-readable ``preprocessing`` text stands in for it

    def __init__(self) -> None:
        self.last_skipped: list[tuple[int, Any, str]] = []

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} modality={self.modality} dim={self.dim} "
                f"device={self.device} preprocessing={self.preprocessing_tag} features={self.features_id}>")

    # -------------------------------------------------------------------------------- identity of the numbers

    @property
    def features(self) -> dict:
        """What decides the numbers: ``{"name", "weights_id", "preprocessing", "preprocessing_sha", "runtime",
        "precision", "device"}`` (``device`` is "cpu" or "cuda", whichever GPU index)."""
        config = self.preprocessing_config if self.preprocessing_config is not None else self.preprocessing
        return {
            "name": self.name,
            "weights_id": self.weights_id,
            "preprocessing": self.preprocessing_tag,
            "preprocessing_sha": config_sha256(config),
            "runtime": self.runtime,
            "precision": self.precision,
            "device": str(self.device).split(":")[0],
        }

    @property
    def features_id(self) -> str:
        """``"f-"`` + 16 hex digits of the sha256 of ``features``: equal iff the features are equal."""
        return "f-" + config_sha256(self.features)[:16]

    # -------------------------------------------------------------------------------- the two halves of encode

    def prepare(self, item: Any):
        """Decode and preprocess one item (thread-safe): an image becomes a float32 ``(3, H, W)`` array, a text a
        validated ``str``. Raises ``ValueError`` naming the item when it cannot be used."""
        return self._prepare_one(item)

    def forward(self, prepared: Sequence[Any]) -> np.ndarray:
        """Embed a batch of prepared items (what ``prepare`` returned, in order): float32 ``(n, dim)``.

        Image encoders also take the batch as one array or torch tensor ``(n, 3, H, W)`` (e.g. pixels made on the
        GPU by ``tensor_preprocess``)."""
        if len(prepared) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.ascontiguousarray(self._forward(prepared), dtype=np.float32)
        if out.shape != (len(prepared), self.dim):
            raise RuntimeError(f"{self.name} produced {out.shape} for {len(prepared)} items, expected "
                               f"{(len(prepared), self.dim)}.")
        return out

    def encode(self, items: Sequence[Any], batch_size: int = 32, progress: bool = True,
               on_error: str = "raise") -> np.ndarray:
        """Embed ``items`` (images: PIL images, paths or bytes; texts: strings), ``batch_size`` at a time.

        Returns float32 ``(n, dim)``, rows in the order of ``items``. With ``on_error="raise"`` an unusable item
        raises ``ValueError`` naming it; with ``on_error="skip"`` it is left out (the array then has fewer rows)
        and listed in ``self.last_skipped`` as ``(index, item, reason)``. A tqdm bar shows progress unless
        ``progress=False``.
        """
        from ..progress import bar as tqdm

        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: use a positive integer, e.g. 32.")
        if isinstance(items, (str, bytes, bytearray, os.PathLike, Image.Image)):
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
                    rows.append(self.forward(good))
                bar.update(len(prepared))
        self.last_skipped = skipped
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)

    def _checked(self, item: Any) -> tuple[bool, Any]:
        """``prepare`` as ``(True, prepared)`` or ``(False, reason)``: what the encode loop collects."""
        try:
            return True, self.prepare(item)
        except ValueError as exc:
            return False, str(exc)

    def _prepared_batches(self, items: list, batch_size: int):
        for start in range(0, len(items), batch_size):
            yield start, [self._checked(item) for item in items[start:start + batch_size]]

    # subclasses
    def _prepare_one(self, item: Any):
        raise NotImplementedError

    def _forward(self, prepared: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError


class ImageEncoder(Encoder):
    """Images: ``prepare`` = ``load_image`` (one decode for every kind of item) then ``preprocess(rgb)``.

    ``encode`` runs ``prepare`` in a small thread pool, one batch ahead of the model: PIL and torch release the GIL
    while decoding and resizing, so on a 2-core machine the next batch is ready when the model finishes the current
    one. Subclasses define ``preprocess(rgb PIL image) -> float32 (3, H, W)`` and ``_forward``.

    ``tensor_preprocess``: for encoders whose preprocessing is pure tensor arithmetic, a callable taking a uint8
    ``(3, H, W)`` (or ``(n, 3, H, W)``) torch tensor on any device — e.g. a JPEG decoded on the GPU by
    ``torchvision.io.decode_jpeg(data, device="cuda", mode=ImageReadMode.RGB, apply_exif_orientation=True)`` —
    and returning the float32 tensor on the same device, with the very arithmetic ``prepare`` uses on the CPU.
    ``None`` when the preprocessing needs PIL (antialiased PIL resizes).
    """

    modality = "image"
    tensor_preprocess: Callable | None = None

    def preprocess(self, image: Image.Image) -> np.ndarray:
        if self.tensor_preprocess is None:
            raise NotImplementedError
        import torch
        from torchvision.transforms.v2.functional import pil_to_tensor

        with torch.no_grad():
            return self.tensor_preprocess(pil_to_tensor(as_rgb(image))).numpy()

    def _prepare_one(self, item: Any) -> np.ndarray:
        image = load_image(item)
        try:
            pixels = self.preprocess(image)
        except (ValueError, TypeError, RuntimeError) as exc:  # e.g. a processor that cannot handle a 1x1 image
            raise ValueError(f"Cannot preprocess image {describe(item)}: {type(exc).__name__}: {exc}") from exc
        return np.ascontiguousarray(pixels, dtype=np.float32)

    def _prepared_batches(self, items: list, batch_size: int):
        workers = max(1, min(4, os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            starts = list(range(0, len(items), batch_size))
            submit = lambda s: [pool.submit(self._checked, item) for item in items[s:s + batch_size]]  # noqa: E731
            pending = submit(starts[0]) if starts else []
            for i, start in enumerate(starts):
                current = pending
                pending = submit(starts[i + 1]) if i + 1 < len(starts) else []
                yield start, [future.result() for future in current]


def pixel_batch(prepared: Any, device: str):
    """A batch of prepared images — a list of ``(3, H, W)`` arrays or tensors, or one ``(n, 3, H, W)`` array or
    tensor — as one float32 torch tensor on ``device``."""
    import torch

    if isinstance(prepared, torch.Tensor):
        batch = prepared
    elif isinstance(prepared, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(prepared, dtype=np.float32))
    elif all(isinstance(p, torch.Tensor) for p in prepared):
        batch = torch.stack([p.to(device) for p in prepared])
    else:
        batch = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) for p in prepared]))
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected prepared images of shape (3, H, W), got a batch of shape {tuple(batch.shape)}; "
                         "pass what prepare() returned.")
    return batch.to(device=device, dtype=torch.float32)


class TextEncoder(Encoder):
    """Texts: ``prepare`` checks that an item is a ``str`` the tokenizer can read (valid UTF-8: a lone surrogate
    such as ``"\\ud800"`` from a badly decoded file is refused here, so ``on_error="skip"`` loses only that text,
    not its whole batch)."""

    modality = "text"

    def _prepare_one(self, item: Any) -> str:
        if not isinstance(item, str):
            raise ValueError(f"a text item must be a str, got {type(item).__name__} ({describe(item)})")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            shown = f"{item[:60]!r}{'...' if len(item) > 60 else ''}"
            raise ValueError(
                f"text {shown} cannot be tokenized: {exc.reason} at position {exc.start} (a lone surrogate, "
                "usually from a badly decoded file); clean it, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
            ) from exc
        return item
