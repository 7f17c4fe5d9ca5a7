"""The trained models of notebook 08: CLIP (Algorithms 1–3 of the seed), its loss and temperature, a word
tokenizer and pixel loader for it, and the heads trained on frozen embeddings (LiT-style, frozen–frozen linear).
See the package docstring for the conventions."""
from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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

    from ..encoders import load_image

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
