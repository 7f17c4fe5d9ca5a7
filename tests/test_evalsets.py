"""Every evaluation-set loader on miniatures written in each dataset's real on-disk format (offline)."""
from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from asif_nb import data
from asif_nb.data import load_eval


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_inverts_and_balances_subsets(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 2, 9, 9], dtype=np.uint8)
    pixels = np.zeros((8, 28, 28), dtype=np.uint8)
    pixels[:, 10, 10] = 255
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    evalset = load_eval("fashion-mnist", root=tmp_path)
    assert len(evalset) == 8 and evalset.images[0].size == (28, 28) and evalset.images[0].mode == "RGB"
    assert evalset.images[0].getpixel((0, 0)) == (255, 255, 255) and evalset.images[0].getpixel((10, 10)) == (0, 0, 0)
    assert load_eval("fashion-mnist", root=tmp_path, invert=False).images[0].getpixel((0, 0)) == (0, 0, 0)
    assert evalset.labels.dtype == np.int64 and evalset.class_names[9] == "Ankle boot"
    assert sorted(load_eval("fashion-mnist", root=tmp_path, n=4).labels.tolist()) == [0, 1, 2, 9]
    with pytest.raises(ValueError, match="n=9"):
        load_eval("fashion-mnist", root=tmp_path, n=9)


def test_imagenet_samples_from_foolbox():
    evalset = load_eval("imagenet-samples")
    assert len(evalset) == 20 and len(evalset.class_names) == 1000 and evalset.class_names[0] == "tench"
    assert evalset.labels.tolist()[:3] == [243, 559, 438]  # the labels in foolbox's file names
    all_templates = data.clip_benchmark_json("en_zeroshot_classification_templates.json")["imagenet1k"]
    assert len(evalset.templates) == 7 and set(evalset.templates) <= set(all_templates)
    assert Image.open(evalset.images[0]).size[0] > 100


def test_imagenet_folder_and_the_authors_seeded_halves(tmp_path, write_images):
    import torch

    wnids = data.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"
    for wnid in (wnids[0], wnids[999]):
        write_images(tmp_path / "val" / wnid, [f"ILSVRC2012_val_{wnid}_{i}.JPEG" for i in range(5)])
    val, test = load_eval("imagenet", split="val", root=tmp_path), load_eval("imagenet", split="test", root=tmp_path)
    every = load_eval("imagenet", split="all", root=tmp_path)
    assert len(val) == len(test) == 5 and len(every) == 10 and not set(val.ids) & set(test.ids)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(42)).tolist()
    assert val.ids == [every.ids[i] for i in perm[:5]]
    assert set(every.labels.tolist()) == {0, 999}
    with pytest.raises(ValueError, match="split="):
        load_eval("imagenet", split="train", root=tmp_path)


def test_imagenet_without_a_folder_says_what_to_do(monkeypatch):
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="IMAGENET_DIR"):
        load_eval("imagenet")


def test_imagenet_v2_folder_format(tmp_path, write_images):
    for label in ("0", "7"):
        write_images(tmp_path / label, ["a.jpeg", "b.jpeg"])
    evalset = load_eval("imagenet-v2", root=tmp_path)
    assert evalset.labels.tolist() == [0, 0, 7, 7] and len(evalset.class_names) == 1000
    with pytest.raises(FileNotFoundError, match="IMAGENET_V2_DIR"):
        load_eval("imagenet-v2", download=False)


def test_pets_reads_torchvisions_on_disk_format_with_the_authors_prompts(tmp_path, write_images):
    base = tmp_path / "oxford-iiit-pet"
    write_images(base / "images", ["Abyssinian_1.jpg", "yorkshire_terrier_9.jpg"])
    (base / "annotations").mkdir()
    (base / "annotations" / "test.txt").write_text("Abyssinian_1 1 1 1\nyorkshire_terrier_9 37 2 25\n")
    evalset = load_eval("pets", root=tmp_path, download=False)
    assert evalset.labels.tolist() == [0, 36] and [p.name for p in evalset.images] == \
        ["Abyssinian_1.jpg", "yorkshire_terrier_9.jpg"]
    assert evalset.class_names[36] == "yorkshire terrier dog" and evalset.templates[0] == "a type of pet {c}."


def test_classnames_and_templates_from_clip_benchmark_json(tmp_path):
    (tmp_path / "names.json").write_text(json.dumps({"imagenet1k": [f"thing {i}" for i in range(1000)]}))
    (tmp_path / "templates.json").write_text(json.dumps({"imagenet1k": ["a {} here."], "cifar10": ["x {c}"]}))
    evalset = load_eval("imagenet-samples", classnames=tmp_path / "names.json", templates=tmp_path / "templates.json")
    assert evalset.class_names[3] == "thing 3" and evalset.templates == ["a {c} here."]
    with pytest.raises(ValueError, match="no {c} placeholder"):
        load_eval("imagenet-samples", templates=["a photo."])
    with pytest.raises(ValueError, match="1000 classes"):
        load_eval("imagenet-samples", classnames=["a", "b"])
    with pytest.raises(ValueError, match="not an evaluation set"):
        load_eval("coco")




