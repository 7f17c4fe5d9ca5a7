"""The contrastive baselines of notebook 08: eqs. 4–6, τ's convention and clipping, the masks of Algorithms 1–2,
training that learns, and mixed precision kept to the GPU."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from asif_nb.contrastive import (CLIP, GPT, TAU_INIT, CLIPConfig, Temperature, TransformerLayer, ViT, WordTokenizer,
                                 autocast_dtype, clip_loss, compute_parameters, count_parameters, encode_in_batches,
                                 evaluate_features, image_pixels, linear_heads, lit_heads, mask_bid, mask_und,
                                 train_contrastive, training_flops)

torch.set_num_threads(2)
MICRO = CLIPConfig(image_size=8, patch=4, vision_width=16, vision_layers=1, vision_heads=2, text_width=16,
                   text_layers=1, text_heads=2, context_length=6, embed_dim=8, mlp_ratio=2)


# ---------------------------------------------------------------------------------------------- the loss

def test_loss_of_a_hand_computed_2x2_batch():
    # Z_img = [[1, 1/√2], [0, 1/√2]] (cosines; the text rows are not unit length on purpose).
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    tau = 0.5
    i2t = [-math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(c / tau))),
           -math.log(math.exp(c / tau) / (math.exp(0) + math.exp(c / tau)))]
    t2i = [-math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0))),
           -math.log(math.exp(c / tau) / (math.exp(c / tau) + math.exp(c / tau)))]
    expected = 0.5 * (sum(i2t) / 2 + sum(t2i) / 2)
    assert clip_loss(images, texts, tau).item() == pytest.approx(expected, rel=1e-6)
    # τ may be a tensor and receives a gradient
    tau_t = torch.tensor(tau, requires_grad=True)
    clip_loss(images, texts, tau_t).backward()
    assert tau_t.grad is not None and tau_t.grad.item() != 0


def test_loss_is_symmetric_in_images_and_texts_and_checks_shapes():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert clip_loss(a, b, 0.1).item() == pytest.approx(clip_loss(b, a, 0.1).item(), rel=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        clip_loss(torch.randn(4, 3), torch.randn(5, 3), 0.1)


# ---------------------------------------------------------------------------------------------- τ

def test_temperature_is_stored_as_log_inverse_and_starts_at_007():
    temperature = Temperature()
    assert temperature.log_inv_tau.item() == pytest.approx(math.log(1 / 0.07))
    assert temperature.tau.item() == pytest.approx(TAU_INIT)
    with pytest.raises(ValueError, match="tau_init"):
        Temperature(tau_init=0.001)


@pytest.mark.parametrize("tau, clipped", [(1e-4, 0.01), (1e4, 100.0), (0.5, 0.5)])
def test_temperature_is_clipped_to_001_100(tau, clipped):
    temperature = Temperature()
    with torch.no_grad():
        temperature.log_inv_tau.fill_(math.log(1 / tau))
    temperature.clip_()
    assert temperature.tau.item() == pytest.approx(clipped, rel=1e-5)


def test_training_clips_tau_after_every_step():
    model = lit_heads(4, 3, hidden=8)
    with torch.no_grad():
        model.temperature.log_inv_tau.fill_(math.log(1 / 1e-5))  # τ far below 0.01
    train_contrastive(model, torch.randn(8, 4), torch.randn(8, 3), epochs=1, batch_size=8, lr=0.0)
    assert model.tau.item() == pytest.approx(0.01, rel=1e-5)


# ---------------------------------------------------------------------------------------------- masks

def test_mask_und_is_one_where_the_attended_token_is_not_later():
    expected = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)  # Mask[t', t''] = 1[t' <= t'']
    assert torch.equal(mask_und(3), expected)
    assert bool(mask_bid(3).all())


def test_causal_layer_never_looks_ahead_and_bidirectional_does():
    torch.manual_seed(0)
    layer = TransformerLayer(width=8, heads=2, mlp_width=16)
    x = torch.randn(1, 5, 8)
    later = x.clone()
    later[0, 3:] = torch.randn(2, 8)  # change tokens 3 and 4 only
    earlier = x.clone()
    earlier[0, 0] = torch.randn(8)
    with torch.no_grad():
        base, changed_later, changed_earlier = (layer(v, mask_und(5)) for v in (x, later, earlier))
        assert torch.allclose(base[0, :3], changed_later[0, :3], atol=1e-6)
        assert not torch.allclose(base[0, 4], changed_earlier[0, 4], atol=1e-4)
        assert not torch.allclose(layer(x, mask_bid(5))[0, :3], layer(later, mask_bid(5))[0, :3], atol=1e-4)


def test_gpt_reads_the_eos_token_and_ignores_the_padding_after_it():
    torch.manual_seed(0)
    gpt = GPT(vocab_size=20, context_length=6, width=16, layers=2, heads=2, mlp_width=32).eval()
    T = torch.tensor([[1, 7, 8, 2, 0, 0]])
    other_padding = torch.tensor([[1, 7, 8, 2, 9, 9]])
    other_word = torch.tensor([[1, 7, 5, 2, 0, 0]])
    eos = torch.tensor([3])
    with torch.no_grad():
        assert torch.allclose(gpt(T, eos), gpt(other_padding, eos), atol=1e-6)
        assert not torch.allclose(gpt(T, eos), gpt(other_word, eos), atol=1e-4)


def test_vit_patches_are_non_overlapping_p_by_p_squares():
    vit = ViT(image_size=8, patch=4, width=16, layers=1, heads=2, mlp_width=32)
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8)
    x_p = vit.f_r(image)
    assert x_p.shape == (1, 4, 3 * 4 * 4)  # N = HW/P² patches of P²C values
    assert torch.equal(x_p[0, 0], image[0, :, :4, :4].reshape(-1))
    assert torch.equal(x_p[0, 1], image[0, :, :4, 4:].reshape(-1))
    assert vit(image).shape == (1, 16)
    with pytest.raises(ValueError, match="pass \\(B, C, 8, 8\\)"):
        vit(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of patch"):
        ViT(image_size=10, patch=4)


# ---------------------------------------------------------------------------------------------- tokenizer, pixels

def test_word_tokenizer_encloses_in_sos_eos_pads_and_truncates():
    tok = WordTokenizer(["A red car.", "a blue car"])
    T, eos = tok(["red car", "a green car", "a a a a a a a a"], context_length=5)
    red, car, a = tok.index["red"], tok.index["car"], tok.index["a"]
    assert T[0].tolist() == [tok.SOS, red, car, tok.EOS, tok.PAD]
    assert T[1].tolist() == [tok.SOS, a, tok.UNK, car, tok.EOS]  # "green" was never seen
    assert T[2].tolist() == [tok.SOS, a, a, a, tok.EOS]          # truncated to fit [EOS]
    assert eos.tolist() == [3, 4, 4]
    with pytest.raises(ValueError, match="context_length"):
        tok("x", context_length=2)


def test_image_pixels_composites_on_white_and_scales_to_minus1_1():
    transparent = Image.new("RGBA", (10, 6), (255, 0, 0, 0))
    red = Image.new("RGB", (5, 5), (255, 0, 0))
    pixels = image_pixels([transparent, red], size=4)
    assert pixels.shape == (2, 3, 4, 4)
    assert torch.allclose(pixels[0], torch.ones(3, 4, 4))
    assert torch.allclose(pixels[1, 0], torch.ones(4, 4)) and torch.allclose(pixels[1, 1:], -torch.ones(2, 4, 4))


# ---------------------------------------------------------------------------------------------- training

def _tiny_clip_data(n=8):
    torch.manual_seed(0)
    images = torch.randn(n, 3, 8, 8)
    T = torch.randint(4, 30, (n, 6))
    T[:, 0], T[:, -1] = WordTokenizer.SOS, WordTokenizer.EOS
    return images, (T, torch.full((n,), 5))


def test_a_few_steps_on_a_tiny_batch_lower_the_clip_loss():
    images, tokens = _tiny_clip_data()
    model = CLIP(MICRO, vocab_size=30)
    result = train_contrastive(model, images, tokens, epochs=25, batch_size=8, lr=3e-3, warmup_steps=0,
                               tokens_per_example=model.tokens_per_example())
    assert result.steps == 25 and result.examples_seen == 200
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.flops == 6.0 * compute_parameters(model) * model.tokens_per_example() * 200
    assert compute_parameters(model) == count_parameters(model) - 30 * MICRO.text_width  # E_tkn is a lookup


@pytest.mark.parametrize("make", [lit_heads, linear_heads], ids=["lit", "linear"])
def test_heads_on_frozen_embeddings_learn_to_match_pairs(make):
    torch.manual_seed(0)
    images, texts = torch.randn(32, 12), torch.randn(32, 10)
    model = make(12, 10)
    before = clip_loss(*model(images, texts), model.tau).item()
    result = train_contrastive(model, images, texts, epochs=40, batch_size=16, lr=1e-2, seed=1)
    after = clip_loss(*model(images, texts), model.tau).item()
    assert after < 0.5 * before and result.losses[-1] < result.losses[0]
    image_features = encode_in_batches(model.encode_image, images, batch_size=5)
    text_features = encode_in_batches(model.encode_text, texts)
    assert np.allclose(np.linalg.norm(image_features, axis=1), 1, atol=1e-5)
    assert evaluate_features(image_features, caption_features=text_features)["text_retrieval_recall@1"] > 0.5


def test_lit_keeps_the_image_tower_locked():
    model = lit_heads(12, 6)
    images = torch.randn(4, 12)
    assert torch.equal(model.encode_image(images), images)
    assert count_parameters(model.image_head) == 0


def test_steps_replace_epochs_and_cycle_through_the_data():
    result = train_contrastive(linear_heads(5, 4), torch.randn(10, 5), torch.randn(10, 4), epochs=99, steps=7,
                               batch_size=4)
    # 2 batches of 4 per pass (the partial batch is dropped): 7 steps = 3 full passes + 1 step
    assert result.steps == 7 and result.examples_seen == 28 and len(result.losses) == 4
    with pytest.raises(ValueError, match="steps=0"):
        train_contrastive(linear_heads(5, 4), torch.randn(10, 5), torch.randn(10, 4), steps=0)


def test_training_is_seeded_and_checks_its_input():
    images, texts = torch.randn(10, 5), torch.randn(10, 4)
    runs = []
    for other_state in (1, 2):
        torch.manual_seed(0)
        model = linear_heads(5, 4)  # same initial weights
        torch.manual_seed(other_state)  # the global RNG differs: the run's shuffling comes from seed= only
        runs.append(train_contrastive(model, images, texts, epochs=3, batch_size=4, seed=3).losses)
    assert runs[0] == runs[1]
    torch.manual_seed(0)
    assert train_contrastive(linear_heads(5, 4), images, texts, epochs=3, batch_size=4, seed=4).losses != runs[0]
    with pytest.raises(ValueError, match="one text per image"):
        train_contrastive(linear_heads(5, 4), torch.randn(6, 5), torch.randn(5, 4))
    with pytest.raises(ValueError, match="at least 2"):
        train_contrastive(linear_heads(5, 4), torch.randn(1, 5), torch.randn(1, 4))


# ---------------------------------------------------------------------------------------------- mixed precision

def test_mixed_precision_is_for_the_gpu_only():
    assert autocast_dtype("cuda", amp=True) == torch.float16
    assert autocast_dtype("cuda:0", amp=True) == torch.float16
    assert autocast_dtype("cuda", amp=False) is None
    assert autocast_dtype("cpu", amp=True) is None


def test_on_cpu_the_forward_pass_runs_in_float32_even_with_amp():
    images, tokens = _tiny_clip_data()
    model = CLIP(MICRO, vocab_size=30)
    seen = []
    model.vit.register_forward_hook(lambda module, args, out: seen.append(
        (out.dtype, torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda"))))
    result = train_contrastive(model, images, tokens, epochs=1, batch_size=8, amp=True, device="cpu")
    assert result.amp is False
    assert seen and all(entry == (torch.float32, False, False) for entry in seen)


# ---------------------------------------------------------------------------------------------- evaluation

def test_evaluate_features_scores_classes_like_the_asif_evaluation():
    # two classes, two templates each; image 0 matches class 0's second template, image 1 class 1's first
    prompts = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]], dtype=np.float32)
    images = np.array([[0, 1, 0.1], [0.2, 0, 1]], dtype=np.float32)
    result = evaluate_features(images, prompts, labels=[0, 1], n_templates=2)
    assert result["acc1"] == 1.0 and result["chance"] == 0.5
    # CLIP's rule averages templates: class 1's mean (-1/2, 0, 1/2) now beats class 0's for image 1 too
    assert evaluate_features(images, prompts, labels=[0, 1], n_templates=2, reduce="mean")["acc1"] == 1.0
    assert evaluate_features(images, prompts, labels=[1, 1], n_templates=2)["acc1"] == 0.5
    with pytest.raises(ValueError, match="multiple of n_templates"):
        evaluate_features(images, prompts[:3], labels=[0, 1], n_templates=2)
    with pytest.raises(ValueError, match="reduce"):
        evaluate_features(images, prompts, labels=[0, 1], n_templates=2, reduce="median")


def test_flops_estimate_is_six_per_parameter_per_token():
    assert training_flops(10, 3, 7) == 6 * 10 * 3 * 7


def test_presets_include_the_seeds_models():
    b32 = CLIPConfig.preset("vit-b32-224")
    assert (b32.image_size, b32.patch, b32.vision_layers, b32.vision_width, b32.text_width, b32.context_length) == \
        (224, 32, 12, 768, 512, 32)
    assert CLIPConfig.preset("vit-b16-112").patch == 16
    with pytest.raises(ValueError, match="preset"):
        CLIPConfig.preset("huge")
