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

from .compare import METHODS, compare, encode_in_batches, evaluate_features, winners
from .models import (CLIP, GPT, TAU_INIT, TAU_MAX, TAU_MIN, CLIPConfig, EmbeddingHeads, MLPBlock, Temperature,
                     TransformerLayer, ViT, WordTokenizer, clip_loss, image_pixels, linear_heads, lit_heads, mask_bid,
                     mask_und)
from .training import (TrainResult, autocast_dtype, compute_parameters, count_parameters, train_contrastive,
                       training_flops)

__all__ = [
    "clip_loss", "Temperature", "mask_und", "mask_bid", "TransformerLayer", "ViT", "GPT", "CLIP", "CLIPConfig", "WordTokenizer",
    "EmbeddingHeads", "lit_heads", "linear_heads", "TrainResult", "train_contrastive", "encode_in_batches",
    "evaluate_features", "image_pixels", "count_parameters", "compute_parameters", "training_flops", "autocast_dtype",
    "compare", "winners", "METHODS",
]
