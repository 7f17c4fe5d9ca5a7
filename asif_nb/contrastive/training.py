"""Training the contrastive models: AdamW with warm-up and cosine decay, τ clipped after every step, autocast on a
GPU only; parameter and FLOP counts for the cost comparison."""
from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from .models import clip_loss


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
