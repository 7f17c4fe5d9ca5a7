"""load_precomputed: the authors' ImageNet embeddings (a miniature written here in their exact layout), read safely."""
import hashlib
import pickle
import tarfile
import types
import zipfile

import numpy as np
import pytest

import torch

import asif_nb  # noqa: E402
from asif_nb import AsifModel, accuracy_topk, load_precomputed, mean_per_class_recall  # noqa: E402
from asif_nb import precomputed  # noqa: E402
from asif_nb.data import IMAGENET_TEMPLATES, clip_benchmark_json  # noqa: E402
from asif_nb.pipeline import evaluate  # noqa: E402

N_IMAGES, D_VIT, D_DINO, D_TEXT, LATENT = 40, 16, 8, 12, 10
ROWS = 1000 * len(IMAGENET_TEMPLATES)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))


class _World:
    """Anchors and eval embeddings that share a latent class structure, so zero-shot accuracy is far above chance
    only if images, labels and class-major prompts are read in the right order."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.to_vit, self.to_dino = rng.normal(size=(LATENT, D_VIT)), rng.normal(size=(LATENT, D_DINO))
        self.to_text = rng.normal(size=(LATENT, D_TEXT))
        prototypes = rng.normal(size=(1000, LATENT))
        z = prototypes[rng.integers(0, 1000, 2000)] + 0.1 * rng.normal(size=(2000, LATENT))
        self.anchor_images = (z @ self.to_vit + 0.05 * rng.normal(size=(2000, D_VIT))).astype(np.float32)
        self.anchor_texts = (z @ self.to_text + 0.05 * rng.normal(size=(2000, D_TEXT))).astype(np.float32)
        self.labels = rng.integers(0, 1000, N_IMAGES)
        latent_images = prototypes[self.labels]
        self.vit = (latent_images @ self.to_vit + 0.05 * rng.normal(size=(N_IMAGES, D_VIT))).astype(np.float32)
        self.dino = (latent_images @ self.to_dino).astype(np.float32)
        class_major = np.repeat(prototypes, len(IMAGENET_TEMPLATES), axis=0)  # class c, template t: row 7c + t
        self.prompts = (class_major @ self.to_text + 0.05 * rng.normal(size=(ROWS, D_TEXT))).astype(np.float32)


WORLD = _World()


def _save_labels(path, labels, batch=10):
    """As the authors' embeddings_from_dl: ``all_labels += list(labels)`` per DataLoader batch, pickle.dump."""
    all_labels = []
    for start in range(0, len(labels), batch):
        all_labels += list(torch.tensor(np.asarray(labels[start:start + batch]), dtype=torch.int64))
    with open(path, "wb") as handle:
        pickle.dump(all_labels, handle)


def _authors_folder(root, name="EmbeddedImagenetTest", images=None, texts=None, labels=None):
    folder = root / name
    folder.mkdir(parents=True)
    images = {"VIT": WORLD.vit, "DINO": WORLD.dino} if images is None else images
    texts = {"SentenceT": WORLD.prompts} if texts is None else texts
    for prefix, files in (("zimgs_", images), ("ztxts_", texts)):
        for cls, value in files.items():
            torch.save(torch.as_tensor(value) if isinstance(value, np.ndarray) else value, folder / f"{prefix}{cls}.pt")
    _save_labels(folder / "labels.pkl", WORLD.labels if labels is None else labels)
    return folder


def _tar(folder, path=None, extra=None):
    path = path or folder.parent / f"{folder.name}.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(folder, arcname=folder.name)
        for info, data in extra or []:
            archive.addfile(info, data)
    return path


def _model():
    return AsifModel(WORLD.anchor_images, WORLD.anchor_texts, k=50, p=4, device="cpu")


def _encoder(name, preprocessing, modality="image", dim=None):
    return types.SimpleNamespace(name=name, modality=modality, dim=dim, features={"preprocessing": preprocessing})


# ------------------------------------------------------------------------------------ the three routes

