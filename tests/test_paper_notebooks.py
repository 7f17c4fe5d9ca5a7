"""The paper profile end to end, offline: notebooks 01 and 02 run by papermill with profile="paper" against a local
fake hub (the CC12M shards) and a miniature of the authors' precomputed ImageNet tar, the offline encoders
substituted by parameters. What they report must equal a direct computation from the same bundle and tar."""
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from asif_nb import AsifModel, load_bundle, load_eval, load_precomputed
from asif_nb.data import IMAGENET_TEMPLATES, load_collection
from asif_nb.encoders import load_image_encoder, load_text_encoder
from asif_nb.pipeline import evaluate, prompts_for
from asif_nb.stream import HUB_DATASETS

ROOT = Path(__file__).resolve().parents[1]
N_PAIRS, K, P = 48, 10, 3.0


@pytest.fixture(scope="module")
def encoders():
    return load_image_encoder("efficientnet-lite2", device="cpu"), load_text_encoder("all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="module")
def authors_tar(tmp_path_factory, encoders):
    """The authors' layout, with encoder classes the mapping table does not know (the notebook names ours)."""
    image_encoder, text_encoder = encoders
    samples = load_eval("imagenet-samples")
    folder = tmp_path_factory.mktemp("authors") / "EmbeddedImagenetTest"
    folder.mkdir()
    torch.save(torch.from_numpy(image_encoder.encode(samples.images, progress=False)), folder / "zimgs_EffNetLite2.pt")
    prompts = prompts_for(samples.class_names, IMAGENET_TEMPLATES)
    torch.save(torch.from_numpy(text_encoder.encode(prompts, batch_size=256, progress=False)), folder / "ztxts_MiniLM.pt")
    with open(folder / "labels.pkl", "wb") as handle:
        pickle.dump(list(torch.from_numpy(samples.labels)), handle)  # as their DataLoader loop left them
    tar = folder.parent / "EmbeddedImagenetTest.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(folder, arcname=folder.name)
    return tar


def _cc12m_from_the_demo_pairs(hub):
    """Real pictures and captions (the demo collection's, as JPEGs) in CC12M's webdataset layout."""
    from PIL import Image

    from fakehub import tar_shard

    pairs = load_collection("demo", n_pairs=64)
    spec = HUB_DATASETS["cc12m"]
    for shard in range(2):
        samples = []
        for i, pair in enumerate(pairs[shard * 32:(shard + 1) * 32]):
            buffer = io.BytesIO()
            pair.load_image().save(buffer, format="JPEG", quality=92)
            samples.append({"__key__": f"{shard:04d}{i:05d}", "jpg": buffer.getvalue(), "txt": pair.caption,
                            "json": json.dumps({"caption": pair.caption})})
        hub.add_file(spec["repo"], spec["pattern"].format(shard=shard), tar_shard(samples))


def test_notebooks_01_and_02_run_the_paper_profile_offline(fake_hub, authors_tar, encoders, tmp_path, monkeypatch):
    import papermill

    _cc12m_from_the_demo_pairs(fake_hub)
    import shutil

    from asif_nb.settings import cache_dir

    # the encoders fixture exported EfficientNet-Lite2 to ONNX in the usual cache; the notebooks' kernels reuse that
    # export (it is checked against torch when it loads) instead of exporting it again
    shutil.copytree(cache_dir() / "onnx", tmp_path / "cache" / "onnx")
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ASIF_RESULTS", str(tmp_path / "results"))
    parameters = {"profile": "paper", "image_encoder_name": "efficientnet-lite2", "text_encoder_name": "all-MiniLM-L6-v2",
                  "n_pairs": N_PAIRS, "precomputed": str(authors_tar), "evals": "imagenet", "device": "cpu",
                  "cache_on_drive": False}
    for notebook, extra in (("01_embeddings", {}), ("02_zero_shot_classification", {"k": K, "p": P})):
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(tmp_path / f"{notebook}.ipynb"),
                                   parameters={**parameters, **extra}, cwd=str(ROOT / "notebooks"),
                                   kernel_name="python3", progress_bar=False)
    first = json.loads((tmp_path / "results" / "01_embeddings.json").read_text())
    second = json.loads((tmp_path / "results" / "02_zero_shot_classification.json").read_text())
    assert first["profile"] == "paper" and first["n_pairs"] == N_PAIRS
    assert first["eval_sizes"] == {"imagenet-test": 20}

    # the same numbers, computed directly from the bundle the notebooks made and the authors' tar
    bundles = list((tmp_path / "cache" / "bundles").iterdir())
    assert len([b for b in bundles if b.is_dir()]) == 1
    anchors = load_bundle(next(b for b in bundles if b.is_dir()))
    assert len(anchors.collection) == N_PAIRS
    assert anchors.collection.captions[:3] == load_collection("demo", n_pairs=3).captions
    embedded = load_precomputed(authors_tar, image_encoder=encoders[0], text_encoder=encoders[1])
    model = AsifModel(anchors.anchor_images, anchors.anchor_texts, k=K, p=P, device="cpu")
    direct = evaluate(model, embedded)
    (reported,) = second["results"]
    assert reported["eval"] == "imagenet-test" and reported["n_images"] == 20
    assert reported["acc1"] == direct["acc1"] and reported["acc5"] == direct["acc5"]
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")]
