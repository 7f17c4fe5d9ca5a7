"""Contrastive baselines for notebook 08: CLIP from scratch, LiT-style, and frozen–frozen linear alignment.

The CLIP code follows the formal algorithms of Salas-Flores, Zou & Zhang (2023), "Making Text-Image Connection
Formal and Practical" (the seed ``004``), and keeps its names:

- a transformer layer is ``g(f(x | Mask))`` with pre-LN (eqs. 1–2):
  ``f(x | Mask) = MSA(LN(x) | Mask) + x`` and ``g(x) = GELU(LN(x) W_h + b_h) W_o + b_o + x``;
- Algorithm 1, ``ViT``: patches ``x_p = f_r(I)``, ``x = [x_class; E x_p^1; ...; E x_p^N] + E_pos``, L layers with
  ``Mask_BID = 1``, output ``y = g(x_class)``;
- Algorithm 2, ``GPT``: ``x = E_tkn[T] + E_pos``, L layers with ``Mask_UND[t', t''] = 1[t' <= t'']``, output
  ``y = LN(x_eos)``;
- Algorithm 3, ``CLIP``: ``I_fe = ViT(I) E_i``, ``T_fe = GPT(T) E_t``, ``Z_img[i, j] = S_C(I_fe^i, T_fe^j)`` (cosine),
  ``Z_text = Z_img^T``;
- the loss, eqs. 4–6: the symmetric InfoNCE ``L = 1/2 E_n[l_n(I->T) + l_n(T->I)]`` with ``l_n = -log softmax(Z/τ)_nn``.

Temperature convention (as OpenAI's CLIP): the learnable parameter is ``log(1/τ)``, initialised at
``log(1/0.07)``; τ is kept in ``[0.01, 100]`` (the seed's clipping) by clamping that parameter after every
optimiser step (``clip_temperature_``), so ``1/τ`` never exceeds 100.

Mixed precision (the seed's low-resource recipe): autocast in the forward pass only, and only on a GPU. On a
CPU the autocast path is off whatever ``amp`` says: CPU half precision is slow and not what the seed measured.

The two cheap baselines train on cached embeddings of the frozen encoders that ASIF uses:
``lit_heads`` (LiT-style: locked image tower — the frozen image embedding itself, no trained image weights —
and a trained text head, an MLP on frozen sentence embeddings) and ``linear_heads`` (both frozen, two trained
linear maps into a shared space).
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .metrics import accuracy_topk, mean_per_class_recall, retrieval_recall

__all__ = [
    "clip_loss", "Temperature", "mask_und", "mask_bid", "TransformerLayer", "ViT", "GPT", "CLIP", "CLIPConfig", "WordTokenizer",
    "EmbeddingHeads", "lit_heads", "linear_heads", "TrainResult", "train_contrastive", "encode_in_batches",
    "evaluate_features", "image_pixels", "count_parameters", "compute_parameters", "training_flops", "autocast_dtype",
]

TAU_INIT = 0.07
TAU_MIN, TAU_MAX = 0.01, 100.0


# ---------------------------------------------------------------------------------------------- the loss

def clip_loss(image_features, text_features, tau):
    """The symmetric InfoNCE loss of eqs. 4–6 for a batch of N matching pairs (row n of each is pair n).

    ``Z_img[i, j]`` is the cosine similarity of image i and text j (eq. 3, so features need not be normalised);
    ``l_n(I->T) = -log exp(Z_img[n, n]/τ) / sum_k exp(Z_img[n, k]/τ)``, the same with ``Z_text = Z_img^T``, and
    the loss is the mean over n of their average. ``tau`` is a float or a 0-d tensor (gradients flow into it).
    """
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)}"
                         " must both be (N, d): one row per pair, pair n in row n of each.")
    Z_img = F.normalize(image_features.float(), dim=1) @ F.normalize(text_features.float(), dim=1).T
    Z_text = Z_img.T
    target = torch.arange(Z_img.shape[0], device=Z_img.device)
    loss_i2t = F.cross_entropy(Z_img / tau, target)   # eq. 4, averaged over n
    loss_t2i = F.cross_entropy(Z_text / tau, target)  # eq. 5
    return (loss_i2t + loss_t2i) / 2                  # eq. 6


class Temperature(nn.Module):
    """The learnable τ, stored as ``log(1/τ)`` (CLIP's ``logit_scale``) and initialised at τ = 0.07."""

    def __init__(self, tau_init: float = TAU_INIT):
        super().__init__()
        if not TAU_MIN <= tau_init <= TAU_MAX:
            raise ValueError(f"tau_init={tau_init} must lie in [{TAU_MIN}, {TAU_MAX}], the range τ is clipped to.")
        self.log_inv_tau = nn.Parameter(torch.tensor(math.log(1.0 / tau_init)))

    @property
    def tau(self) -> torch.Tensor:
        return torch.exp(-self.log_inv_tau)

    @torch.no_grad()
    def clip_(self):
        """Clamp τ into [0.01, 100] (i.e. log(1/τ) into [log 0.01, log 100]); called after each optimiser step."""
        self.log_inv_tau.clamp_(math.log(1.0 / TAU_MAX), math.log(1.0 / TAU_MIN))


# ---------------------------------------------------------------------------------------------- masks

def mask_und(length: int, device=None) -> torch.Tensor:
    """The unidirectional mask ``Mask_UND[t', t''] = 1[t' <= t'']`` (bool, ``length`` x ``length``).

    As in the formal-algorithms convention, t' indexes the token attended to and t'' the token attending:
    token t'' sees itself and every earlier token, never a later one.
    """
    t = torch.arange(length, device=device)
    return t[:, None] <= t[None, :]


def mask_bid(length: int, device=None) -> torch.Tensor:
    """The bidirectional mask ``Mask_BID = 1``: every token sees every token."""
    return torch.ones(length, length, dtype=torch.bool, device=device)


# ---------------------------------------------------------------------------------------------- transformer

class MLPBlock(nn.Module):
    """``g(x) = GELU(LN(x) W_h + b_h) W_o + b_o + x`` (eq. 2, with the pre-LN the seed's text describes)."""

    def __init__(self, width: int, mlp_width: int):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.W_h = nn.Linear(width, mlp_width)
        self.W_o = nn.Linear(mlp_width, width)

    def forward(self, x):
        return self.W_o(F.gelu(self.W_h(self.ln(x)))) + x


class TransformerLayer(nn.Module):
    """One layer ``g(f(x | Mask))`` with ``f(x | Mask) = MSA(LN(x) | Mask) + x`` (eq. 1)."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be divisible by heads={heads}.")
        self.heads = heads
        self.ln = nn.LayerNorm(width)
        self.W_qkv = nn.Linear(width, 3 * width)
        self.W_out = nn.Linear(width, width)
        self.g = MLPBlock(width, mlp_width)

    def msa(self, x, mask):
        batch, length, width = x.shape
        q, k, v = self.W_qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        # torch wants (attending, attended) with True = may attend: the transpose of Mask[t', t''].
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.T)
        return self.W_out(attended.transpose(1, 2).reshape(batch, length, width))

    def forward(self, x, mask):
        x = self.msa(self.ln(x), mask) + x   # f
        return self.g(x)                     # g


class ViT(nn.Module):
    """Algorithm 1: the image encoder. Input (B, C, H, W) images; output ``y = g(x_class)`` (B, width)."""

    def __init__(self, image_size=32, patch=8, channels=3, width=128, layers=2, heads=4, mlp_width=256):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size={image_size} must be a multiple of patch={patch}.")
        self.patch, self.image_size = patch, image_size
        n_patches = (image_size // patch) ** 2
        self.E = nn.Linear(channels * patch * patch, width)
        self.x_class = nn.Parameter(torch.randn(width) * 0.02)
        self.E_pos = nn.Parameter(torch.randn(n_patches + 1, width) * 0.02)
        self.layers = nn.ModuleList(TransformerLayer(width, heads, mlp_width) for _ in range(layers))
        self.g = MLPBlock(width, mlp_width)
        self.register_buffer("Mask_BID", mask_bid(n_patches + 1), persistent=False)

    def f_r(self, images):
        """(B, C, H, W) → (B, N, P²C): the N = HW/P² non-overlapping P x P patches, flattened."""
        if images.ndim != 4 or images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images has shape {tuple(images.shape)}: pass (B, C, {self.image_size}, {self.image_size}).")
        return F.unfold(images, kernel_size=self.patch, stride=self.patch).transpose(1, 2)

    def forward(self, images):
        x_p = self.f_r(images)
        x_class = self.x_class.expand(x_p.shape[0], 1, -1)
        x = torch.cat([x_class, self.E(x_p)], dim=1) + self.E_pos
        for layer in self.layers:
            x = layer(x, self.Mask_BID)
        return self.g(x[:, 0])


class GPT(nn.Module):
    """Algorithm 2: the text encoder. Input (B, ℓ) token ids ``[SOS] ... [EOS] 0 0``; output ``LN(x_eos)``.

    Padding needs no mask of its own: it sits after [EOS], and ``Mask_UND`` hides later tokens from [EOS].
    """

    def __init__(self, vocab_size, context_length=16, width=128, layers=2, heads=4, mlp_width=256):
        super().__init__()
        self.context_length = context_length
        self.E_tkn = nn.Embedding(vocab_size, width)
        self.E_pos = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.layers = nn.ModuleList(TransformerLayer(width, heads, mlp_width) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.register_buffer("Mask_UND", mask_und(context_length), persistent=False)

    def forward(self, T, eos_position):
        if T.ndim != 2 or T.shape[1] != self.context_length:
            raise ValueError(f"T has shape {tuple(T.shape)}: pass (B, {self.context_length}) token ids.")
        x = self.E_tkn(T) + self.E_pos
        for layer in self.layers:
            x = layer(x, self.Mask_UND)
        x_eos = x[torch.arange(T.shape[0], device=T.device), eos_position]
        return self.ln(x_eos)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Sizes of the two towers. ``tiny`` trains on a CPU in seconds; ``vit_b32_224`` / ``vit_b16_112`` are the
    seed's two models (§4.2: ViT 12 layers, 12 heads, width 768; GPT 12 layers, 8 heads, width 512; ℓ = 32)."""

    image_size: int = 32
    patch: int = 8
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    context_length: int = 12
    embed_dim: int = 64
    mlp_ratio: int = 2

    @classmethod
    def preset(cls, name: str) -> "CLIPConfig":
        presets = {
            "tiny": cls(),
            "vit-b32-224": cls(224, 32, 768, 12, 12, 512, 12, 8, 32, 512, 4),
            "vit-b16-112": cls(112, 16, 768, 12, 12, 512, 12, 8, 32, 512, 4),
        }
        if name not in presets:
            raise ValueError(f"preset={name!r} is unknown: choose one of {sorted(presets)}.")
        return presets[name]


class CLIP(nn.Module):
    """Algorithm 3: both towers, the projections ``E_i`` / ``E_t`` and the learnable τ.

    ``forward(images, (T, eos_position))`` returns ``(I_fe, T_fe)``; ``clip_loss(I_fe, T_fe, model.tau)`` is eq. 6.
    """

    def __init__(self, config: CLIPConfig, vocab_size: int):
        super().__init__()
        c = config
        self.config = c
        self.vit = ViT(c.image_size, c.patch, 3, c.vision_width, c.vision_layers, c.vision_heads,
                       c.mlp_ratio * c.vision_width)
        self.gpt = GPT(vocab_size, c.context_length, c.text_width, c.text_layers, c.text_heads, c.mlp_ratio * c.text_width)
        self.E_i = nn.Linear(c.vision_width, c.embed_dim, bias=False)
        self.E_t = nn.Linear(c.text_width, c.embed_dim, bias=False)
        self.temperature = Temperature()

    @property
    def tau(self):
        return self.temperature.tau

    def encode_image(self, images):
        return self.E_i(self.vit(images))

    def encode_text(self, tokens):
        T, eos_position = tokens
        return self.E_t(self.gpt(T, eos_position))

    def forward(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens)

    def tokens_per_example(self) -> int:
        """Sequence positions one pair costs (image patches + class token, plus the text context)."""
        return (self.config.image_size // self.config.patch) ** 2 + 1 + self.config.context_length


# ---------------------------------------------------------------------------------------------- tokenizer

class WordTokenizer:
    """A word-level vocabulary built from the training captions (the seed uses BPE; with a few thousand
    captions a word list is the honest small equivalent). Ids: 0 = pad, 1 = [SOS], 2 = [EOS], 3 = unknown.

    Words never seen in training (e.g. a class name absent from the captions) map to the unknown id, so CLIP
    from scratch cannot know them: that is part of what notebook 08 shows.
    """

    PAD, SOS, EOS, UNK = 0, 1, 2, 3

    def __init__(self, texts, min_count: int = 1):
        counts = Counter(word for text in texts for word in self.words(text))
        self.vocab = ["<pad>", "<sos>", "<eos>", "<unk>"] + sorted(w for w, c in counts.items() if c >= min_count)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self):
        return len(self.vocab)

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def __call__(self, texts, context_length: int = 16):
        """(T, eos_position): ``[SOS] w1 ... [EOS]`` zero-padded (truncated to fit) to ``context_length``."""
        if context_length < 3:
            raise ValueError(f"context_length={context_length} must be >= 3 ([SOS], one word, [EOS]).")
        if isinstance(texts, str):
            texts = [texts]
        T = torch.zeros(len(texts), context_length, dtype=torch.long)
        eos_position = torch.empty(len(texts), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.index.get(w, self.UNK) for w in self.words(text)][: context_length - 2]
            ids = [self.SOS] + ids + [self.EOS]
            T[row, : len(ids)] = torch.tensor(ids)
            eos_position[row] = len(ids) - 1
        return T, eos_position


def image_pixels(images, size: int = 32) -> torch.Tensor:
    """Images (paths or PIL) as a float tensor (n, 3, size, size) in [-1, 1], transparency composited on white."""
    from PIL import Image

    from .encoders import load_image

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, item in enumerate(images):
        out[i] = np.asarray(load_image(item).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


# ---------------------------------------------------------------------------------------------- heads on frozen embeddings

class EmbeddingHeads(nn.Module):
    """Trained heads on frozen embeddings: ``forward(images, texts) = (image_head(images), text_head(texts))``."""

    def __init__(self, image_head: nn.Module, text_head: nn.Module):
        super().__init__()
        self.image_head, self.text_head = image_head, text_head
        self.temperature = Temperature()

    @property
    def tau(self):
        return self.temperature.tau

    def encode_image(self, x):
        return self.image_head(x)

    def encode_text(self, x):
        return self.text_head(x)

    def forward(self, images, texts):
        return self.image_head(images), self.text_head(texts)


def lit_heads(image_dim: int, text_dim: int, hidden: int = 256) -> EmbeddingHeads:
    """LiT-style: the locked image tower's embedding is used as it is (identity, no trained image weights);
    a 2-layer MLP maps the frozen sentence embedding into the image embedding space."""
    text_head = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, image_dim))
    return EmbeddingHeads(nn.Identity(), text_head)


