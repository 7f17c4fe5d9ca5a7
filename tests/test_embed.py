"""python -m asif_nb.embed against a local fake hub: full runs, kill -9 and resume, bad data, damaged shards,
bundles that are verified, shared and served to AsifModel from disk."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from asif_nb import AsifModel, load_bundle, push_bundle
from asif_nb.bundle import BundleError, ShardedRows, read_manifest
from asif_nb.embed import embed_collection
from asif_nb.encoders import load_image_encoder, load_text_encoder
from asif_nb.stream import HUB_DATASETS, ShardError
from asif_nb.transfer import Limits

REPO, PATTERN = HUB_DATASETS["cc12m"]["repo"], HUB_DATASETS["cc12m"]["pattern"]
FAST = Limits(connect_timeout=5, read_timeout=10, min_rate=1.0, grace=30.0, retries=1, backoff=0.01)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def encoders():
    return load_image_encoder("efficientnet-lite2", device="cpu"), load_text_encoder("all-MiniLM-L6-v2", device="cpu")


def _samples(make_jpeg, shard, n, bad=()):
    samples = []
    for i in range(n):
        key = f"{shard:04d}{i:05d}"
        sample = {"__key__": key, "jpg": make_jpeg(shard * 1000 + i), "txt": f"photo {shard}-{i} of a thing",
                  "json": json.dumps({"key": key})}
        if i in bad:
            sample["jpg"] = b"this is not a jpeg"
        samples.append(sample)
    return samples


def _publish(hub, make_shard, make_jpeg, sizes, bad=None):
    for shard, n in enumerate(sizes):
        hub.add_file(REPO, PATTERN.format(shard=shard), make_shard(_samples(make_jpeg, shard, n, (bad or {}).get(shard, ()))))


def _files(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def _embed_cli(out, n_pairs, env, wait=True):
    command = [sys.executable, "-m", "asif_nb.embed", "cc12m", "--image-encoder", "efficientnet-lite2",
               "--text-encoder", "all-MiniLM-L6-v2", "--n-pairs", str(n_pairs), "--shard-rows", "8",
               "--batch-size", "4", "--device", "cpu", "--out", str(out)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    return process


def test_a_full_run_writes_a_verified_bundle_and_no_image_file(fake_hub, make_shard, make_jpeg, encoders, tmp_path):
    _publish(fake_hub, make_shard, make_jpeg, [10, 10], bad={0: [3]})
    out = embed_collection("cc12m", *encoders, n_pairs=15, shard_rows=6, batch_size=4, out=tmp_path / "b",
                           limits=FAST, progress=False)
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["rows"] == 15 and [s["rows"] for s in manifest["shards"]] == [6, 6, 3]
    assert manifest["source"]["revision"] == fake_hub.commit(REPO)
    assert manifest["encoders"]["image"]["name"] == "efficientnet-lite2" and manifest["encoders"]["text"]["dim"] == 384
    assert manifest["skipped"] == 1
    skipped = [s for shard in manifest["shards"] for s in shard["skipped"]]
    assert skipped[0]["key"] == "000000003" and "Cannot read image" in skipped[0]["reason"]
    anchors = load_bundle(out)
    assert anchors.collection.ids[:4] == ["000000000", "000000001", "000000002", "000000004"]
    assert anchors.collection.captions[3] == "photo 0-4 of a thing"
    # the rows are the encoders' own embeddings of those pairs (stored as float16)
    image = encoders[0].encode([make_jpeg(4)], progress=False)[0]
    text = encoders[1].encode(["photo 0-4 of a thing"], progress=False)[0]
    np.testing.assert_allclose(anchors.anchor_images[3].astype(np.float32), image, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(anchors.anchor_texts[3].astype(np.float32), text, rtol=2e-3, atol=2e-3)
    leftovers = [p for p in Path(os.environ["ASIF_CACHE"]).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert leftovers == [] and not [p for p in out.rglob("*") if p.suffix.lower() in (".jpg", ".png")]


def test_kill_9_mid_run_then_the_same_command_resumes_to_a_byte_identical_bundle(fake_hub, make_shard, make_jpeg,
                                                                                   tmp_path):
    _publish(fake_hub, make_shard, make_jpeg, [10, 10, 10, 10])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    clean = tmp_path / "clean"
    _embed_cli(clean, 30, env)
    assert read_manifest(clean)["complete"]

    gate = threading.Event()
    fake_hub.fault(REPO, PATTERN.format(shard=2), gate=gate)  # the run stalls after its first shard is recorded
    killed = tmp_path / "killed"
    process = _embed_cli(killed, 30, env, wait=False)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            manifest = read_manifest(killed) if (killed / "bundle.json").exists() else None
            if manifest and manifest["shards"]:
                break
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        gate.set()
    partial = read_manifest(killed)
    assert not partial["complete"] and 1 <= len(partial["shards"]) < 4
    _embed_cli(killed, 30, env)
    assert _files(killed) == _files(clean)


def test_a_corrupt_member_is_named_and_nothing_is_recorded_as_complete(fake_hub, make_shard, make_jpeg, encoders,
                                                                       tmp_path):
    import io
    import tarfile

    _publish(fake_hub, make_shard, make_jpeg, [10, 10])
    name = PATTERN.format(shard=1)
    good = fake_hub.repos[("dataset", REPO)].files[name]
    with tarfile.open(fileobj=io.BytesIO(good)) as archive:
        offset = archive.getmembers()[13].offset
    fake_hub.fault(REPO, name, corrupt=good[:offset] + b"\x7f" * 512 + good[offset + 512:])
    with pytest.raises(ShardError, match=f"shard 1 .*{name}"):
        embed_collection("cc12m", *encoders, n_pairs=20, shard_rows=6, out=tmp_path / "b", limits=FAST, progress=False)
    manifest = read_manifest(tmp_path / "b")
    assert not manifest["complete"] and manifest["rows"] == 12  # shards 0 and 1; member 13 lies in the third
    with pytest.raises(BundleError, match="incomplete"):
        load_bundle(tmp_path / "b")
    assert len(load_bundle(tmp_path / "b", n_pairs=12).collection) == 12

    fake_hub.faults.clear()  # the mirror is repaired: the same call finishes the bundle
    out = embed_collection("cc12m", *encoders, n_pairs=20, shard_rows=6, out=tmp_path / "b", limits=FAST,
                           progress=False)
    assert read_manifest(out)["complete"] and len(load_bundle(out).collection) == 20


def test_extending_a_bundle_equals_embedding_the_larger_prefix_at_once(fake_hub, make_shard, make_jpeg, encoders,
                                                                       tmp_path):
    _publish(fake_hub, make_shard, make_jpeg, [10, 10])
    options = dict(shard_rows=4, batch_size=3, limits=FAST, progress=False)
    embed_collection("cc12m", *encoders, n_pairs=7, out=tmp_path / "grown", **options)
    embed_collection("cc12m", *encoders, n_pairs=18, out=tmp_path / "grown", **options)
    embed_collection("cc12m", *encoders, n_pairs=18, out=tmp_path / "direct", **options)
    assert _files(tmp_path / "grown") == _files(tmp_path / "direct")
    # asking for fewer pairs returns the bundle unchanged; load_bundle takes the prefix
    embed_collection("cc12m", *encoders, n_pairs=5, out=tmp_path / "grown", **options)
    assert _files(tmp_path / "grown") == _files(tmp_path / "direct")
    assert load_bundle(tmp_path / "grown", n_pairs=5).collection.ids == load_bundle(tmp_path / "direct").collection.ids[:5]


def test_another_source_or_encoder_never_mixes_into_an_existing_bundle(fake_hub, make_shard, make_jpeg, encoders,
                                                                       tmp_path):
    _publish(fake_hub, make_shard, make_jpeg, [6])
    embed_collection("cc12m", *encoders, n_pairs=4, shard_rows=4, out=tmp_path / "b", limits=FAST, progress=False)
    (tmp_path / "p-0.tar").write_bytes(make_shard(_samples(make_jpeg, 7, 6)))
    with pytest.raises(BundleError, match="another collection|another source"):
        embed_collection(f"wds:{tmp_path}/p-*.tar", *encoders, n_pairs=4, shard_rows=4, out=tmp_path / "b",
                         progress=False)


def test_load_bundle_refuses_a_damaged_shard(fake_hub, make_shard, make_jpeg, encoders, tmp_path):
    _publish(fake_hub, make_shard, make_jpeg, [6])
    out = embed_collection("cc12m", *encoders, n_pairs=6, shard_rows=4, out=tmp_path / "b", limits=FAST,
                           progress=False)
    path = out / "texts-00001.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="texts-00001.npy does not match the sha256"):
        load_bundle(out)


def test_asif_model_over_a_memory_mapped_bundle_equals_the_in_memory_model(fake_hub, make_shard, make_jpeg, encoders,
                                                                            tmp_path):
    _publish(fake_hub, make_shard, make_jpeg, [12])
    out = embed_collection("cc12m", *encoders, n_pairs=12, shard_rows=5, out=tmp_path / "b", dtype="float32",
                           limits=FAST, progress=False)
    anchors = load_bundle(out)
    assert isinstance(anchors.anchor_images, ShardedRows) and anchors.anchor_images.shape == (12, 1280)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((5, 1280)).astype(np.float32)
    prompts = rng.standard_normal((6, 384)).astype(np.float32)
    on_disk = AsifModel(anchors.anchor_images, anchors.anchor_texts, k=4, p=3, device="cpu")
    in_memory = AsifModel(np.asarray(anchors.anchor_images), np.asarray(anchors.anchor_texts), k=4, p=3, device="cpu")
    np.testing.assert_array_equal(on_disk.similarity(queries, prompts), in_memory.similarity(queries, prompts))


def test_a_pushed_bundle_loads_back_from_the_hub_and_from_an_https_url(fake_hub, make_shard, make_jpeg, encoders,
                                                                       tmp_path):
    _publish(fake_hub, make_shard, make_jpeg, [9])
    out = embed_collection("cc12m", *encoders, n_pairs=9, shard_rows=4, out=tmp_path / "b", limits=FAST,
                           progress=False)
    commit = push_bundle(out, "teacher/cc12m-demo-bundle")
    local = load_bundle(out)
    for location in ("teacher/cc12m-demo-bundle", f"teacher/cc12m-demo-bundle@{commit}",
                     f"{fake_hub.url}/datasets/teacher/cc12m-demo-bundle/resolve/{commit}/"):
        shared = load_bundle(location)
        assert shared.collection.ids == local.collection.ids
        np.testing.assert_array_equal(np.asarray(shared.anchor_images), np.asarray(local.anchor_images))
        np.testing.assert_array_equal(np.asarray(shared.anchor_texts), np.asarray(local.anchor_texts))
    (out / "bundle.json").write_text(json.dumps({**read_manifest(out), "complete": False}))
    with pytest.raises(BundleError, match="incomplete"):
        push_bundle(out, "teacher/another")


def test_the_command_line_reports_errors_without_a_traceback(fake_hub, tmp_path):
    result = subprocess.run([sys.executable, "-m", "asif_nb.embed", "cc12m", "--image-encoder", "efficientnet-lite2",
                             "--text-encoder", "all-MiniLM-L6-v2", "--n-pairs", "4", "--out", str(tmp_path / "b"),
                             "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ})
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr and REPO in result.stderr


def test_decoding_on_the_device_keeps_the_rows_and_gets_its_own_identity(fake_hub, make_shard, make_jpeg, encoders,
                                                                        tmp_path):
    import io as _io

    from PIL import Image
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       image_size=224, patch_size=16), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    vit = load_image_encoder(f"hf:{tmp_path / 'vit'}", device="cpu", preprocessing="authors")
    samples = _samples(make_jpeg, 0, 8, bad=[2])
    png = _io.BytesIO()
    Image.open(_io.BytesIO(make_jpeg(99))).save(png, format="PNG")
    samples[5] = {"__key__": samples[5]["__key__"], "png": png.getvalue(), "txt": "a png among jpegs"}
    fake_hub.add_file(REPO, PATTERN.format(shard=0), make_shard(samples))
    options = dict(n_pairs=6, shard_rows=4, batch_size=3, limits=FAST, progress=False)
    by_pil = load_bundle(embed_collection("cc12m", vit, encoders[1], out=tmp_path / "pil", decode="pil", **options))
    by_torch = load_bundle(embed_collection("cc12m", vit, encoders[1], out=tmp_path / "tv", decode="torchvision",
                                            **options))
    assert by_torch.collection.ids == by_pil.collection.ids and "000000002" not in by_pil.collection.ids
    assert by_torch.image_encoder["features_id"] != by_pil.image_encoder["features_id"]
    assert "decode_jpeg" in by_torch.image_encoder["decode"]
    np.testing.assert_allclose(np.asarray(by_torch.anchor_images, dtype=np.float32),
                               np.asarray(by_pil.anchor_images, dtype=np.float32), atol=0.05)
    with pytest.raises(ValueError, match="decode='pil'"):
        embed_collection("cc12m", encoders[0], encoders[1], out=tmp_path / "x", decode="torchvision", **options)


def test_a_bundle_listed_in_the_manifest_is_pinned_by_its_bundle_json_hash(fake_hub, make_shard, make_jpeg, encoders,
                                                                           tmp_path, monkeypatch):
    import hashlib

    from asif_nb import download, fetch

    _publish(fake_hub, make_shard, make_jpeg, [5])
    out = embed_collection("cc12m", *encoders, n_pairs=5, shard_rows=4, out=tmp_path / "b", limits=FAST,
                           progress=False)
    commit = push_bundle(out, "teacher/listed")
    document = json.loads(download.MANIFEST_PATH.read_text())
    digest = hashlib.sha256((out / "bundle.json").read_bytes()).hexdigest()
    entry = {"id": "teacher-cc12m-5", "description": "a shared bundle", "kind": "bundle", "count": 5, "licence": "-",
             "citation": "-", "version": commit, "files": [{"name": "bundle.json", "sha256": digest, "bytes": None}],
             "sources": [{"type": "hf", "repo": "teacher/listed", "revision": commit}]}
    document["artifacts"].append(entry)
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    monkeypatch.setattr(download, "MANIFEST_PATH", tmp_path / "manifest.json")
    assert load_bundle("teacher-cc12m-5").collection.ids == load_bundle(out).collection.ids
    with pytest.raises(ValueError, match="load_bundle"):
        fetch("teacher-cc12m-5")
    entry["files"][0]["sha256"] = "0" * 64
    entry["id"] = "tampered"
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(Exception, match="tampered|bundle.json"):
        load_bundle("tampered")
