"""The unknown token: accuracy / unknown / wrong against the threshold, risk-coverage (notebooks 05, 07)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_threshold_curve(curve, title="Unknown token: accuracy / unknown / wrong vs threshold", mark=None,
                         mark_label=None):
    """Stacked fractions of correct, unknown (abstained) and wrong answers as the threshold rises; ``mark`` (a
    threshold) is drawn as a dashed line, named ``mark_label`` in the legend when given."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    thresholds = np.asarray(curve["threshold"])
    finite = np.isfinite(thresholds)  # the last threshold is +inf (nothing answered): no place on an axis
    thresholds = thresholds[finite]
    ax.stackplot(thresholds, *(np.asarray(curve[key])[finite] for key in ("accuracy", "unknown", "wrong")),
                 labels=["correct", "unknown", "wrong"], colors=["#4c9a2a", "#bbbbbb", "#c0392b"], alpha=0.85)
    if mark is not None:
        ax.axvline(mark, color="k", ls="--", lw=1, label=mark_label)
    ax.set_xlabel("threshold on the best score")
    ax.set_ylabel("fraction of queries")
    ax.set_xlim(thresholds.min(), thresholds.max())
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_risk_coverage(curve, point=None, title="risk-coverage"):
    """Risk (wrong / answered) against coverage (fraction answered) of a ``threshold_curve``; ``point`` (a
    ``threshold_curve`` at one threshold, as floats, with its ``threshold``) is marked."""
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.plot(curve["coverage"], curve["risk"], color="#c0392b")
    if point is not None:
        ax.plot(point["coverage"], point["risk"], "ko", label=f"t = {point['threshold']:.4f}")
        ax.legend(fontsize=8)
    ax.set(xlabel="coverage (fraction answered)", ylabel="risk (wrong / answered)", xlim=(0, 1), ylim=(0, 1),
           title=title)
    fig.tight_layout()
    return fig


def plot_unknown_rates(in_scores, out_scores, threshold=None, in_label="in distribution",
                       out_label="out of distribution", title="abstention vs threshold", n_points: int = 200):
    """The fraction of each set answered "unknown" (best score below the threshold) as the threshold rises
    from 0 to the largest score: two empirical distribution functions; ``threshold`` is marked."""
    in_scores, out_scores = np.asarray(in_scores, dtype=float).ravel(), np.asarray(out_scores, dtype=float).ravel()
    if not in_scores.size or not out_scores.size:
        raise ValueError("plot_unknown_rates needs at least one score in each set.")
    grid = np.linspace(0, max(in_scores.max(), out_scores.max()), n_points)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for scores, label in ((in_scores, in_label), (out_scores, out_label)):
        ax.plot(grid, (scores[None, :] < grid[:, None]).mean(axis=1), label=f"{label} ({len(scores)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1)
    ax.set(xlabel="threshold on the best score", ylabel="fraction unknown", ylim=(0, 1), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
