"""Speed goal of asif_nb.contrastive (issue #7): notebook 08's demo training fits its CPU budget.

The demo trains, at each of 5 pair counts, a tiny CLIP for 150 steps and two heads (LiT-style, linear) for 100
steps, batch 128, on 2 threads. Goal: all that training within 90 s, measured here on synthetic inputs of the
same shapes (best of 3 timings of each model, interleaved, so load from other processes is less likely to
decide the verdict). Also prints the CPU AdamW choice (plain loop vs foreach) that ``train_contrastive`` relies on.

Usage: python benchmarks/bench_contrastive.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asif_nb.contrastive import CLIP, CLIPConfig, linear_heads, lit_heads, train_contrastive  # noqa: E402

GOAL_SECONDS = 90.0
N_COUNTS, CLIP_STEPS, HEAD_STEPS, BATCH = 5, 150, 100, 128
REPEATS = 3


def main() -> int:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = CLIPConfig.preset("tiny")
    vocab = 4000
    pixels = torch.randn(1024, 3, config.image_size, config.image_size)
    tokens = (torch.randint(4, vocab, (1024, config.context_length)), torch.full((1024,), config.context_length - 1))
    image_embeddings, text_embeddings = torch.randn(1024, 1280), torch.randn(1024, 384)
    jobs = {
        "CLIP tiny": (lambda: CLIP(config, vocab), pixels, tokens, CLIP_STEPS),
        "LiT-style": (lambda: lit_heads(1280, 384), image_embeddings, text_embeddings, HEAD_STEPS),
        "linear": (lambda: linear_heads(1280, 384), image_embeddings, text_embeddings, HEAD_STEPS),
    }
    best = {name: float("inf") for name in jobs}
    for _ in range(REPEATS):
        for name, (make, images, texts, steps) in jobs.items():
            best[name] = min(best[name], train_contrastive(make(), images, texts, steps=steps, batch_size=BATCH).seconds)
    for name, seconds in best.items():
        print(f"{name:>10}: {jobs[name][3]} steps in {seconds:.2f} s ({seconds / jobs[name][3] * 1000:.0f} ms/step)")
    total = N_COUNTS * sum(best.values())
    print(f"notebook 08 demo training: {N_COUNTS} pair counts x the above = {total:.1f} s (goal <= {GOAL_SECONDS:.0f} s)")

    params = [torch.nn.Parameter(torch.randn(1280, 256)), torch.nn.Parameter(torch.randn(256, 1280))]
    for p in params:
        p.grad = torch.randn_like(p)
    for foreach in (False, True):
        optimizer = torch.optim.AdamW(params, foreach=foreach)
        optimizer.step()
        start = time.perf_counter()
        for _ in range(20):
            optimizer.step()
        print(f"AdamW foreach={foreach}: {(time.perf_counter() - start) / 20 * 1000:.1f} ms/step (655k parameters)")
    return 0 if total <= GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
