"""The paper's anchor embedding at GPU speed (issue #10): ViT-B/16 + a BERT-base sentence encoder, both with
random weights from configs written here (no hub), fed by the real streaming embedder with JPEGs decoded on the
GPU (nvjpeg, batched) from synthetic 512-px webdataset shards on local disk.

    python benchmarks/device_paper_scale.py               # on a machine with a GPU (the device tool)
    python benchmarks/device_paper_scale.py --smoke       # a tiny CPU run that only checks the script works

Prints: images/s of GPU decode + authors' preprocessing + ViT-B/16 forward alone; pairs/s of the whole
``embed_collection`` (both halves, float16 bundle shards written); and the projected time for the paper's 1.6M pairs
at each rate. Random weights cost the same arithmetic as trained ones. Not part of ``make bench`` (no GPU in CI).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PAPER_PAIRS = 1_600_000


def synthetic_shards(folder: Path, n_images: int, per_shard: int) -> None:
    """512-px JPEGs (smooth random colour fields with noise: they compress like photos) in webdataset shards."""
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:384, 0:512] / 512
    for shard in range((n_images + per_shard - 1) // per_shard):
        with tarfile.open(folder / f"part-{shard:05d}.tar", "w") as archive:
            for i in range(min(per_shard, n_images - shard * per_shard)):
                key = f"{shard:05d}{i:05d}"
                waves = [np.sin(2 * np.pi * (rng.random() * 4 * x + rng.random() * 4 * y) + rng.random() * 6)
                         for _ in range(3)]
                pixels = (np.stack(waves, -1) + 1) * 110 + rng.normal(0, 12, (384, 512, 3))
                buffer = io.BytesIO()
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
                for suffix, data in (("jpg", buffer.getvalue()),
                                     ("txt", f"a synthetic photo number {key} for timing".encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))


def random_encoders(folder: Path, smoke: bool, device: str):
    """ViT-B/16 (224 px, the authors' preprocessing) and a BERT-base-sized sentence encoder, random weights."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTModel

    from asif_nb.encoders import load_image_encoder, load_text_encoder

    torch.manual_seed(0)
    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37) if smoke else {}
    ViTModel(ViTConfig(image_size=224, patch_size=16, **size), add_pooling_layer=False).save_pretrained(folder / "vit")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(2000)] + \
        "a synthetic photo number for timing".split()
    (folder / "vocab.txt").write_text("\n".join(words))
    BertModel(BertConfig(vocab_size=len(words), **size)).save_pretrained(folder / "bert")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder / "bert")
    try:  # sentence-transformers >= 6 moved the modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    word = Transformer(str(folder / "bert"), max_seq_length=64)
    dimension = (getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)()
    SentenceTransformer(modules=[word, Pooling(dimension)]).save(str(folder / "st"))
    image = load_image_encoder(f"hf:{folder / 'vit'}", device=device, preprocessing="authors")
    text = load_text_encoder(f"sentence-transformers:{folder / 'st'}", device=device)
    return image, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and few images, on the CPU")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    import torch

    from asif_nb.embed import _gpu_pixels, _jpeg_or_pixels, embed_collection

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no GPU here: run it through the device tool, or with --smoke to check the script")
        return 2
    n_images = args.images or (96 if args.smoke else 16_384)
    batch = 16 if args.smoke else args.batch_size
    work = Path(tempfile.mkdtemp(prefix="paper-scale-"))
    os.environ["ASIF_CACHE"] = str(work / "cache")
    (work / "shards").mkdir()
    started = time.perf_counter()
    synthetic_shards(work / "shards", n_images, per_shard=1024 if not args.smoke else 32)
    print(f"{n_images} synthetic 512-px JPEGs written in {time.perf_counter() - started:.0f} s; device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    image, text = random_encoders(work, args.smoke, device)

    # 1. The image side alone: GPU decode + the authors' preprocessing + ViT-B/16 forward (fp16 autocast).
    import tarfile

    jpegs = []
    with tarfile.open(next((work / "shards").glob("*.tar"))) as archive:
        jpegs = [archive.extractfile(m).read() for m in archive if m.name.endswith(".jpg")]
    items = [_jpeg_or_pixels(data) for data in jpegs[:batch]]
    image.forward(_gpu_pixels(items, image))  # warm-up: cuDNN, nvjpeg handles
    if device == "cuda":
        torch.cuda.synchronize()
    rounds = 3 if args.smoke else 20
    start = time.perf_counter()
    for _ in range(rounds):
        image.forward(_gpu_pixels(items, image))
    if device == "cuda":
        torch.cuda.synchronize()
    image_rate = rounds * len(items) / (time.perf_counter() - start)
    print(f"image side alone (decode on {device} + preprocessing + ViT-B/16): {image_rate:,.0f} images/s "
          f"-> 1.6M pairs in {PAPER_PAIRS / image_rate / 60:.1f} min")

    # 2. The whole streaming embedder: both halves, float16 bundle shards written.
    start = time.perf_counter()
    out = embed_collection(f"wds:{work / 'shards'}/part-*.tar", image, text, n_pairs=n_images, out=work / "bundle",
                           shard_rows=4096 if not args.smoke else 32, batch_size=batch, device=device,
                           decode="torchvision", progress=False)
    pair_rate = n_images / (time.perf_counter() - start)
    size = sum(p.stat().st_size for p in out.iterdir() if p.suffix == ".npy")
    print(f"embed_collection end to end (GPU decode, both encoders, bundle written): {pair_rate:,.0f} pairs/s "
          f"-> 1.6M pairs in {PAPER_PAIRS / pair_rate / 60:.1f} min; {size / n_images * 1e5 / 1e6:.0f} MB per 100k "
          "pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
