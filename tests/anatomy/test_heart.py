"""Heart masks and segmented-image modes, checked on hand-made masks and against torch interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmrprior.anatomy.heart import apply_image_mode, crop_boxes, crop_resize, disk, heart_mask, square_box
from cmrprior.errors import ConfigError, InputError


def _masks() -> np.ndarray:
    m = np.zeros((3, 32, 32), dtype=np.uint8)
    m[0, 10:14, 8:12] = 1  # RV
    m[0, 10:14, 14:20] = 2  # MYO
    m[0, 11:13, 16:18] = 3  # LV
    m[1, 16, 16] = 3  # a single pixel
    return m  # slice 2 empty


def test_heart_mask_union_without_margin():
    m = _masks()
    h = heart_mask(m, margin_mm=0.0, pixel_spacing_mm=1.5)
    assert h.dtype == bool and h.shape == m.shape
    np.testing.assert_array_equal(h, m > 0)


def test_heart_mask_margin_is_a_disk_in_mm():
    m = _masks()
    # 3 mm at 1.5 mm/pixel -> radius 2 px disk around the single pixel on slice 1
    h = heart_mask(m, margin_mm=3.0, pixel_spacing_mm=1.5)
    yy, xx = np.mgrid[:32, :32]
    expected = (yy - 16) ** 2 + (xx - 16) ** 2 <= 4
    np.testing.assert_array_equal(h[1], expected)
    assert h[1].sum() == 13  # hand count of a radius-2 digital disk
    assert not h[2].any()  # empty stays empty
    # the dilation never crosses slices and contains the undilated mask
    assert np.all(h[0] >= (m[0] > 0))


def test_disk_sizes():
    assert disk(0.5).shape == (1, 1)
    assert disk(1).sum() == 5
    assert disk(2).sum() == 13


def test_heart_mask_rejects_bad_input():
    with pytest.raises(InputError):
        heart_mask(np.zeros((4, 4), np.uint8), 1.0, 1.5)
    with pytest.raises(ConfigError):
        heart_mask(np.zeros((1, 4, 4), np.uint8), -1.0, 1.5)
    with pytest.raises(ConfigError):
        heart_mask(np.zeros((1, 4, 4), np.uint8), 1.0, 0.0)


def test_full_mode_is_a_copy():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 32, 32)).astype(np.float32)
    out = apply_image_mode(img, _masks(), "full")
    np.testing.assert_array_equal(out, img)
    out[0, 0, 0] = 99
    assert img[0, 0, 0] != 99


def test_mask_mode_zeroes_outside_dilated_heart_and_empty_slices():
    rng = np.random.default_rng(1)
    img = rng.uniform(1, 2, size=(3, 32, 32)).astype(np.float32)
    before = img.copy()
    m = _masks()
    out = apply_image_mode(img, m, "mask", margin_mm=3.0, pixel_spacing_mm=1.5)
    h = heart_mask(m, 3.0, 1.5)
    np.testing.assert_array_equal(out[h], img[h])
    assert np.all(out[~h] == 0)
    assert np.all(out[2] == 0)  # empty mask -> all zero (documented)
    np.testing.assert_array_equal(img, before)  # input untouched


def test_square_box_hand_values():
    rows = np.array([10, 13])
    cols = np.array([8, 19])  # height 4, width 12 -> side 12, centred vertically
    assert square_box(rows, cols) == (6, 8, 12)


def test_crop_resize_matches_torch_bilinear():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(40, 40)).astype(np.float32)
    top, left, side = 5, 9, 17
    ours = crop_resize(img, top, left, side, (32, 32))
    patch = torch.from_numpy(img[top : top + side, left : left + side].copy())[None, None]
    ref = F.interpolate(patch, size=(32, 32), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_crop_resize_whole_image_is_identity_and_pads_with_zeros():
    img = np.arange(16, dtype=np.float32).reshape(4, 4) + 1
    np.testing.assert_array_equal(crop_resize(img, 0, 0, 4, (4, 4)), img)
    # a box hanging off the top-left corner: the outside part is zero
    out = crop_resize(img, -2, -2, 4, (4, 4))
    np.testing.assert_array_equal(out[:2], 0)
    np.testing.assert_array_equal(out[2:, 2:], img[:2, :2])


def test_crop_mode_maps_heart_box_to_full_image():
    m = np.zeros((1, 32, 32), dtype=np.uint8)
    m[0, 8:16, 12:20] = 3  # an 8x8 heart
    yy, xx = np.mgrid[:32, :32]
    img = (yy * 100 + xx).astype(np.float32)[None]
    out = apply_image_mode(img, m, "crop", margin_mm=0.0, pixel_spacing_mm=1.5)
    # 8 px box -> 32 px: scale 4; output pixel (o) samples input 8 + (o + 0.5)/4 - 0.5 (rows)
    assert out.shape == img.shape
    o = np.arange(32)
    r = np.clip((o + 0.5) / 4 - 0.5, 0, 7) + 8
    c = np.clip((o + 0.5) / 4 - 0.5, 0, 7) + 12
    np.testing.assert_allclose(out[0], r[:, None] * 100 + c[None, :], atol=1e-3)


def test_crop_fallback_for_empty_slices():
    m = _masks()
    heart = heart_mask(m, 0.0, 1.5)
    boxes = crop_boxes(heart, groups=np.array([0, 0, 0]))
    rows, cols = np.nonzero(heart[0] | heart[1])
    assert boxes[2] == square_box(rows, cols)  # patient's union box
    assert crop_boxes(heart, groups=None)[2] is None
    assert crop_boxes(heart, groups=np.array([0, 0, 1]))[2] is None  # its group has no heart
    img = np.random.default_rng(3).normal(size=m.shape).astype(np.float32)
    out = apply_image_mode(img, m, "crop", margin_mm=0.0, groups=None)
    np.testing.assert_array_equal(out[2], img[2])  # no box -> full image


def test_mask_crop_combines_both():
    m = np.zeros((1, 32, 32), dtype=np.uint8)
    m[0, 8:16, 12:20] = 2
    img = np.ones((1, 32, 32), dtype=np.float32)
    out_mask = apply_image_mode(img, m, "mask", margin_mm=0.0)
    out_both = apply_image_mode(img, m, "mask+crop", margin_mm=0.0)
    out_crop = apply_image_mode(img, m, "crop", margin_mm=0.0)
    # the box is exactly the heart, so masking inside it changes nothing: all three crops see ones
    np.testing.assert_allclose(out_both, out_crop)
    assert out_mask.sum() == 64
    m2 = m.copy()
    m2[0, 8:10, 12:14] = 0  # a notch: the masked crop has zeros there, the plain crop not
    out_both2 = apply_image_mode(img, m2, "mask+crop", margin_mm=0.0)
    assert out_both2.min() == 0 and apply_image_mode(img, m2, "crop", margin_mm=0.0).min() == 1


def test_apply_image_mode_rejects_bad_input():
    img = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ConfigError, match="unknown image mode"):
        apply_image_mode(img, np.zeros((1, 8, 8), np.uint8), "blur")
    with pytest.raises(InputError, match="differ"):
        apply_image_mode(img, np.zeros((1, 8, 9), np.uint8), "mask")
