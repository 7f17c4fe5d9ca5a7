"""Speed goals of asif_nb.model (issues #2, #11, #14). Prints the figures; exits 1 when a goal is missed.

1. Exact relative representations of 2,000 queries against 200,000 anchors (d=768, k=800) within 1.25x
   the bare fp32 matrix product of the same shapes, measured in the same run (best of 3 each, interleaved
   so that load from other processes hits both sides alike). The floor is the faster of two bare products:
   one (2000, 768) @ (768, 200000) product, and the same product in 8192-anchor chunks into one buffer.
   Reported beside it, not a goal: the authors' relative_represent (relreps.py) as they wrote it, one
   einsum per chunk of queries and a plain torch.topk (not exact on ties; 1.6 GB of similarities here).
2. Peak memory while encoding <= anchor matrix + 1 GB (VmHWM, reset before the call, in a fresh process).
3. sweep over 8 prefix sizes x 3 k x 4 p within 1.5x the CPU time of one single evaluation at the largest size
   (building the model from the same raw arrays, then classify); the wall-clock ratio is printed beside it.

4. The exact routes of issue #14 (benchmarks/exact_routes.py): pruning <= 0.5x the fp32 GEMM on >= 50k real
   embeddings, bit-identical, falling back on random data; reduced precision not chosen on a CPU without AMX.

Everything runs on the CPU (device="cpu"), where the goals are set, also on a machine with a GPU.

Usage: python benchmarks/bench_model.py [--quick]   (--quick: a 10x smaller run to try the script)
"""
from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asif_nb.model import AsifModel  # noqa: E402
from asif_nb.metrics import accuracy  # noqa: E402
from asif_nb.sweeps import sweep  # noqa: E402

REPEATS = 3


