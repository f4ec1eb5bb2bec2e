"""The heart mask on the classifier's input grid follows the images through crop and resize."""

from __future__ import annotations

import numpy as np
import pytest

from cmrprior.anatomy.heart import apply_image_mode, heart_mask
from cmrprior.classify.data import resize_stack
from cmrprior.saliency.geometry import heart_on_input_grid


def _masks() -> np.ndarray:
    m = np.zeros((3, 40, 40), np.uint8)
    m[0, 10:18, 12:22] = 3
    m[0, 9:19, 22:25] = 1
    m[1, 20:30, 5:12] = 2  # another place
    # slice 2 empty: crop falls back to the group's box
    return m


@pytest.mark.parametrize("mode", ["full", "mask", "crop", "mask+crop"])
@pytest.mark.parametrize("size", [40, 24])
def test_heart_follows_the_image_transform(mode, size):
    masks = _masks()
    groups = np.array([0, 0, 0])
    got = heart_on_input_grid(masks, margin_mm=3.0, pixel_spacing_mm=1.5, image_mode=mode, image_margin_mm=4.5,
                              input_size=size, groups=groups)
    # reference: push the score's heart mask through the image pipeline itself (C's apply_image_mode with
    # the study's image margin, then E's resize); "mask" would zero it outside the image mask, so use crop only
    heart = heart_mask(masks, margin_mm=3.0, pixel_spacing_mm=1.5).astype(np.float32)
    ref_mode = {"full": "full", "mask": "full", "crop": "crop", "mask+crop": "crop"}[mode]
    moved = apply_image_mode(heart, masks, ref_mode, margin_mm=4.5, pixel_spacing_mm=1.5, groups=groups)
    ref = resize_stack(moved, size) >= 0.5
    assert got.shape == (3, size, size) and got.dtype == bool
    np.testing.assert_array_equal(got, ref)
    assert got[0].any()
    if mode in ("crop", "mask+crop"):
        # cropping to the heart enlarges it: it covers a larger share of the image than before
        assert got[0].mean() > heart[0].mean() + 0.1
