"""``metrics.auroc``: P(an in-distribution score beats an out-of-distribution one), ties counted one half."""
from __future__ import annotations

import numpy as np
import pytest

from asif_nb.metrics import auroc


def test_auroc_by_hand():
    # in = [0.3, 0.5], out = [0.1, 0.3, 0.6]. Pairs (6): 0.3 beats 0.1, ties 0.3, loses to 0.6 -> 1.5;
    # 0.5 beats 0.1 and 0.3, loses to 0.6 -> 2. AUROC = 3.5 / 6.
    assert auroc([0.3, 0.5], [0.1, 0.3, 0.6]) == pytest.approx(3.5 / 6)
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auroc(np.zeros(4), np.zeros(7)) == 0.5  # every pair tied: chance


def test_auroc_equals_the_pairwise_count_with_many_ties():
    rng = np.random.default_rng(1)
    inside = rng.integers(0, 6, 300).astype(np.float32) / 8   # few distinct values: many ties (like all-zero rows)
    outside = rng.integers(0, 4, 211).astype(np.float32) / 8
    pairwise = float(np.mean(inside[:, None] > outside[None, :]) + 0.5 * np.mean(inside[:, None] == outside[None, :]))
    assert auroc(inside, outside) == pairwise  # bit for bit: notebook 07 reported the pairwise form
    assert auroc(outside, inside) == pytest.approx(1 - pairwise)


@pytest.mark.parametrize("inside, outside, message", [
    ([], [1.0], r"in_scores must be a non-empty 1-D"),
    ([[1.0, 2.0]], [1.0], r"in_scores must be a non-empty 1-D.*scores\.max\(axis=1\)"),
    ([1.0], [np.nan], "out_scores contains NaN"),
    ([np.inf], [1.0], "in_scores contains NaN or infinite"),
    ([True, False], [1.0], "must hold numbers"),
    (["a"], [1.0], "must hold numbers"),
])
def test_auroc_refuses_what_has_no_ranking(inside, outside, message):
    with pytest.raises(ValueError, match=message):
        auroc(inside, outside)
