"""The few settings every stage shares: where the cache lives and which device to use."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The one cache directory: ``$ASIF_CACHE`` or ``~/.cache/asif_nb``. Created on first use."""
    path = Path(os.environ.get("ASIF_CACHE") or Path.home() / ".cache" / "asif_nb").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


DRIVE_CACHE = "/content/drive/MyDrive/asif_nb_cache"


def colab_cache(on_drive: bool = True) -> Path:
    """On Colab with ``on_drive``, keep the cache on Google Drive (mounted at ``/content/drive``) so embeddings and
    anchor bundles survive the VM; anywhere else, or when ``ASIF_CACHE`` is set already, change nothing.
    Returns the cache directory in use."""
    import sys

    if on_drive and "google.colab" in sys.modules and not os.environ.get("ASIF_CACHE"):
        from google.colab import drive  # only importable on Colab

        drive.mount("/content/drive")
        os.environ["ASIF_CACHE"] = DRIVE_CACHE
    path = cache_dir()
    print(f"cache: {path}")
    return path


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"`` picks ``"cuda"`` when torch sees a GPU, else ``"cpu"``; anything else is checked and returned."""
    if device in (None, "auto"):
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device={device!r} is not understood: use 'auto', 'cpu' or 'cuda[:N]'.")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but torch sees no GPU: use device='auto' or 'cpu'.")
    return device