def test_an_unpacked_package_is_reused_without_fetching(temp_cache, monkeypatch):
    from asif_nb import download

    name = download.load_manifest()["dataset-fashion-mnist"]["files"][0]["name"]
    folder = temp_cache / "sources" / "dataset-fashion-mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([3, 4], dtype=np.uint8))
    (folder / ".unpacked.json").write_text(json.dumps({"file": name, "version": "x"}))

    def no_fetch(artifact_id, **kwargs):
        raise AssertionError("fetch must not be called for an unpacked package")

    monkeypatch.setattr(download, "fetch", no_fetch)
    assert load_eval("fashion-mnist").labels.tolist() == [3, 4]
    (folder / ".unpacked.json").write_text(json.dumps({"file": "an-older-version.deb", "version": "x"}))
    with pytest.raises(AssertionError, match="must not be called"):
        load_eval("fashion-mnist")


# ------------------------------------------------------------------------------------------ CIFAR-100

def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    return b"M" + struct.pack("<H", value) if 0 <= value < 65536 else b"J" + struct.pack("<i", value)


def _py2_str(raw: bytes) -> bytes:
    return b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<I", len(raw)) + raw


def _py2_value(value) -> bytes:
    if isinstance(value, dict):
        return b"}(" + b"".join(_py2_str(k.encode()) + _py2_value(v) for k, v in value.items()) + b"u"
    if isinstance(value, list):
        return b"](" + b"".join(_py2_value(v) for v in value) + b"e"
    if isinstance(value, str):
        return _py2_str(value.encode("latin-1"))
    if isinstance(value, int):
        return _py2_int(value)
    assert isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 2
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01"
            + _py2_int(value.shape[0]) + _py2_int(value.shape[1]) + b"\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
            + b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _py2_str(value.tobytes()) + b"tb")


def py2_pickle(value) -> bytes:
    """``value`` as Python 2's cPickle wrote CIFAR's batches (protocol 2: strings as BINSTRING, numpy 1 arrays
    through numpy.core.multiarray._reconstruct)."""
    return b"\x80\x02" + _py2_value(value) + b"."


def cifar_files(python2: bool) -> dict[str, bytes]:
    """A 6-image CIFAR-100 test batch and its meta file, in the real format (Python 2's, or as Python 3 would
    write it: bytes keys); image 0's top-left pixel is (10, 20, 30)."""
    pixels = np.random.default_rng(0).integers(0, 255, (6, 3072), dtype=np.uint8)
    pixels[0, [0, 1024, 2048]] = (10, 20, 30)  # channel-planar rows: R plane, G plane, B plane
    fine = [f"class_{i}" for i in range(100)]
    fine[1] = "aquarium_fish"
    labels = [1, 1, 2, 3, 3, 3]
    if python2:
        return {"test": py2_pickle({"batch_label": "testing batch 1 of 1", "data": pixels, "fine_labels": labels}),
                "meta": py2_pickle({"fine_label_names": fine, "coarse_label_names": ["c"] * 20})}
    return {"test": pickle.dumps({b"data": pixels, b"fine_labels": labels}, protocol=4),
            "meta": pickle.dumps({b"fine_label_names": [n.encode() for n in fine]}, protocol=4)}


@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickles", "python3-bytes-keys"])
def test_cifar100_reads_the_python_batches_without_unpickling_code(tmp_path, python2):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, content in cifar_files(python2).items():
        (folder / name).write_bytes(content)
    evalset = load_eval("cifar100", root=tmp_path, download=False)
    assert evalset.labels.tolist() == [1, 1, 2, 3, 3, 3] and evalset.images[0].size == (32, 32)
    assert evalset.images[0].getpixel((0, 0)) == (10, 20, 30)
    assert evalset.class_names[1] == "aquarium fish" and len(evalset.templates) == 18
    assert evalset.templates[0] == "a photo of a {c}."
    assert load_eval("cifar100", root=tmp_path, download=False, n=3).labels.tolist() == [1, 2, 3]


class _Touch:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_cifar_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "meta").write_bytes(cifar_files(False)["meta"])
    (folder / "test").write_bytes(pickle.dumps({b"data": _Touch(tmp_path / "ran"), b"fine_labels": [0]}))
    with pytest.raises(ValueError, match="refusing to load io.open"):
        load_eval("cifar100", root=tmp_path, download=False)
    assert not (tmp_path / "ran").exists()
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"fine_labels": [0, 1]}))
    with pytest.raises(ValueError, match="N x 3072 uint8 array"):
        load_eval("cifar100", root=tmp_path, download=False)


def test_cifar100_download_is_fetched_verified_and_unpacked_through_the_data_filter(tmp_path, monkeypatch):
    from asif_nb import download

    files = {f"cifar-100-python/{name}": content for name, content in cifar_files(True).items()}
    files["cifar-100-python/train"] = b"a 150 MB batch the test split never reads"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    calls = []

    def fake_fetch(artifact_id, dest=None, **kwargs):  # stands for the verified downloader
        calls.append(artifact_id)
        (dest / "cifar-100-python.tar.gz").write_bytes(buffer.getvalue())
        return dest

    monkeypatch.setattr(download, "fetch", fake_fetch)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_eval("cifar100", root=tmp_path, download=False)
    assert load_eval("cifar100", root=tmp_path).labels.tolist() == [1, 1, 2, 3, 3, 3]
    assert calls == ["cifar100"] and sorted(p.name for p in (tmp_path / "cifar-100-python").iterdir()) == \
        [".unpacked.json", "meta", "test"]
    assert len(load_eval("cifar100", root=tmp_path)) == 6 and calls == ["cifar100"]  # unpacked once
