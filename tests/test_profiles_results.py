import json

import pytest

from asif_nb import get_profile, save_results, load_results, save_figure, PROFILES
from asif_nb.pipeline import cache_key, prompts_for
from asif_nb.runner import summary_table


def test_profiles_share_one_shape_and_demo_is_offline():
    assert set(PROFILES) == {"demo", "paper"}
    assert PROFILES["demo"].needs_internet is False and PROFILES["paper"].needs_internet is True
    assert (PROFILES["paper"].k, PROFILES["paper"].p, PROFILES["paper"].n_pairs) == (800, 8.0, 1_600_000)


def test_get_profile_overrides_and_ignores_none():
    prof = get_profile("demo", k=7, p=None, evals=["fashion-mnist"])
    assert prof.k == 7 and prof.p == PROFILES["demo"].p and prof.evals == ("fashion-mnist",)
    with pytest.raises(ValueError, match="profile='clip'"):
        get_profile("clip")
    with pytest.raises(ValueError, match="unknown fields"):
        get_profile("demo", kk=3)


def test_the_paper_profile_embeds_images_the_authors_way():
    assert PROFILES["paper"].image_preprocessing == "authors" and PROFILES["demo"].image_preprocessing is None
    assert get_profile("paper", k=5).image_preprocessing == "authors"
    assert get_profile("paper", image_encoder="vit-b16-in21k").image_preprocessing == "authors"
    # another image encoder takes its own default unless the preprocessing is overridden too
    assert get_profile("paper", image_encoder="efficientnet-lite2").image_preprocessing is None
    assert get_profile("paper", image_encoder="hf:/my/vit", image_preprocessing="authors").image_preprocessing == (
        "authors")


def test_prompts_are_class_major():
    assert prompts_for(["cat", "dog"], ["a {c}.", "the {c}!"]) == ["a cat.", "the cat!", "a dog.", "the dog!"]
    with pytest.raises(ValueError, match="templates"):
        prompts_for(["cat"], [])


def test_cache_key_is_a_safe_file_name():
    assert cache_key("folder:/home/me/pairs", "images") == "folder-home-me-pairs-images"


def test_results_round_trip_and_summary(tmp_path, monkeypatch):
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("ASIF_RESULTS", str(tmp_path))
    path = save_results("02_x", {"summary": {"acc1": np.float32(0.5), "n": np.int64(3)}, "nan": float("nan")})
    data = json.loads(path.read_text())
    assert data["summary"] == {"acc1": 0.5, "n": 3} and data["nan"] is None
    assert load_results("02_x")["notebook"] == "02_x"
    fig, ax = plt.subplots()
    assert save_figure(fig, "f").read_bytes()[:4] == b"\x89PNG"
    table = summary_table([{"notebook": "02_x", "status": "ok", "seconds": 1.0},
                           {"notebook": "03_y", "status": "FAILED: boom", "seconds": 2.0}], tmp_path)
    assert "acc1=0.500" in table and "FAILED" in table
    with pytest.raises(FileNotFoundError, match="run notebook 03_y"):
        load_results("03_y")
