"""The figures of notebooks 07 and 08 draw exactly the numbers they are given (read back from the axes)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from asif_nb import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _lines(ax):
    return {line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
            for line in ax.get_lines()}


def test_risk_coverage_draws_the_curve_and_marks_the_point():
    curve = {"coverage": np.array([1.0, 0.6, 0.2]), "risk": np.array([0.5, 0.3, 0.0])}
    point = {"coverage": 0.6, "risk": 0.3, "threshold": 0.0123}
    lines = _lines(plots.plot_risk_coverage(curve, point).axes[0])
    x, y = lines["t = 0.0123"]
    assert x.tolist() == [0.6] and y.tolist() == [0.3]
    curve_line = next(value for key, value in lines.items() if key != "t = 0.0123")
    assert curve_line[0].tolist() == [1.0, 0.6, 0.2] and curve_line[1].tolist() == [0.5, 0.3, 0.0]


def test_unknown_rates_are_the_fractions_below_each_threshold():
    inside, outside = np.array([0.0, 0.2, 0.4, 0.8]), np.array([0.0, 0.0, 0.1])
    ax = plots.plot_unknown_rates(inside, outside, threshold=0.3, in_label="in", out_label="out", n_points=5).axes[0]
    lines = _lines(ax)
    grid, in_rate = lines["in (4)"]
    assert grid.tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert in_rate.tolist() == [0.0, 0.25, 0.5, 0.75, 0.75]  # "unknown" = best score strictly below the threshold
    assert lines["out (3)"][1].tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0, 1.0])
    threshold_line = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert np.asarray(threshold_line[0].get_xdata()).tolist() == [0.3, 0.3]
    with pytest.raises(ValueError, match="at least one score"):
        plots.plot_unknown_rates([], [1.0])


def test_usage_histogram_counts_every_anchor_once():
    counts = np.array([0, 0, 0, 1, 5, 5, 40])
    ax = plots.plot_usage_histogram(counts, bins=4).axes[0]
    assert sum(patch.get_height() for patch in ax.patches) == len(counts)


def test_pruning_plot_draws_both_strategies_and_the_used_point():
    rows = [{"fraction": 1.0, "acc_most_used": 0.5, "acc_random": 0.5},
            {"fraction": 0.1, "acc_most_used": 0.45, "acc_random": 0.2}]
    ax = plots.plot_pruning(rows, used=(0.3, 0.5), chance=0.1).axes[0]
    lines = _lines(ax)
    assert lines["keep the most used"][1].tolist() == [0.5, 0.45]
    assert lines["keep at random"][1].tolist() == [0.5, 0.2]
    assert lines["keep every used anchor"][0].tolist() == [0.3]
    assert lines["chance"][1].tolist() == [0.1, 0.1]
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_pruning([])


def test_show_pixels_shows_evenly_spaced_images_mapped_from_minus_one_one():
    pixels = np.linspace(-1, 1, 5 * 3 * 2 * 2).reshape(5, 3, 2, 2)
    fig = plots.show_pixels(pixels, [f"caption number {i}" for i in range(5)], n=3)
    assert [ax.get_title() for ax in fig.axes] == ["caption number 0", "caption number 2", "caption number 4"]
    shown = fig.axes[1].get_images()[0].get_array()
    assert np.allclose(shown, (pixels[2].transpose(1, 2, 0) + 1) / 2)


ROWS = [  # two eval sets: "cls" (classification, 10 classes) and "ret" (retrieval, 4 images)
    {"method": m, "n_pairs": n, "eval": "cls", "acc1": acc, "chance": 0.1, "n_images": 20,
     "train_seconds": s, "flops": f}
    for m, n, acc, s, f in [("ASIF", 10, 0.3, 0.01, 0.0), ("ASIF", 100, 0.5, 0.02, 0.0),
                            ("heads", 10, 0.2, 1.0, 1e6), ("heads", 100, 0.6, 2.0, 1e7)]
] + [
    {"method": m, "n_pairs": n, "eval": "ret", "text_retrieval_recall@1": r, "n_images": 4,
     "train_seconds": 9.0, "flops": 9.0}
    for m, n, r in [("ASIF", 10, 0.25), ("ASIF", 100, 0.75), ("heads", 10, 0.0), ("heads", 100, 0.5)]
]


def test_method_curves_one_panel_per_measured_metric_one_line_per_method():
    fig = plots.plot_method_curves(ROWS, ["heads", "ASIF"], colours=("C1", "C0"))
    assert [ax.get_title() for ax in fig.axes] == ["cls (20 images)", "ret (4 images)"]
    cls, ret = (_lines(ax) for ax in fig.axes)
    assert cls["ASIF"][0].tolist() == [10, 100] and cls["ASIF"][1].tolist() == [0.3, 0.5]
    assert cls["heads"][1].tolist() == [0.2, 0.6]
    assert cls["chance"][1].tolist() == [0.1, 0.1]
    assert ret["heads"][1].tolist() == [0.0, 0.5]
    assert ret["chance"][1].tolist() == [0.25, 0.25]  # one of the 4 captions
    with pytest.raises(ValueError, match="no row has"):
        plots.plot_method_curves([{**ROWS[0], "acc1": None}], ["ASIF"])


def test_training_cost_pools_the_seconds_per_method_and_draws_passes_over_the_pairs():
    fig = plots.plot_training_cost(ROWS, ["heads", "ASIF"], steps={"heads": 50}, batch_size=4)
    seconds, passes = fig.axes
    # one bar per method: the median over n of the first row's seconds (heads: 1.0 and 2.0; ASIF: 0.01 and 0.02)
    assert [patch.get_height() for patch in seconds.patches] == pytest.approx([1.5, 0.015])
    lines = _lines(passes)
    x, y = lines["heads (50 steps × 4)"]
    assert x.tolist() == [10, 100] and y.tolist() == pytest.approx([20.0, 2.0])  # 50 × 4 / n
    assert lines["ASIF: each pair stored once"][1].tolist() == [1, 1]
    assert len(plots.plot_training_cost(ROWS, ["heads", "ASIF"]).axes) == 1  # no steps: the seconds only
    with pytest.raises(ValueError, match="batch_size"):
        plots.plot_training_cost(ROWS, ["heads"], steps={"heads": 5})


def test_method_curves_carry_a_wilson_interval_per_point_and_keep_the_legend_off_the_panels():
    from asif_nb.metrics import wilson_interval

    fig = plots.plot_method_curves(ROWS, ["heads", "ASIF"], colours=("C1", "C0"))
    cls = fig.axes[0]
    segments = [seg for coll in cls.collections for seg in coll.get_segments()]
    lo, hi = wilson_interval(round(0.5 * 20), 20)  # ASIF at n = 100 on "cls" (20 images)
    assert any(np.allclose(seg[:, 1], [lo, hi]) for seg in segments)
    assert all(ax.get_legend() is None for ax in fig.axes) and fig.legends


FIGURE4 = {  # two eval sets, k in (1, 2), p in (1, 3); k = 2 does not exist at n = 1
    "a": [{"n_pairs": n, "k": k, "p": p, "accuracy": None if k > n else acc}
          for n, k, p, acc in [(1, 1, 1, 0.1), (1, 1, 3, 0.2), (1, 2, 1, None), (1, 2, 3, None),
                               (10, 1, 1, 0.3), (10, 1, 3, 0.25), (10, 2, 1, 0.4), (10, 2, 3, 0.5)]],
    "b": [{"n_pairs": 10, "k": 1, "p": 1, "accuracy": 0.6}],
}


def test_figure4_is_one_panel_per_eval_set_with_k_as_colour_and_the_best_p_per_k():
    fig = plots.plot_figure4(FIGURE4, n_images={"a": 100}, chance={"a": 0.1},
                             reference={"b": (10, 0.18, "paper")})
    a, b = fig.axes
    assert a.get_title() == "a, 100 images\nbest 0.500: k=2, p=3, n=10" and b.get_title().startswith("b\nbest 0.600")
    assert a.get_shared_x_axes().joined(a, b) and a.get_shared_y_axes().joined(a, b)
    lines = _lines(a)
    assert lines["k = 1"][0].tolist() == [1, 10] and lines["k = 1"][1].tolist() == [0.2, 0.3]  # best p at each n
    assert lines["k = 2"][0].tolist() == [10] and lines["k = 2"][1].tolist() == [0.5]
    assert lines["best point"][1].tolist() == [0.5]
    assert lines["chance"][1].tolist() == [0.1, 0.1]
    assert not any(ax.get_legend() for ax in fig.axes) and fig.legends  # one legend, below the panels
    assert len(a.collections) == 2 and not b.collections  # a Wilson band per k where the set's size is known
    assert _lines(b)["paper"][1].tolist() == [0.18]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    with pytest.raises(ValueError, match="no applicable"):
        plots.plot_figure4({"a": [{"n_pairs": 1, "k": 2, "p": 1, "accuracy": None}]})


def test_pair_ticks_are_round_and_inside_the_range():
    from asif_nb.plots.curves import pair_label, pair_ticks

    assert pair_ticks(100, 5016) == [100, 200, 500, 1000, 2000, 5000]
    assert pair_ticks(10_000, 1_600_000) == [10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000]
    assert [pair_label(n) for n in (100, 1500, 2000, 5016, 1_600_000, 1_234_567)] == \
        ["100", "1.5k", "2k", "5,016", "1.6M", "1,234,567"]


def test_pruning_plot_bands_are_the_wilson_intervals_of_the_held_out_images():
    from asif_nb.metrics import wilson_interval

    rows = [{"fraction": 1.0, "acc_most_used": 0.5, "acc_random": 0.5},
            {"fraction": 0.1, "acc_most_used": 0.4, "acc_random": 0.2}]
    ax = plots.plot_pruning(rows, n_images=50).axes[0]
    assert len(ax.collections) == 2
    band = ax.collections[1].get_paths()[0].vertices[:, 1]  # keep at random: 0.5 then 0.2 of 50 images
    assert min(band) == pytest.approx(wilson_interval(10, 50)[0]) and max(band) == pytest.approx(wilson_interval(25, 50)[1])
    assert "50 images" in ax.get_title()