def test_the_authors_tar_evaluates_like_a_direct_computation(tmp_path):
    tar = _tar(_authors_folder(tmp_path / "src"))
    embedded = load_precomputed(tar, image_encoder="vit-b16-in21k")

    assert isinstance(embedded, asif_nb.EvalEmbeddings) and embedded.name == "imagenet-test"
    assert (embedded.image_encoder, embedded.text_encoder) == ("vit-b16-in21k", "all-mpnet-base-v2")
    assert embedded.images.dtype == np.float32 and embedded.labels.dtype == np.int64
    np.testing.assert_array_equal(embedded.images, WORLD.vit)
    np.testing.assert_array_equal(embedded.prompts, WORLD.prompts)
    np.testing.assert_array_equal(embedded.labels, WORLD.labels)
    assert embedded.class_names == clip_benchmark_json("en_classnames.json")["imagenet1k"]
    assert embedded.templates == IMAGENET_TEMPLATES and embedded.n_templates == 7 and embedded.captions is None

    result = evaluate(_model(), embedded)
    _, scores = _model().classify(WORLD.vit, WORLD.prompts, n_templates=7)
    direct = accuracy_topk(scores, WORLD.labels, k=(1, 5), ties="worst")
    assert (result["acc1"], result["acc5"]) == (direct["acc1"], direct["acc5"])
    assert result["mean_per_class_recall"] == pytest.approx(mean_per_class_recall(scores, WORLD.labels, ties="worst"))
    assert result["acc1"] > 0.2  # chance is 0.001: labels and class-major prompts were read in order
    assert result["eval"] == "imagenet-test" and result["n_classes"] == 1000


def test_the_tar_is_unpacked_once_into_the_cache_and_reused(tmp_path, monkeypatch):
    tar = _tar(_authors_folder(tmp_path / "src"))
    load_precomputed(tar, image_encoder="dino-vits8")
    sha = hashlib.sha256(tar.read_bytes()).hexdigest()
    unpacked = asif_nb.cache_dir() / "precomputed" / f"EmbeddedImagenetTest-{sha[:12]}"
    assert (unpacked / "EmbeddedImagenetTest" / "zimgs_DINO.pt").is_file()
    assert [p.name for p in unpacked.parent.iterdir()] == [unpacked.name]  # no temp folder left behind

    monkeypatch.setattr(precomputed, "_extract", lambda *a: pytest.fail("the tar was unpacked a second time"))
    again = load_precomputed(tar, image_encoder="dino-vits8")
    np.testing.assert_array_equal(again.images, WORLD.dino)


def test_the_unpacked_folder_or_its_parent_is_read_in_place(tmp_path):
    folder = _authors_folder(tmp_path / "src", name="EmbeddedImagenetVal")
    for path in (folder, folder.parent, str(folder)):
        embedded = load_precomputed(path, image_encoder="vit-b16-in21k", text_encoder="all-mpnet-base-v2")
        assert embedded.name == "imagenet-val"
        np.testing.assert_array_equal(embedded.images, WORLD.vit)
    assert not (asif_nb.cache_dir() / "precomputed").exists()


def _manifest(tar, artifact_id="asif-embeddings-imagenet-test"):
    data = tar.read_bytes()
    return {artifact_id: {
        "id": artifact_id, "description": "test", "kind": "embeddings", "count": None, "licence": "-",
        "citation": "-", "version": "1", "encoders": {"image": ["vit-b16-in21k", "dino-vits8"],
                                                       "text": ["all-mpnet-base-v2"]},
        "files": [{"name": tar.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}],
        "sources": [{"type": "file", "url": tar.as_uri()}],
    }}


def test_an_artifact_id_is_fetched_verified_and_read(tmp_path):
    tar = _tar(_authors_folder(tmp_path / "src"))
    embedded = load_precomputed("asif-embeddings-imagenet-test", image_encoder="vit-b16-in21k",
                                manifest=_manifest(tar), progress=False)
    assert (asif_nb.cache_dir() / "downloads" / "asif-embeddings-imagenet-test" / tar.name).is_file()
    np.testing.assert_array_equal(embedded.images, WORLD.vit)
    np.testing.assert_array_equal(embedded.labels, WORLD.labels)


def test_an_encoder_the_manifest_does_not_list_is_refused_before_downloading(tmp_path):
    tar = _tar(_authors_folder(tmp_path / "src"))
    manifest = _manifest(tar)
    tar.unlink()  # a download attempt would now fail with DownloadError, not the ValueError below
    with pytest.raises(ValueError, match="image_encoder='efficientnet-lite2'.*'vit-b16-in21k' and 'dino-vits8'"):
        load_precomputed("asif-embeddings-imagenet-test", image_encoder="efficientnet-lite2", manifest=manifest)


def test_a_source_that_is_neither_a_path_nor_an_embeddings_artifact_is_refused(tmp_path):
    with pytest.raises(ValueError, match="nor one of the authors' precomputed embeddings"):
        load_precomputed("no-such-artifact", manifest=_manifest(_tar(_authors_folder(tmp_path / "src"))))
    with pytest.raises(ValueError, match="neither an existing file or folder"):
        load_precomputed(tmp_path / "missing.tar")
    (tmp_path / "Elsewhere").mkdir()
    with pytest.raises(ValueError, match="pass the path of the EmbeddedImagenet"):
        load_precomputed(tmp_path / "Elsewhere")


# ------------------------------------------------------------------------------------ which file, which encoder

