"""Anchor bundles embedded on Ray (asif_nb.ray_embed) on a local 2-CPU cluster over local shards: the very bundle
(every file, byte for byte) that the single-process embed writes, with bad samples, batches that do not divide a
shard, and a run of the command line resumed from a bundle the other pipeline started and cut by --n-pairs."""
import json
from pathlib import Path

import numpy as np
import pytest
import ray

from asif_nb.bundle import read_manifest
from asif_nb.embed import embed_collection, main
from asif_nb.ray_embed import embed_collection_ray

IMAGE, TEXT = "efficientnet-lite2", "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))


def _shards(folder, make_shard, make_jpeg, sizes, bad=()):
    """Local webdataset shards; samples in ``bad`` (shard, index) carry bytes that are no image, and every fourth
    caption is long so that text batches are padded differently."""
    for shard, n in enumerate(sizes):
        samples = []
        for i in range(n):
            caption = f"photo {shard}-{i} of a thing" + (" with many more words in it" * (i % 4 == 0))
            image = b"not an image" if (shard, i) in bad else make_jpeg(shard * 100 + i)
            samples.append({"__key__": f"{shard:03d}{i:04d}", "jpg": image, "txt": caption,
                            "json": json.dumps({"i": i})})
        (folder / f"part-{shard:03d}.tar").write_bytes(make_shard(samples))
    return f"wds:{folder}/part-*.tar"


def _files(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def test_the_ray_bundle_is_the_single_process_bundle_byte_for_byte(cluster, make_shard, make_jpeg, tmp_path):
    source = _shards(tmp_path, make_shard, make_jpeg, [7, 6, 5], bad={(0, 2), (1, 5), (2, 4)})
    options = dict(shard_rows=5, batch_size=3, dtype="float16")
    single = embed_collection(source, IMAGE, TEXT, device="cpu", out=tmp_path / "single", progress=False, **options)
    ray_out = embed_collection_ray(source, IMAGE, TEXT, out=tmp_path / "ray", progress=False, **options)
    manifest = read_manifest(ray_out)
    assert manifest["complete"] and manifest["exhausted"] and manifest["rows"] == 15 and manifest["skipped"] == 3
    assert _files(ray_out) == _files(single)


def test_the_command_resumes_a_bundle_the_other_pipeline_started(cluster, make_shard, make_jpeg, tmp_path, capsys):
    source = _shards(tmp_path, make_shard, make_jpeg, [6, 6], bad={(1, 0)})
    options = dict(shard_rows=4, batch_size=3, dtype="float32")
    cut = embed_collection(source, IMAGE, TEXT, device="cpu", n_pairs=10, out=tmp_path / "cut", progress=False,
                           **options)
    embed_collection(source, IMAGE, TEXT, device="cpu", n_pairs=4, out=tmp_path / "grown", progress=False, **options)
    argv = [source, "--image-encoder", IMAGE, "--text-encoder", TEXT, "--n-pairs", "10", "--shard-rows", "4",
            "--batch-size", "3", "--dtype", "float32", "--out", str(tmp_path / "grown"), "--ray-address", "local"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "grown")
    manifest = read_manifest(tmp_path / "grown")
    assert manifest["rows"] == 10 and manifest["skipped"] == 1 and not manifest["exhausted"]
    assert _files(tmp_path / "grown") == _files(cut)
    rows = np.load(tmp_path / "grown" / "images-00002.npy")
    assert rows.shape == (2, 1280) and rows.dtype == np.float32


def test_encoder_objects_and_bad_options_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="given by name"):
        embed_collection_ray("wds:x.tar", object(), TEXT, out=tmp_path / "b")
    with pytest.raises(ValueError, match="batch_size=0"):
        embed_collection_ray("wds:x.tar", IMAGE, TEXT, batch_size=0, out=tmp_path / "b")
