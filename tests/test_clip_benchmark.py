"""CLIP_benchmark's own evaluation of the demo ASIF model reports what asif_nb's evaluate(reduce="mean") reports."""
import numpy as np
import pytest
import torch

import asif_nb
from asif_nb.clip_benchmark import EvalDataset, model as asif_for_clip_benchmark
from asif_nb.pipeline import embed_eval, evaluate
# installed by `make setup` (requirements-offline.txt): a missing package fails here, it is never skipped
from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval


@pytest.fixture(scope="module")
def asif():
    return asif_nb.load("demo", device="cpu", progress=False)


def _accuracy_numpy2(output, target, topk=(1,)):
    # CLIP_benchmark 1.6.2's accuracy() calls float() on a one-element array, which NumPy 2 refuses; same arithmetic
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def _no_ties(scores):
    top = np.sort(scores, axis=1)
    return bool((top[:, -1] > top[:, -2]).all())


def test_zeroshot_classification_matches_asif_nb_evaluate(asif, monkeypatch):
    monkeypatch.setattr(zeroshot_classification, "accuracy", _accuracy_numpy2)
    evalset = asif_nb.load_eval("fashion-mnist", n=300)
    ours = evaluate(asif.model, embed_eval(evalset, asif.image_encoder, asif.text_encoder, progress=False),
                    reduce="mean")
    model, transform, tokenizer = asif_for_clip_benchmark(asif)
    loader = torch.utils.data.DataLoader(EvalDataset(evalset, transform), batch_size=64)
    theirs = zeroshot_classification.evaluate(model, loader, tokenizer, evalset.class_names, evalset.templates,
                                              device="cpu", amp=True)
    assert theirs["acc1"] == pytest.approx(ours["acc1"], abs=1e-12)
    assert theirs["acc5"] == pytest.approx(ours["acc5"], abs=1e-12)
    assert theirs["mean_per_class_recall"] == pytest.approx(ours["mean_per_class_recall"], abs=1e-12)
    assert 0.2 < ours["acc1"] < 1.0  # far above chance (0.1): the adapter really classifies


def test_zeroshot_retrieval_matches_asif_nb_evaluate(asif):
    evalset = asif_nb.load_eval("tuxpaint-heldout")
    embedded = embed_eval(evalset, asif.image_encoder, asif.text_encoder, progress=False)
    ours = evaluate(asif.model, embedded)
    assert _no_ties(asif.model.similarity(embedded.images, embedded.captions))  # ties are where harnesses differ
    model, transform, tokenizer = asif_for_clip_benchmark(asif)
    loader = torch.utils.data.DataLoader(EvalDataset(evalset, transform, retrieval=True), batch_size=32,
                                         collate_fn=lambda batch: (torch.stack([b[0] for b in batch]),
                                                                   [b[1] for b in batch]))
    theirs = zeroshot_retrieval.evaluate(model, loader, tokenizer, device="cpu", amp=True, recall_k_list=[1, 5])
    for key in ("image_retrieval_recall@1", "image_retrieval_recall@5", "text_retrieval_recall@1",
                "text_retrieval_recall@5"):
        assert theirs[key] == pytest.approx(ours[key], abs=1e-6), key


def test_the_adapter_refuses_what_it_cannot_use(asif):
    with pytest.raises(TypeError, match="asif_nb.Asif"):
        asif_for_clip_benchmark(asif.model)
    model, _, _ = asif_for_clip_benchmark(asif)
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text(torch.zeros(2, 8, dtype=torch.long))


def test_the_readme_example_runs_and_reports_what_evaluate_reports(asif, monkeypatch, capsys):
    import ast
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### ASIF inside CLIP_benchmark", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.setattr(zeroshot_classification, "accuracy", zeroshot_classification.accuracy)  # restored afterwards
    monkeypatch.setattr(asif_nb, "load", lambda *args, **kwargs: asif)  # the fixture's model: no second load
    exec(compile(example, "README.md", "exec"), {})
    printed = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    evalset = asif_nb.load_eval("fashion-mnist", n=300)
    ours = evaluate(asif.model, embed_eval(evalset, asif.image_encoder, asif.text_encoder, progress=False),
                    reduce="mean")
    assert printed["acc1"] == pytest.approx(ours["acc1"], abs=1e-12)
    assert printed["mean_per_class_recall"] == pytest.approx(ours["mean_per_class_recall"], abs=1e-12)


def test_eval_dataset_refuses_retrieval_on_a_set_without_captions_and_serves_labels():
    evalset = asif_nb.load_eval("fashion-mnist", n=3)
    with pytest.raises(ValueError, match="has no captions"):
        EvalDataset(evalset, transform=lambda image: image, retrieval=True)
    data = EvalDataset(evalset, transform=lambda image: image.size)
    assert len(data) == 3 and data.classes == list(evalset.class_names)
    assert [data[i][1] for i in range(3)] == [int(label) for label in evalset.labels]
