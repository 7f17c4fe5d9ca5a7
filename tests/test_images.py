"""``to_rgb`` on float images with pixels that have no value (NaN, inf)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from asif_nb.images import to_rgb


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_float_image_with_a_non_finite_pixel_is_refused_with_the_fix(bad):
    pixels = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    pixels[1, 2] = bad
    with pytest.raises(ValueError, match=r"1 NaN or infinite pixel\(s\) of 16: replace them first.*nan_to_num"):
        to_rgb(Image.fromarray(pixels, mode="F"))


def test_a_finite_float_image_still_spans_black_to_white():
    pixels = np.array([[-2.0, 0.0], [1.0, 6.0]], dtype=np.float32)
    grey = np.asarray(to_rgb(Image.fromarray(pixels, mode="F")))[..., 0]
    assert grey.tolist() == [[0, 64], [96, 255]]  # (x + 2) / 8 * 255, rounded
