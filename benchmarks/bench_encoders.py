"""Throughput of the two offline encoders on this machine's CPU; exits 1 when a goal is missed.

Goals (issue #3): efficientnet-lite2 >= 40 images/s at batch 32, from image files (decoding included);
all-MiniLM-L6-v2 >= 200 sentences/s at batch 64. Each figure is the best of three timed passes after a
warm-up pass, because the machine is shared and a single pass measures the neighbours as much as the encoder.
"""
from __future__ import annotations

import glob
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_GOAL, TEXT_GOAL = 40.0, 200.0
N_IMAGES, N_SENTENCES, PASSES = 128, 512, 3


def image_files() -> list[str]:
    """Real photo files shipped with installed packages: foolbox's ImageNet JPEGs and scikit-image's PNGs."""
    import skimage

    files = glob.glob(os.path.join(os.path.dirname(skimage.__file__), "data", "*.png"))
    try:
        import foolbox

        files += glob.glob(os.path.join(os.path.dirname(foolbox.__file__), "data", "imagenet_*.jpg"))
    except ImportError:
        pass
    if not files:
        sys.exit("no sample images found (scikit-image / foolbox data)")
    return [files[i % len(files)] for i in range(N_IMAGES)]


def sentences() -> list[str]:
    subjects = ["a tabby cat", "two dogs", "a red bicycle", "an old man", "a helmeted guinea fowl", "a sailing boat"]
    verbs = ["sitting on", "running across", "parked next to", "looking at", "standing near", "drifting past"]
    places = ["a wooden bench", "the beach at sunset", "a busy street", "a snowy mountain", "the kitchen table"]
    return [f"{subjects[i % 6]} {verbs[(i // 6) % 6]} {places[(i // 36) % 5]}, photo {i}" for i in range(N_SENTENCES)]


def best_rate(encode, items, batch_size: int) -> float:
    encode(items[:batch_size], batch_size=batch_size, progress=False)  # warm-up: threads, caches, lazy init
    best = 0.0
    for _ in range(PASSES):
        start = time.perf_counter()
        out = encode(items, batch_size=batch_size, progress=False)
        best = max(best, len(items) / (time.perf_counter() - start))
        assert out.shape[0] == len(items)
    return best


def main() -> int:
    from asif_nb.encoders import load_image_encoder, load_text_encoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"CPU cores: {os.cpu_count()}")
    image = load_image_encoder("efficientnet-lite2", device="cpu")
    files = image_files()
    image_rate = best_rate(image.encode, files, 32)
    # the two stages alone, to show which one limits: decoding + resizing (one thread) and the network
    start = time.perf_counter()
    pixels = [image.prepare(f) for f in files]
    decode_rate = len(files) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(pixels), 32):
        image.forward(pixels[i:i + 32])
    network_rate = len(files) / (time.perf_counter() - start)
    print(f"  stages alone: decode+preprocess {decode_rate:.0f} images/s on one thread, "
          f"onnxruntime network {network_rate:.1f} images/s")
    text = load_text_encoder("all-MiniLM-L6-v2", device="cpu")
    text_rate = best_rate(text.encode, sentences(), 64)
    library_rate = best_rate(lambda items, batch_size, progress: text.model.encode(items, batch_size=batch_size),
                             sentences(), 64)
    print(f"  sentence-transformers' own encode, same batches: {library_rate:.1f} sentences/s")
    failed = False
    for what, rate, goal, unit in [("efficientnet-lite2 (onnxruntime, batch 32, from files)", image_rate,
                                    IMAGE_GOAL, "images/s"),
                                   ("all-MiniLM-L6-v2 (batch 64)", text_rate, TEXT_GOAL, "sentences/s")]:
        ok = rate >= goal
        failed |= not ok
        print(f"{what}: {rate:.1f} {unit} (goal >= {goal:.0f}) {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