def test_several_image_files_and_no_request_lists_them(tmp_path):
    folder = _authors_folder(tmp_path / "src")
    with pytest.raises(ValueError, match="zimgs_DINO.pt → dino-vits8, zimgs_VIT.pt → vit-b16-in21k.*image_encoder="):
        load_precomputed(folder)


def test_one_file_per_modality_of_known_classes_needs_no_request(tmp_path):
    embedded = load_precomputed(_authors_folder(tmp_path / "src", images={"DINO": WORLD.dino}))
    assert embedded.image_encoder == "dino-vits8"
    np.testing.assert_array_equal(embedded.images, WORLD.dino)


def test_an_unknown_class_is_named_and_settled_by_the_explicit_encoder(tmp_path):
    folder = _authors_folder(tmp_path / "src", images={"Lite2": WORLD.dino})
    with pytest.raises(ValueError, match="class 'Lite2' is not in AUTHORS_ENCODERS.*pass image_encoder="):
        load_precomputed(folder)
    embedded = load_precomputed(folder, image_encoder="efficientnet-lite2")
    assert embedded.image_encoder == "efficientnet-lite2"
    np.testing.assert_array_equal(embedded.images, WORLD.dino)


def test_an_unknown_class_beside_known_ones_is_chosen_only_by_name(tmp_path):
    folder = _authors_folder(tmp_path / "src", images={"VIT": WORLD.vit, "Lite2": WORLD.dino})
    np.testing.assert_array_equal(load_precomputed(folder, image_encoder="efficientnet-lite2").images, WORLD.dino)
    np.testing.assert_array_equal(load_precomputed(folder, image_encoder="vit-b16-in21k").images, WORLD.vit)
    # dino-vits8 is the authors' DINO: an unknown class never stands in for it
    with pytest.raises(ValueError, match="image_encoder='dino-vits8'.*made by 'vit-b16-in21k'"):
        load_precomputed(folder, image_encoder="dino-vits8")


def test_anchors_from_another_encoder_are_refused_naming_both_and_the_fix(tmp_path):
    tar = _tar(_authors_folder(tmp_path / "src", images={"VIT": WORLD.vit}))
    with pytest.raises(ValueError) as caught:
        load_precomputed(tar, image_encoder="efficientnet-lite2")
    message = str(caught.value)
    assert "'efficientnet-lite2'" in message and "'vit-b16-in21k'" in message
    assert "embed the anchors with 'vit-b16-in21k' (preprocessing='authors')" in message
    assert "compute the eval embeddings with 'efficientnet-lite2'" in message


def test_a_text_encoder_passed_as_the_image_encoder_is_refused(tmp_path):
    folder = _authors_folder(tmp_path / "src")
    with pytest.raises(ValueError, match="'all-mpnet-base-v2' is a text encoder: pass it as text_encoder="):
        load_precomputed(folder, image_encoder="all-mpnet-base-v2")
    with pytest.raises(ValueError, match="'my-text' is an image encoder: pass it as image_encoder="):
        load_precomputed(folder, text_encoder=_encoder("my-text", "library", modality="image"))
    with pytest.raises(ValueError, match="pass None, an encoder name"):
        load_precomputed(folder, image_encoder=42)


def test_a_vit_encoder_object_must_use_the_authors_preprocessing(tmp_path):
    folder = _authors_folder(tmp_path / "src")
    with pytest.raises(ValueError, match="preprocessing='library'.*preprocessing='authors'"):
        load_precomputed(folder, image_encoder=_encoder("vit-b16-in21k", "library"))
    with pytest.raises(ValueError, match="preprocessing=None"):
        load_precomputed(folder, image_encoder=types.SimpleNamespace(name="dino-vits8"))
    embedded = load_precomputed(folder, image_encoder=_encoder("vit-b16-in21k", "authors", dim=D_VIT))
    assert embedded.image_encoder == "vit-b16-in21k"
    with pytest.raises(ValueError, match="holds 16-d vectors but image_encoder='vit-b16-in21k' makes 768-d"):
        load_precomputed(folder, image_encoder=_encoder("vit-b16-in21k", "authors", dim=768))


# ------------------------------------------------------------------------------------ hostile files

class _Touch:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_malicious_pt_file_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    folder = _authors_folder(tmp_path / "src", images={"VIT": {"z": _Touch(marker)}})
    with pytest.raises(ValueError, match="zimgs_VIT.pt holds more than tensors, and nothing in it was run"):
        load_precomputed(folder)
    assert not marker.exists()


def test_a_malicious_labels_pkl_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    folder = _authors_folder(tmp_path / "src", images={"VIT": WORLD.vit})
    (folder / "labels.pkl").write_bytes(pickle.dumps([_Touch(marker)] * N_IMAGES))
    with pytest.raises(ValueError, match="refusing to load"):
        load_precomputed(folder)
    assert not marker.exists()


