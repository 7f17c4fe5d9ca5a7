"""Encoders: robust image conversion, the shared encode loop and the encoder contract, the registry and its
offline fail-fast path, and (slow) the two packaged encoders' real weights. Hub code paths on tiny local
miniatures are in test_encoders_hub.py."""
import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from asif_nb.encoders import (EncoderUnavailableError, ImageEncoder, TextEncoder, list_encoders, load_image,
                              load_image_encoder, load_text_encoder, to_rgb)

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


def test_prepare_and_forward_are_the_two_halves_of_encode():
    items = [Image.new("RGB", (5, 5), (i * 30, 9, 200)) for i in range(3)]
    enc = MeanColour()
    prepared = [enc.prepare(item) for item in items]
    assert all(p.dtype == np.float32 for p in prepared)
    rows = enc.forward(prepared)
    assert rows.dtype == np.float32 and rows.shape == (3, 3)
    np.testing.assert_array_equal(rows, enc.encode(items, progress=False))
    assert enc.forward([]).shape == (0, 3)
    with pytest.raises(ValueError, match="cannot-open.png"):
        enc.prepare("cannot-open.png")


def test_features_id_follows_every_feature():
    base = MeanColour()
    assert set(base.features) == {"name", "weights_id", "preprocessing", "preprocessing_sha", "runtime",
                                  "precision", "device"}
    assert base.features_id.startswith("f-") and len(base.features_id) == 18
    assert MeanColour().features_id == base.features_id
    for attribute, value in [("weights_id", "sha256:1"), ("preprocessing_tag", "authors"),
                             ("preprocessing_config", {"size": 5}), ("runtime", "onnxruntime"),
                             ("precision", "float16-autocast"), ("device", "cuda:1"), ("name", "other")]:
        other = MeanColour()
        setattr(other, attribute, value)
        assert other.features_id != base.features_id, attribute
    first, second = MeanColour(), MeanColour()
    first.device, second.device = "cuda:0", "cuda:1"
    assert first.features["device"] == "cuda" and first.features_id == second.features_id


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


# --------------------------------------------------------------------- the packaged encoders, real weights


def jpeg_file(folder, size=(700, 530)):
    """A photo-like JPEG (smooth gradients + noise), big enough that JPEG draft decoding would kick in."""
    h, w = size[1], size[0]
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:h, 0:w]
    pixels = np.stack([x * 255 / w, y * 255 / h, (x + y) % 256], axis=-1) + rng.normal(0, 12, (h, w, 3))
    path = folder / "photo.jpg"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path

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
    assert np.abs(again.forward([pixels]) - effnet.torch_features(pixels[None])).max() < 1e-4


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


@pytest.mark.slow
def test_efficientnet_decodes_a_jpeg_once_however_it_arrives(effnet, tmp_path):
    # 700x530: JPEG draft decoding at half scale would still cover 260x260, so it would have kicked in for paths
    # and bytes but not for an opened PIL image
    path = jpeg_file(tmp_path)
    items = [path, path.read_bytes(), Image.open(path)]
    prepared = [effnet.prepare(item) for item in items]
    assert prepared[0].shape == (3, 260, 260)
    for other in prepared[1:]:
        np.testing.assert_array_equal(prepared[0], other)
    out = effnet.encode(items, progress=False)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


@pytest.mark.slow
def test_efficientnet_runtimes_are_told_apart(effnet, chelsea):
    torch_cpu = load_image_encoder("efficientnet-lite2", device="cpu", runtime="torch")
    assert (effnet.features["runtime"], torch_cpu.features["runtime"]) == ("onnxruntime", "torch")
    assert effnet.features["preprocessing"] == torch_cpu.features["preprocessing"] == "lite2-v2"
    assert effnet.weights_id == torch_cpu.weights_id and effnet.features_id != torch_cpu.features_id
    assert effnet.tensor_preprocess is None
    np.testing.assert_allclose(torch_cpu.encode([chelsea], progress=False), effnet.encode([chelsea], progress=False),
                               atol=1e-4)
    with pytest.raises(ValueError, match="runtime="):
        load_image_encoder("efficientnet-lite2", device="cpu", runtime="tensorrt")
    with pytest.raises(ValueError, match="preprocessing='authors' is not available"):
        load_image_encoder("efficientnet-lite2", device="cpu", preprocessing="authors")