def clustered(rng, n, dim, n_clusters=1000, spread=1.0):
    """Embeddings that look like an encoder's: a shared mean direction, clusters, noise (float32)."""
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    mean = rng.standard_normal(dim, dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 50_000
    for s in range(0, n, step):
        m = min(step, n - s)
        out[s:s + m] = mean + centres[rng.integers(0, n_clusters, m)] + spread * rng.standard_normal((m, dim), dtype=np.float32)
    return out


def peak_rss_reset():
    """Reset the kernel's resident-set high-water mark of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def best_of(fns):
    """Run each callable REPEATS times, interleaved; best wall and CPU seconds of each."""
    wall = {name: np.inf for name in fns}
    cpu = {name: np.inf for name in fns}
    for _ in range(REPEATS):
        for name, fn in fns.items():
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - w0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return wall, cpu


def bench_representation(n, n_anchors, dim, k):
    rng = np.random.default_rng(0)
    queries = clustered(rng, n, dim)
    anchors = clustered(rng, n_anchors, dim)
    texts = anchors[:, : dim // 2].copy()  # the text side is not used here; keep it small
    model = AsifModel(anchors, texts, k=k, p=8, device="cpu")
    q, a = torch.from_numpy(queries), torch.from_numpy(anchors)
    chunk = 8192
    buffer = torch.empty((n, chunk))

    def gemm_full():
        return q @ a.T

    def gemm_chunked():
        for s in range(0, n_anchors, chunk):
            part = a[s:s + chunk]
            torch.matmul(q, part.T, out=buffer[:, : part.shape[0]])

    def ours():
        model.encode_image(queries)

    qn = torch.nn.functional.normalize(q, dim=1)
    an = torch.nn.functional.normalize(a, dim=1)

    def authors(max_gpu_mem_gb=8):
        """relreps.relative_represent, as published (their chunking of the queries, a plain topk)."""
        values, indices = torch.zeros((n, k)), torch.zeros((n, k), dtype=torch.long)
        max_chunk_y = max_gpu_mem_gb * 1024 ** 3 / 4 / an.shape[0]
        n_chunks = int(n / max_chunk_y) + 1
        chunk_y = int(n / n_chunks) + n_chunks
        with torch.no_grad():
            for c in range(n_chunks):
                in_prods = torch.einsum("ik, jk -> ij", qn[c * chunk_y:(c + 1) * chunk_y], an)
                values[c * chunk_y:(c + 1) * chunk_y], indices[c * chunk_y:(c + 1) * chunk_y] = \
                    torch.topk(in_prods, k, dim=1)
                del in_prods
        return indices, values

    wall, cpu = best_of({"gemm_full": gemm_full, "gemm_chunked": gemm_chunked, "asif": ours,
                         "authors_topk": authors})
    flops = 2.0 * n * n_anchors * dim
    floor = min(wall["gemm_full"], wall["gemm_chunked"])
    floor_cpu = min(cpu["gemm_full"], cpu["gemm_chunked"])
    print(f"relative representation: {n} queries x {n_anchors} anchors, d={dim}, k={k}, "
          f"{torch.get_num_threads()} torch threads")
    for name in wall:
        print(f"  {name:13s} best wall {wall[name]:7.3f} s  ({flops / wall[name] / 1e9:6.1f} GFLOP/s)   "
              f"best CPU {cpu[name]:7.3f} s")
    time_ratio = wall["asif"] / floor
    print(f"  time ratio asif / bare GEMM: {time_ratio:.3f} (wall; goal <= 1.25), "
          f"{cpu['asif'] / floor_cpu:.3f} (CPU time)")
    print(f"  beside it, the authors' plain topk / bare GEMM: {wall['authors_topk'] / floor:.3f} (wall), "
          f"{cpu['authors_topk'] / floor_cpu:.3f} (CPU time)")

    memory_ok = bench_memory(n, n_anchors, dim, k)
    return time_ratio <= 1.25, memory_ok


def bench_memory(n, n_anchors, dim, k):
    """Peak resident memory of one encode, measured in a fresh process (this one's allocator keeps what the
    timed runs freed, which would hide the encode's own peak)."""
    result = subprocess.run([sys.executable, __file__, "--memory-child", str(n), str(n_anchors), str(dim), str(k)],
                            capture_output=True, text=True)
    if result.returncode:
        print("  peak memory: the measuring process failed:\n" + result.stderr[-2000:])
        return False
    if not result.stdout.strip():
        print("  peak memory: /proc/self/clear_refs not writable here, not measured")
        return True
    before, peak, anchor_bytes = (int(x) for x in result.stdout.split())
    extra = peak - before
    print(f"  peak memory during encode (fresh process): RSS with the model {before / 2**30:.2f} GiB, peak "
          f"{peak / 2**30:.2f} GiB, extra {extra / 2**20:.0f} MiB (goal: anchors {anchor_bytes / 2**20:.0f} MiB + "
          f"1 GiB, i.e. extra <= 1024 MiB); extra / anchor matrix = {extra / anchor_bytes:.3f}")
    return extra <= 2**30


def memory_child(n, n_anchors, dim, k):
    """Print RSS bytes with the model built (raw arrays dropped), the peak during one encode, and the anchor bytes."""
    rng = np.random.default_rng(0)
    queries = clustered(rng, n, dim)
    anchors = clustered(rng, n_anchors, dim)
    model = AsifModel(anchors, anchors[:, : dim // 2].copy(), k=k, p=8, device="cpu")
    anchor_bytes = anchors.nbytes
    del anchors
    gc.collect()
    before = rss_kib("VmRSS") * 1024
    if peak_rss_reset():
        model.encode_image(queries)
        print(before, rss_kib("VmHWM") * 1024, anchor_bytes)


def bench_sweep(n_images, n_classes, n_anchors, dims, ks, ps, n_sizes):
    rng = np.random.default_rng(1)
    anchor_images = clustered(rng, n_anchors, dims[0], n_clusters=n_classes)
    anchor_texts = anchor_images[:, : dims[1]] + 0.5 * rng.standard_normal((n_anchors, dims[1]), dtype=np.float32)
    images = clustered(rng, n_images, dims[0], n_clusters=n_classes)
    prompts = clustered(rng, n_classes, dims[1], n_clusters=n_classes)
    labels = rng.integers(0, n_classes, n_images)
    sizes = np.unique(np.geomspace(max(ks), n_anchors, n_sizes).round().astype(int)).tolist()

    def single():
        model = AsifModel(anchor_images, anchor_texts, k=max(ks), p=ps[-1], device="cpu")
        pred, _ = model.classify(images, prompts)
        return accuracy(pred, labels)

    def run_sweep():
        return sweep(images, labels, prompts, anchor_images, anchor_texts, n_pairs=sizes, k=ks, p=ps, device="cpu")

    wall, cpu = best_of({"single": single, "sweep": run_sweep})
    rows = run_sweep()
    points = sum(r["applicable"] for r in rows)
    assert rows[-1]["accuracy"] == single() and rows[-1]["k"] == max(ks) and rows[-1]["p"] == ps[-1]
    ratio = wall["sweep"] / wall["single"]
    print(f"sweep: {n_images} images, {n_classes} classes, {n_anchors} anchors, dims {dims}: "
          f"{len(sizes)} sizes x {len(ks)} k x {len(ps)} p = {len(rows)} points ({points} applicable)")
    print(f"  single evaluation (build + classify) best wall {wall['single']:.3f} s, CPU {cpu['single']:.3f} s")
    print(f"  sweep                               best wall {wall['sweep']:.3f} s, CPU {cpu['sweep']:.3f} s")
    cpu_ratio = cpu["sweep"] / cpu["single"]
    # The goal is on the work done (CPU time). On this 2-core machine the single evaluation's matrix product runs on
    # both cores while the sweep's per-point scoring (scipy sparse products) runs on one, with no threads by design
    # (issue #11), so the wall-clock ratio is higher; it is printed beside the gated one.
    print(f"  sweep / single: {cpu_ratio:.3f} (CPU time; goal <= 1.5), {ratio:.3f} (wall clock, {os.cpu_count()} cores)")
    return cpu_ratio <= 1.5


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller shapes, to try the script")
    parser.add_argument("--only", choices=("representation", "sweep", "exact-routes"), help="run one benchmark")
    parser.add_argument("--memory-child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    scale = 10 if args.quick else 1
    print("load average (1, 5, 15 min) at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    time_ok = memory_ok = sweep_ok = routes_ok = True
    if args.only in (None, "exact-routes"):
        from exact_routes import bench_pruning

        routes_ok = bench_pruning(best_of, quick=args.quick)
    if args.only in (None, "representation"):
        time_ok, memory_ok = bench_representation(2000, 200_000 // scale, 768, 800)
    if args.only in (None, "sweep"):
        sweep_ok = bench_sweep(1000, 100, 100_000 // scale, (768, 384), ks=(100, 400, 800), ps=(1, 3, 5, 8),
                               n_sizes=8)
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    failed = [name for name, ok in (("time", time_ok), ("memory", memory_ok), ("sweep", sweep_ok),
                                    ("exact routes", routes_ok)) if not ok]
    print("goals missed: " + ", ".join(failed) if failed else "all goals met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
