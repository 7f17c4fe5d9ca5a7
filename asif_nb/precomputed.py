"""The ASIF authors' precomputed ImageNet embeddings, read safely into an ``EvalEmbeddings``.

The authors share (Google Drive, ``drive_keys`` in their ``embdatasets.py``) one tar per split: a folder
``EmbeddedImagenet{,Val,Test}/`` holding ``zimgs_<ImageEncoderClass>.pt`` (n × d1 image embeddings),
``ztxts_<TextEncoderClass>.pt`` (1000 classes × 7 templates rows, class-major, the templates of
``IMAGENET_TEMPLATES`` in that order) and ``labels.pkl`` (a pickled list of 0-d tensors).

``load_precomputed(source, image_encoder=None, text_encoder=None)`` takes a manifest artifact id (fetched),
the tar, or the unpacked folder, and returns an ``EvalEmbeddings`` that ``pipeline.evaluate`` takes directly.
The tar is unpacked with ``tarfile``'s ``"data"`` filter (no links, devices or paths outside the folder) into
``cache_dir()/precomputed/<tar stem>-<sha256[:12]>/`` through a temp folder renamed into place, and reused.
Tensors are read with ``safeload.load_tensors`` (``weights_only=True``), labels with ``safeload.load_labels``.

The authors name files after their encoder classes; ``AUTHORS_ENCODERS`` maps each to the encoder of this
suite that computes the same features. ViT and DINO features match only with the authors' preprocessing
(``load_image_encoder(name, preprocessing="authors")``), so anchors must be embedded that way.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .data import IMAGENET_TEMPLATES, clip_benchmark_json
from .download import fetch, load_manifest
from .fileio import atomic_write, sha256_file
from .pipeline import EvalEmbeddings
from .safeload import load_labels, load_tensors
from .settings import cache_dir

# The authors' encoder class name (the <Class> of zimgs_<Class>.pt / ztxts_<Class>.pt) -> (modality, our encoder).
AUTHORS_ENCODERS = {
    "VIT": ("image", "vit-b16-in21k"),
    "DINO": ("image", "dino-vits8"),
    "SentenceT": ("text", "all-mpnet-base-v2"),
}
# These reproduce the authors' features only with preprocessing="authors" (resize 224x224, ImageNet mean/std).
NEEDS_AUTHORS_PREPROCESSING = ("vit-b16-in21k", "dino-vits8")
# The authors' folder name -> the name of our evaluation set.
FOLDERS = {"EmbeddedImagenet": "imagenet", "EmbeddedImagenetVal": "imagenet-val",
           "EmbeddedImagenetTest": "imagenet-test"}
N_CLASSES = 1000
_PREFIX = {"image": "zimgs_", "text": "ztxts_"}
_ARGUMENT = {"image": "image_encoder", "text": "text_encoder"}
_COMPLETE = ".complete"


def load_precomputed(path_or_artifact_id: str | os.PathLike, image_encoder=None, text_encoder=None, *,
                     manifest=None, progress: bool = True) -> EvalEmbeddings:
    """The authors' precomputed ImageNet embeddings as an ``EvalEmbeddings`` (for ``pipeline.evaluate``).

    ``path_or_artifact_id``: a manifest id (``asif-embeddings-imagenet-val`` / ``-test`` / ``asif-embeddings-
    imagenet``, downloaded with ``fetch``), a path to the authors' ``.tar``, or to the unpacked
    ``EmbeddedImagenet*/`` folder. ``image_encoder`` / ``text_encoder``: ``None``, an encoder name, or an
    encoder object (``.name``). ViT/DINO features match the authors' only with ``preprocessing="authors"``: an
    encoder object is checked for it, a name cannot be, so embed the anchors with
    ``load_image_encoder(name, preprocessing="authors")``. A requested encoder
    selects the file whose authors' class maps to it (``AUTHORS_ENCODERS``); a file of a class the table does
    not know is used only when the caller names its encoder explicitly. With nothing requested the folder must
    hold exactly one file per modality, of a known class. ``manifest`` / ``progress`` go to ``fetch``.

    Returns float32 ``images`` (n × d1) and class-major ``prompts`` (7000 × d2), int64 ``labels`` in
    [0, 1000), CLIP_benchmark's ImageNet class names and ``IMAGENET_TEMPLATES``; ``name`` is
    ``imagenet-val`` / ``imagenet-test`` / ``imagenet`` after the folder. Bad input raises ``ValueError``.
    """
    wanted = {"image": _requested(image_encoder, "image"), "text": _requested(text_encoder, "text")}
    folder = _resolve(path_or_artifact_id, wanted, manifest, progress)
    chosen = {modality: _select(folder, modality, wanted[modality]) for modality in ("image", "text")}
    images = _matrix(chosen["image"][0], "image")
    prompts = _matrix(chosen["text"][0], "text")
    for modality, matrix in (("image", images), ("text", prompts)):
        dim = getattr(wanted[modality][1], "dim", None) if wanted[modality] else None
        if isinstance(dim, int) and dim != matrix.shape[1]:
            raise ValueError(
                f"{chosen[modality][0].name} holds {matrix.shape[1]}-d vectors but {_ARGUMENT[modality]}="
                f"{wanted[modality][0]!r} makes {dim}-d ones: they are not that encoder's embeddings."
            )
    n_templates = len(IMAGENET_TEMPLATES)
    if prompts.shape[0] != N_CLASSES * n_templates:
        raise ValueError(
            f"{chosen['text'][0]} has {prompts.shape[0]} rows, but the authors' prompts are {N_CLASSES} classes × "
            f"{n_templates} templates = {N_CLASSES * n_templates} rows (class-major): not their ImageNet prompts."
        )
    labels = _labels(folder / "labels.pkl", len(images))
    class_names = list(clip_benchmark_json("en_classnames.json")["imagenet1k"])
    if len(class_names) != N_CLASSES:
        raise ValueError(f"clip_benchmark lists {len(class_names)} ImageNet class names, not {N_CLASSES}: "
                         "reinstall clip-benchmark==1.6.2.")
    return EvalEmbeddings(name=FOLDERS[folder.name], images=images, prompts=prompts, captions=None, labels=labels,
                          class_names=class_names, templates=list(IMAGENET_TEMPLATES), n_templates=n_templates,
                          evalset=None, image_encoder=chosen["image"][1], text_encoder=chosen["text"][1])


# --------------------------------------------------------------------------------------------- encoders

def _requested(encoder, modality: str):
    """``None`` or ``(name, encoder object or None)``, after checking the modality and the preprocessing."""
    if encoder is None:
        return None
    argument = _ARGUMENT[modality]
    obj = None if isinstance(encoder, str) else encoder
    name = encoder if obj is None else getattr(encoder, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{argument}={encoder!r}: pass None, an encoder name such as "
                         f"{_ours(modality)}, or a loaded encoder (an object with .name).")
    ours = {our: mod for mod, our in AUTHORS_ENCODERS.values()}
    obj_modality = getattr(obj, "modality", None)
    if ours.get(name, modality) != modality or (isinstance(obj_modality, str) and obj_modality != modality):
        other = "text" if modality == "image" else "image"
        raise ValueError(f"{argument}={name!r} is {'a text' if other == 'text' else 'an image'} encoder: "
                         f"pass it as {_ARGUMENT[other]}=.")
    if obj is not None and name in NEEDS_AUTHORS_PREPROCESSING:
        features = getattr(obj, "features", None) or {}
        preprocessing = features.get("preprocessing") if hasattr(features, "get") else None
        if preprocessing != "authors":
            raise ValueError(
                f"{argument}={name!r} uses preprocessing={preprocessing!r}, but the authors embedded ImageNet with "
                "their own (resize to 224x224, ImageNet mean/std), and ASIF needs anchors and eval images embedded "
                f"alike: load it with load_image_encoder({name!r}, preprocessing='authors') and embed the anchors "
                "with that encoder."
            )
    return name, obj


def _ours(modality: str) -> list[str]:
    return [our for mod, our in AUTHORS_ENCODERS.values() if mod == modality]


def _mismatch(modality: str, requested: str, held: list[str], where) -> ValueError:
    argument = _ARGUMENT[modality]
    made_by = " and ".join(repr(name) for name in held) or "no encoder this suite knows"
    use = repr(held[0]) if held else "the encoder that made them"
    if held and held[0] in NEEDS_AUTHORS_PREPROCESSING:
        use += " (preprocessing='authors')"
    return ValueError(
        f"{argument}={requested!r}, but the precomputed {modality} embeddings in {where} were made by {made_by}. "
        "ASIF compares eval embeddings with the anchors in one encoder's space, so both must come from the same "
        f"encoder with the same preprocessing: embed the anchors with {use}, or compute the eval embeddings with "
        f"{requested!r} instead (load_eval + embed_eval)."
    )


def _select(folder: Path, modality: str, wanted) -> tuple[Path, str]:
    """The ``.pt`` file of ``modality`` to use and the name of the encoder that made it."""
    prefix, argument = _PREFIX[modality], _ARGUMENT[modality]
    files = sorted(folder.glob(f"{prefix}*.pt"))
    if not files:
        raise ValueError(f"{folder} holds no {prefix}<encoder class>.pt file: not the authors' embeddings folder.")
    maps = {path: AUTHORS_ENCODERS.get(path.stem[len(prefix):], (None, None)) for path in files}
    maps = {path: (our if mod == modality else None) for path, (mod, our) in maps.items()}
    listing = ", ".join(f"{path.name} → {our or 'unknown class ' + repr(path.stem[len(prefix):])}"
                        for path, our in maps.items())
    unknown = [path for path, our in maps.items() if our is None]
    if wanted is None:
        if len(files) == 1 and not unknown:
            return files[0], maps[files[0]]
        if len(files) == 1:
            cls = files[0].stem[len(prefix):]
            raise ValueError(
                f"{files[0]}: the authors' encoder class {cls!r} is not in AUTHORS_ENCODERS "
                f"({sorted(AUTHORS_ENCODERS)}): pass {argument}= the name of the encoder that made it."
            )
        raise ValueError(f"{folder} holds several {modality} embeddings ({listing}): pass {argument}= "
                         f"one of {[our for our in maps.values() if our]} to choose.")
    name = wanted[0]
    for path, our in maps.items():
        if our == name:
            return path, name
    if name not in _ours(modality) and len(unknown) == 1:
        return unknown[0], name  # the caller says which encoder made the one file of a class we do not know
    if name not in _ours(modality) and len(unknown) > 1:
        raise ValueError(f"{folder} holds several {modality} files of classes this suite does not know ({listing}): "
                         f"rename the one {name!r} made to {prefix}<class>.pt and keep it alone in the folder.")
    raise _mismatch(modality, name, [our for our in maps.values() if our], f"{folder} ({listing})")


# --------------------------------------------------------------------------------------------- sources

def _resolve(source, wanted: dict, manifest, progress: bool) -> Path:
    """The unpacked ``EmbeddedImagenet*`` folder for an artifact id, a tar or a folder."""
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"path_or_artifact_id={source!r}: pass an artifact id such as "
                         "'asif-embeddings-imagenet-val', a path to the authors' .tar, or to its unpacked folder.")
    path = Path(source).expanduser()
    if path.is_dir():
        return _find_folder(path)
    if path.is_file():
        return _find_folder(_unpack(path))
    if isinstance(source, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", source) and not source.endswith(".tar"):
        return _find_folder(_unpack(_fetch_tar(source, wanted, manifest, progress)))
    raise ValueError(f"path_or_artifact_id={str(source)!r} is neither an existing file or folder nor an artifact id: "
                     "pass e.g. 'asif-embeddings-imagenet-val', or the path of the downloaded .tar.")


def _fetch_tar(artifact_id: str, wanted: dict, manifest, progress: bool) -> Path:
    loaded = manifest if isinstance(manifest, dict) else load_manifest(manifest)
    ours = sorted(key for key, entry in loaded.items() if entry.get("kind") == "embeddings")
    entry = loaded.get(artifact_id)
    tars = [spec["name"] for spec in (entry or {}).get("files", []) if spec["name"].endswith(".tar")]
    if entry is None or entry.get("kind") != "embeddings" or len(tars) != 1:
        raise ValueError(f"{artifact_id!r} is no file or folder here, nor one of the authors' precomputed embeddings "
                         f"in the manifest: pass the path of the .tar or its folder, or one of {ours}.")
    for modality, request in wanted.items():
        held = entry.get("encoders", {}).get(modality)
        if request and held and request[0] not in held:  # refuse before a download of hundreds of MB
            raise _mismatch(modality, request[0], held, f"artifact {artifact_id!r} (manifest)")
    return fetch(artifact_id, manifest=manifest, progress=progress) / tars[0]


def _find_folder(path: Path) -> Path:
    if path.name in FOLDERS:
        return path
    inside = [child for child in sorted(path.iterdir()) if child.is_dir() and child.name in FOLDERS]
    if len(inside) != 1:
        raise ValueError(f"{path} is not one of the authors' folders {sorted(FOLDERS)} and holds "
                         f"{len(inside)} of them: pass the path of the EmbeddedImagenet*/ folder itself.")
    return inside[0]


def _unpack(tar_path: Path) -> Path:
    """Unpack the tar once into ``cache_dir()/precomputed/<stem>-<sha12>/``; later calls reuse it."""
    sha = sha256_file(tar_path)
    stem = tar_path.name.split(".tar")[0] or tar_path.name
    target = cache_dir() / "precomputed" / f"{stem}-{sha[:12]}"
    if (target / _COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _extract(tar_path, scratch)
        with atomic_write(scratch / _COMPLETE, "w") as handle:
            handle.write(f"{tar_path.name} sha256 {sha}\n")
        try:
            os.rename(scratch, target)
        except OSError:
            if (target / _COMPLETE).exists():
                return target  # another process finished first
            shutil.rmtree(target)  # a folder left without its completion marker
            os.rename(scratch, target)
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _extract(tar_path: Path, dest: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError("safe tar extraction needs Python 3.10.12+, 3.11.4+ or 3.12+: upgrade Python.")
    try:
        with tarfile.open(tar_path, "r:*") as archive:
            members = archive.getmembers()
            for member in members:
                if member.issym() or member.islnk():
                    raise ValueError(f"{tar_path} holds a link ({member.name!r} → {member.linkname!r}); the authors' "
                                     "tar holds plain files only: refusing to unpack it. Download it again.")
                if not (member.isfile() or member.isdir()):
                    raise ValueError(f"{tar_path} holds a special file ({member.name!r}, a device or pipe): "
                                     "refusing to unpack it. Download it again.")
            needed = sum(member.size for member in members)
            free = shutil.disk_usage(dest).free
            if needed > free:
                raise ValueError(f"{tar_path} unpacks to {needed / 1e9:.1f} GB but {dest.parent} has "
                                 f"{free / 1e9:.1f} GB free: free some space (or set ASIF_CACHE elsewhere).")
            archive.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as err:
        raise ValueError(f"{tar_path}: refusing to unpack a member that would land outside its folder or is not a "
                         f"plain file ({err}). Download the tar again.") from None
    except (tarfile.TarError, EOFError) as err:
        raise ValueError(f"{tar_path} is not a readable tar archive ({err}): download it again.") from None


# --------------------------------------------------------------------------------------------- contents

def _matrix(path: Path, modality: str) -> np.ndarray:
    """A 2-D, floating, finite matrix from a ``.pt`` file, as float32 numpy."""
    try:
        value = load_tensors(path)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line), str(err))
        raise ValueError(f"{path} holds more than tensors, and nothing in it was run ({reason}): the file is not the "
                         "authors' embeddings; download it again.") from None
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        if not value.is_floating_point():
            raise ValueError(f"{path} holds a {value.dtype} tensor: {modality} embeddings must be floating point.")
        value = value.detach().to("cpu").float().numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a tensor of {modality} embeddings.")
    if value.ndim != 2 or 0 in value.shape:
        raise ValueError(f"{path} holds an array of shape {value.shape}: {modality} embeddings must be a non-empty "
                         "2-D (rows × dims) matrix.")
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f"{path} holds {value.dtype} values: {modality} embeddings must be floating point.")
    value = value.astype(np.float32, copy=False)
    if not np.isfinite(value).all():
        bad = int((~np.isfinite(value).all(axis=1)).sum())
        raise ValueError(f"{path}: {bad} row(s) hold NaN or infinite values: the file is damaged, download it again.")
    return value


def _labels(path: Path, n_images: int) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path.parent} has no labels.pkl: not the authors' embeddings folder.")
    value = load_labels(path)
    if type(value) not in (list, tuple) or not all(type(label) is int for label in value):
        raise ValueError(f"{path} must hold a flat list of integer labels (one per image); it holds a "
                         f"{type(value).__name__} of other values.")
    labels = np.asarray(value, dtype=np.int64)
    if len(labels) != n_images:
        raise ValueError(f"{path} holds {len(labels)} labels for {n_images} images: the files do not belong together.")
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"{path} holds labels in [{labels.min()}, {labels.max()}]: ImageNet labels are in "
                         f"[0, {N_CLASSES}).")
    return labels