def _member(name, kind=tarfile.REGTYPE, data=b"x", linkname=""):
    import io

    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("member, message", [
    (("../escaped.txt",), "outside its folder"),
    (("EmbeddedImagenetTest/../../escaped.txt",), "outside its folder"),
    (("EmbeddedImagenetTest/link", tarfile.SYMTYPE, b"", "../../etc/passwd"), "holds a link"),
    (("EmbeddedImagenetTest/inner", tarfile.SYMTYPE, b"", "zimgs_VIT.pt"), "holds a link"),
    (("EmbeddedImagenetTest/hard", tarfile.LNKTYPE, b"", "EmbeddedImagenetTest/labels.pkl"), "holds a link"),
    (("EmbeddedImagenetTest/pipe", tarfile.FIFOTYPE, b""), "special file"),
    (("EmbeddedImagenetTest/dev", tarfile.CHRTYPE, b""), "special file"),
])
def test_a_hostile_tar_is_refused_naming_it(tmp_path, member, message):
    tar = _tar(_authors_folder(tmp_path / "src"), extra=[_member(*member)])
    with pytest.raises(ValueError, match=message) as caught:
        load_precomputed(tar, image_encoder="vit-b16-in21k")
    assert str(tar) in str(caught.value)
    assert not (asif_nb.cache_dir() / "precomputed" / "escaped.txt").exists()  # where ../ would have led
    assert not list((asif_nb.cache_dir() / "precomputed").iterdir())  # nothing half-unpacked is kept


def test_a_file_that_is_not_a_tar_is_refused(tmp_path):
    (tmp_path / "EmbeddedImagenetTest.tar").write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(ValueError, match="not a readable tar archive"):
        load_precomputed(tmp_path / "EmbeddedImagenetTest.tar")


# ------------------------------------------------------------------------------------ damaged contents

def _nan_images():
    images = WORLD.vit.copy()
    images[3, 2] = np.nan
    return images


@pytest.mark.parametrize("change, message", [
    ({"images": {"VIT": WORLD.vit[0]}}, r"shape \(16,\).*non-empty 2-D"),
    ({"images": {"VIT": torch.ones(N_IMAGES, D_VIT, dtype=torch.int64)}}, "torch.int64 tensor.*floating point"),
    ({"images": {"VIT": _nan_images()}}, "1 row.*NaN or infinite"),
    ({"texts": {"SentenceT": WORLD.prompts[:-1]}}, "6999 rows.*1000 classes × 7 templates = 7000"),
    ({"labels": np.append(WORLD.labels[:-1], 1000)}, r"labels in \[\d+, 1000\].*\[0, 1000\)"),
    ({"labels": np.append(WORLD.labels[:-1], -1)}, r"labels in \[-1, \d+\]"),
    ({"labels": WORLD.labels[:-1]}, "39 labels for 40 images"),
])
def test_damaged_contents_are_refused_clearly(tmp_path, change, message):
    folder = _authors_folder(tmp_path / "src", **{"images": {"VIT": WORLD.vit}, **change})
    with pytest.raises(ValueError, match=message):
        load_precomputed(folder)


def test_labels_that_are_not_a_flat_integer_list_are_refused(tmp_path):
    folder = _authors_folder(tmp_path / "src", images={"VIT": WORLD.vit})
    (folder / "labels.pkl").write_bytes(pickle.dumps([[1]] * N_IMAGES))
    with pytest.raises(ValueError, match="flat list of integer labels"):
        load_precomputed(folder)
    (folder / "labels.pkl").unlink()
    with pytest.raises(ValueError, match="has no labels.pkl"):
        load_precomputed(folder)


def test_a_pt_file_holding_a_numpy_array_is_read(tmp_path):
    folder = _authors_folder(tmp_path / "src", images={"VIT": WORLD.vit})
    torch.save(WORLD.vit.astype(np.float64), folder / "zimgs_VIT.pt")  # a numpy array, not a tensor
    embedded = load_precomputed(folder)
    assert embedded.images.dtype == np.float32
    np.testing.assert_allclose(embedded.images, WORLD.vit)


def test_embeddings_saved_from_cuda_are_read_on_the_cpu(tmp_path):
    """The authors embedded on a GPU: their .pt storages say "cuda:0"; a CPU-only machine must still read them."""
    folder = _authors_folder(tmp_path / "src", images={"VIT": WORLD.vit})
    path = folder / "zimgs_VIT.pt"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    (pkl,) = [name for name in members if name.endswith("/data.pkl")]
    assert members[pkl].count(b"X\x03\x00\x00\x00cpu") == 1
    members[pkl] = members[pkl].replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    embedded = load_precomputed(folder)
    np.testing.assert_array_equal(embedded.images, WORLD.vit)
