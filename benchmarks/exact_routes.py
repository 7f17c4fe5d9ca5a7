"""The exact routes of issue #14 (asif_nb.prune, asif_nb.reduced) against the bare fp32 GEMM; bench_model.py's rows.

Pruned (projection bounds): on the real-embedding set (benchmarks/real_anchors.py: the demo's anchors plus every
image its packages hold, cached; queries: the demo's eval images) time of encode_image through with_index("pruned")
over the bare (n, d) @ (d, N) float32 product of the same shapes (best of 3, interleaved; goal <= 0.5), the fraction
of (query, anchor) products computed beside what a perfect bound would compute at the same tiles, and bit-identity
with the plain path (indices and values of every row). On random (unclustered) data the route must fall back to the
plain path: ratio beside the plain path's (goal <= 1.05x the plain path) and identical output. Reduced precision:
built on the same anchors, it reports its tile micro-benchmark and whether it was chosen (goal on a CPU without AMX:
not chosen).
"""
from __future__ import annotations

import numpy as np
import torch

from asif_nb.model import AsifModel


def _same(a, b):
    return (a.indptr.tolist() == b.indptr.tolist() and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))


def _floor(backend, reference):
    """The product a perfect bound would still compute: per row, the tiles (of the route's layout) that hold its exact
    top-k, over all tiles (CSR ``reference``: the plain path's representations; a top-k anchor with a cosine <= 0 has
    weight 0 and is not stored, so this is exact where the top-k cosines are positive, as on the real set: k-th
    values 0.20-0.91)."""
    if not getattr(backend, "built", False):
        return 1.0
    position = np.empty(backend.n, dtype=np.int64)
    position[backend.order] = np.arange(backend.n)
    tile = position[reference.indices] // backend.tile_size
    rows = np.repeat(np.arange(reference.shape[0]), np.diff(reference.indptr))
    return np.unique(rows * backend.tiles + tile).size / (reference.shape[0] * backend.tiles)


def _route_vs_gemm(anchors, queries, k, best_of, label, rounds=1):
    model = AsifModel(anchors, anchors, k=k, p=8, device="cpu")
    pruned = model.with_index("pruned", modality="image")
    a, q = torch.from_numpy(anchors), torch.from_numpy(queries)
    fns = {"gemm": lambda: q @ a.T, "plain": lambda: model.encode_image(queries),
           "pruned": lambda: pruned.encode_image(queries)}
    walls = [best_of(fns)[0] for _ in range(rounds)]
    wall = {name: min(w[name] for w in walls) for name in fns}
    reference = model.encode_image(queries)
    same = _same(reference, pruned.encode_image(queries))
    backend = pruned.index["image"]
    last, build = backend.last, backend.build
    ratio, plain_ratio = wall["pruned"] / wall["gemm"], wall["plain"] / wall["gemm"]
    print(f"pruned exact top-k, {label}: {len(queries)} queries x {len(anchors)} anchors x {anchors.shape[1]}, k={k}: "
          f"build {build['seconds']:.1f} s, rank {build.get('rank', 0)} ({build.get('precision')} bound), "
          f"tiles of {build.get('tile_size', 0)} "
          f"anchors, a build sample would visit {build.get('sample_visited', 1.0):.3f}; route {last['route']}, "
          f"visited {last['visited']:.3f} of the products "
          f"(a perfect bound, at the same tiles: {_floor(backend, reference):.3f}); time / bare fp32 GEMM "
          f"{ratio:.3f} (plain path {plain_ratio:.3f}); bit-identical to the plain path: {same}")
    return ratio, plain_ratio, same, last


def bench_pruning(best_of, quick=False):
    """Real and random rows; True when every goal is met."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_anchors import real_image_embeddings

    anchors, queries, _ = real_image_embeddings()
    anchors, queries = anchors.astype(np.float32), queries.astype(np.float32)
    if quick:
        anchors = anchors[:: 10]
    ratio, _, same, last = _route_vs_gemm(anchors, queries, 800, best_of, f"real embeddings ({len(anchors)})")
    real_ok = same and (quick or (ratio <= 0.5 and len(anchors) >= 50_000))
    if len(anchors) < 50_000 and not quick:
        print(f"  only {len(anchors)} real anchors are cached (goal >= 50,000): run benchmarks/real_anchors.py")
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((len(anchors), anchors.shape[1]), dtype=np.float32)
    qnoise = rng.standard_normal((len(queries), anchors.shape[1]), dtype=np.float32)
    # the fallback runs the plain path's very code, so only noise (+-8 % here) tells the two apart: best of twice the
    # repeats, so that noise does not decide the 5 % check
    r_ratio, r_plain, r_same, r_last = _route_vs_gemm(noise, qnoise, 800, best_of, "random data", rounds=2)
    random_ok = r_same and r_last["route"].startswith("plain") and r_ratio <= 1.05 * r_plain

    reduced = AsifModel(anchors, anchors, k=800, device="cpu").with_index("reduced", modality="image")
    build = reduced.index["image"].build
    print(f"reduced precision ({build['precision']} candidates, fp32 rescoring): tile time / fp32 "
          f"{build.get('tile_time_ratio', float('nan')):.2f}, chosen: {build['chosen']}"
          + ("" if build["chosen"] else " (not chosen on this CPU: the plain path answers)"))
    reduced_ok = not build["chosen"] or _amx()
    return real_ok and random_ok and reduced_ok


def _amx():
    try:
        return "amx" in open("/proc/cpuinfo").read()
    except OSError:
        return False