def linear_heads(image_dim: int, text_dim: int, shared_dim: int = 128) -> EmbeddingHeads:
    """Frozen–frozen linear alignment: both encoders frozen, two trained linear maps into a shared space."""
    return EmbeddingHeads(nn.Linear(image_dim, shared_dim, bias=False), nn.Linear(text_dim, shared_dim, bias=False))


# ---------------------------------------------------------------------------------------------- training

def autocast_dtype(device: str, amp: bool = True):
    """The autocast dtype for the forward pass: float16 on a GPU when ``amp``, else None (autocast off).
    On a CPU autocast is always off."""
    return torch.float16 if amp and str(device).startswith("cuda") else None


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def compute_parameters(model: nn.Module) -> int:
    """Trained parameters that cost multiply-adds per token: all but embedding tables (a lookup is free)."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in lookups)


def training_flops(n_parameters: int, tokens_per_example: int, examples_seen: int) -> float:
    """The usual estimate ``6 · parameters · tokens``: 2 FLOPs per parameter per token forward, twice that
    backward. It ignores attention's quadratic term (small at these lengths) and the frozen encoders' forward
    passes (ASIF pays those too: they embed the anchors once)."""
    return 6.0 * n_parameters * tokens_per_example * examples_seen


@dataclasses.dataclass
class TrainResult:
    losses: list            # mean loss of each epoch
    seconds: float          # wall time of the optimisation loop
    steps: int
    examples_seen: int
    n_parameters: int       # trained parameters
    flops: float            # training_flops estimate (embedding tables left out)
    amp: bool               # whether autocast was on


def _take(inputs, index):
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_take(x, index) for x in inputs)
    return inputs[index]


def _to(inputs, device):
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to(x, device) for x in inputs)
    return inputs.to(device, non_blocking=True)


def _length(inputs):
    return len(inputs[0]) if isinstance(inputs, (tuple, list)) else len(inputs)


def train_contrastive(model, images, texts, *, epochs: int = 10, steps: int | None = None, batch_size: int = 128,
                      lr: float = 5e-4, weight_decay: float = 0.1, warmup_steps: int | None = None, seed: int = 0,
                      device: str = "cpu", amp: bool = True, tokens_per_example: int = 1) -> TrainResult:
    """Minimise eq. 6 over matching rows of ``images`` and ``texts`` (tensors, or tuples of tensors such as
    ``(T, eos_position)``) with AdamW (β = 0.9, 0.99 as the seed), linear warm-up then cosine decay, and τ clipped
    after every step. ``model(images, texts)`` must return the two feature batches; ``model.tau`` is τ and
    ``model.temperature.clip_()`` clamps it (as ``CLIP`` and ``EmbeddingHeads`` do). ``steps``, when given,
    replaces ``epochs``: exactly that many optimiser steps, reshuffling at every pass over the data.

    Batches are shuffled with ``seed``; the last partial batch is dropped (a batch of 1 has no negatives); with
    fewer than ``batch_size`` pairs the whole set is one batch. ``amp`` turns on float16 autocast for the
    forward pass on a GPU only (see ``autocast_dtype``). ``tokens_per_example`` feeds the FLOPs estimate."""
    n = _length(images)
    if n != _length(texts):
        raise ValueError(f"images has {n} rows but texts has {_length(texts)}: pass one text per image.")
    if n < 2:
        raise ValueError(f"only {n} pair(s): contrastive training needs at least 2 (the negatives come from the batch).")
    if epochs < 1 or batch_size < 2 or (steps is not None and steps < 1):
        raise ValueError(f"epochs={epochs} and steps={steps} must be >= 1 (steps may be None), "
                         f"batch_size={batch_size} >= 2.")
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    dtype = autocast_dtype(device, amp)
    trained = [p for p in model.parameters() if p.requires_grad]
    # On a busy 2-core CPU the multi-tensor ("foreach") AdamW was 4-50x slower than the plain loop (idle: equal).
    on_gpu = str(device).startswith("cuda")
    # As CLIP: no weight decay on gains, biases, τ and other vectors, only on matrices.
    optimizer = torch.optim.AdamW([{"params": [p for p in trained if p.ndim >= 2], "weight_decay": weight_decay},
                                   {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.99), foreach=on_gpu)
    size = min(batch_size, n)
    batches_per_epoch = n // size
    total = steps if steps is not None else epochs * batches_per_epoch
    epochs = math.ceil(total / batches_per_epoch)
    warmup = min(total // 10, 2000) if warmup_steps is None else warmup_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / warmup if step < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is not None)
    losses, seen = [], 0
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        epoch_loss, batches = 0.0, min(batches_per_epoch, total - epoch * batches_per_epoch)
        for b in range(batches):
            index = order[b * size:(b + 1) * size]
            image_batch, text_batch = _to(_take(images, index), device), _to(_take(texts, index), device)
            with torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
                image_features, text_features = model(image_batch, text_batch)
            loss = clip_loss(image_features, text_features, model.tau)  # float32 outside autocast
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            model.temperature.clip_()
            epoch_loss += loss.item()
            seen += len(index)
        losses.append(epoch_loss / batches)
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(losses, seconds, total, seen, count_parameters(model),
                       training_flops(compute_parameters(model), tokens_per_example, seen), dtype is not None)


@torch.no_grad()
def encode_in_batches(encode, inputs, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """``encode`` (e.g. ``model.encode_image``) over ``inputs`` in batches; L2-normalised float32 numpy rows."""
    out = []
    for start in range(0, _length(inputs), batch_size):
        batch = _to(_take(inputs, slice(start, start + batch_size)), device)
        out.append(F.normalize(encode(batch).float(), dim=1).cpu())
    return torch.cat(out).numpy()


def _unit_rows(x) -> np.ndarray:
    return F.normalize(torch.as_tensor(np.asarray(x, dtype=np.float32)), dim=1).numpy()


def evaluate_features(image_features, prompt_features=None, labels=None, n_templates: int = 1,
                      caption_features=None, reduce: str = "max") -> dict:
    """The metrics ``pipeline.evaluate`` reports for ASIF, for any model that embeds images and texts in one
    space: cosine scores, a class scores its best template (``reduce="max"``, the rule ASIF uses) or the mean of
    its normalised templates (``"mean"``, CLIP's); ties counted against us. Captions: caption i belongs to image i."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce={reduce!r} is not known: use 'max' or 'mean'.")
    images = _unit_rows(image_features)
    result = {"n_images": int(len(images))}
    if prompt_features is not None:
        prompts = _unit_rows(prompt_features)
        if len(prompts) % n_templates:
            raise ValueError(f"{len(prompts)} prompts is not a multiple of n_templates={n_templates}: pass "
                             "class-major prompts (class c, template t at row c*T + t).")
        n_classes = len(prompts) // n_templates
        if reduce == "max":
            scores = (images @ prompts.T).reshape(len(images), n_classes, n_templates).max(axis=2)
        else:
            means = prompts.reshape(n_classes, n_templates, -1).mean(axis=1)
            scores = images @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T
        labels = np.asarray(labels)
        result.update(accuracy_topk(scores, labels, k=(1, 5), ties="worst"))
        result["mean_per_class_recall"] = float(mean_per_class_recall(scores, labels, ties="worst"))
        result["chance"] = 1.0 / n_classes
    if caption_features is not None:
        captions = _unit_rows(caption_features)
        similarity = images @ captions.T
        result.update(retrieval_recall(similarity, np.arange(len(similarity)), k=(1, 5), ties="worst"))
    return result
