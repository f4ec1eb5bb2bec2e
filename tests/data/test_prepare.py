"""Preparation steps against slow references (scipy, explicit formulas) and geometric facts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from cmrprior.data.intensity import normalise_percentile
from cmrprior.data.prepare import PrepareConfig, mask_centre, prepare_volumes
from cmrprior.data.resample import crop_or_pad, resample_crop, resample_inplane
from cmrprior.errors import ConfigError, DataError
from cmrprior.io.records import PatientRecord, PatientVolumes, Volume


def test_normalise_percentile_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 30, size=(3, 20, 20)).astype(np.float32)
    out = normalise_percentile(x, low=1, high=99)
    lo, hi = np.percentile(x.astype(np.float64), [1, 99])
    ref = np.clip((x.astype(np.float64) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert out.dtype == np.float32
    assert np.mean(out == 0) == pytest.approx(0.01, abs=0.005)
    assert np.mean(out == 1) == pytest.approx(0.01, abs=0.005)
    np.testing.assert_array_equal(normalise_percentile(np.full((2, 3, 3), 7.0)), 0)


def _reference_bilinear(array, scale):
    """scipy map_coordinates (order 1, edge-clamped) on the pixel-centre grid src = (i + 0.5) / s - 0.5."""
    z, h, w = array.shape
    ho, wo = int(np.floor(h * scale[0])), int(np.floor(w * scale[1]))
    rr = (np.arange(ho) + 0.5) / scale[0] - 0.5
    cc = (np.arange(wo) + 0.5) / scale[1] - 0.5
    grid_r, grid_c = np.meshgrid(rr, cc, indexing="ij")
    return np.stack([ndimage.map_coordinates(array[k].astype(np.float64), [grid_r, grid_c], order=1, mode="nearest")
                     for k in range(z)])


@pytest.mark.parametrize("spacing", [(1.8, 1.8), (2.0, 1.7), (1.5625, 1.5625), (1.51, 1.52)])
def test_resample_upsampling_matches_scipy_reference(spacing):
    rng = np.random.default_rng(1)
    x = rng.random((2, 23, 17)).astype(np.float32)
    out = resample_inplane(x, spacing, target_mm=1.5)
    ref = _reference_bilinear(x, (spacing[0] / 1.5, spacing[1] / 1.5))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_resample_mask_nearest_matches_exact_reference():
    rng = np.random.default_rng(2)
    m = rng.integers(0, 4, size=(2, 31, 29)).astype(np.uint8)
    for sy, sx in [(0.7, 0.75), (1.5625, 1.5625), (1.9, 1.2)]:
        out = resample_inplane(m, (sy, sx), target_mm=1.5, is_mask=True)
        assert out.dtype == np.uint8
        # exact rational arithmetic: output pixel i takes source floor((i + 1/2) * target / spacing)
        fy, fx = Fraction(str(sy)) / Fraction("1.5"), Fraction(str(sx)) / Fraction("1.5")
        ho, wo = int(31 * fy), int(29 * fx)
        ri = [min(int((i + Fraction(1, 2)) / fy), 30) for i in range(ho)]
        ci = [min(int((j + Fraction(1, 2)) / fx), 28) for j in range(wo)]
        np.testing.assert_array_equal(out, m[:, ri][:, :, ci])


def test_resample_downsampling_preserves_constant_and_physical_area():
    const = np.full((1, 60, 50), 0.25, np.float32)
    np.testing.assert_allclose(resample_inplane(const, (0.7, 0.7), target_mm=1.5), 0.25, atol=1e-6)
    # a disc of radius 30 mm at 0.6 mm spacing keeps its area in mm^2 after resampling to 1.5 mm
    n, sp = 200, 0.6
    yy, xx = np.mgrid[:n, :n]
    disc = (((yy - 99.5) * sp) ** 2 + ((xx - 99.5) * sp) ** 2 <= 30.0**2).astype(np.float32)[None]
    img = resample_inplane(disc, (sp, sp), target_mm=1.5)
    msk = resample_inplane(disc.astype(np.uint8), (sp, sp), target_mm=1.5, is_mask=True)
    area = np.pi * 30.0**2
    assert img.sum() * 1.5**2 == pytest.approx(area, rel=0.02)
    assert msk.sum() * 1.5**2 == pytest.approx(area, rel=0.04)
    assert img.min() >= 0 and img.max() <= 1


def test_crop_or_pad_matches_padded_reference():
    rng = np.random.default_rng(3)
    a = rng.random((2, 10, 7)).astype(np.float32)
    for centre in [(4.5, 3.0), (0.0, 0.0), (9.0, 6.0), (30.0, -20.0), (5.2, 2.7)]:
        out = crop_or_pad(a, centre, size=8)
        pad = 50
        padded = np.pad(a, ((0, 0), (pad, pad), (pad, pad)))
        r0 = int(round(centre[0] - 3.5)) + pad
        c0 = int(round(centre[1] - 3.5)) + pad
        np.testing.assert_array_equal(out, padded[:, r0:r0 + 8, c0:c0 + 8])


def test_mask_centre_hand_value():
    m = np.zeros((2, 6, 6), np.uint8)
    m[0, 1, 1] = 1
    m[1, 4, 3] = 3
    m[1, 4, 5] = 2
    assert mask_centre(m) == pytest.approx(((1 + 4 + 4) / 3, (1 + 3 + 5) / 3))
    assert mask_centre(np.zeros((1, 3, 3), np.uint8)) is None


def _volumes(masks=True, shape=(6, 90, 80), spacing=(10.0, 1.25, 1.25), centre=(30, 55), radius_px=12):
    z, h, w = shape
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius_px**2
    ed_img = (rng.random(shape) * 100 + 200 * disc).astype(np.float32)
    es_img = ed_img[::-1].copy()
    mask = np.zeros(shape, np.uint8)
    mask[1:4] = 3 * disc
    es_mask = np.zeros(shape, np.uint8)
    es_mask[2:5] = 2 * disc
    aff = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    rec = PatientRecord("p1", "NOR", ed_image=None, es_image=None)  # type: ignore[arg-type]
    vol = lambda a: Volume(a, spacing, aff)  # noqa: E731
    return PatientVolumes(rec, vol(ed_img), vol(es_img), vol(mask) if masks else None, vol(es_mask) if masks else None)


def test_prepare_volumes_crop_centred_on_ed_heart_and_slices_chosen():
    vols = _volumes()
    out = prepare_volumes(vols, PrepareConfig(pixel_spacing_mm=1.5, size=48))
    # heart at ED in z 1-3, at ES in z 2-4 -> slices 2, 3 kept (heart at both), 1 and 4 listed as dropped
    np.testing.assert_array_equal(out.slice_index, [2, 3])
    assert out.dropped == (1, 4)
    np.testing.assert_allclose(out.slice_position, [0, 1], atol=1e-6)
    assert out.ed.shape == out.es.shape == out.ed_mask.shape == out.es_mask.shape == (2, 48, 48)
    assert out.ed.dtype == np.float32 and out.ed_mask.dtype == np.uint8
    # the ED heart ends up in the middle of the crop
    cy, cx = mask_centre(out.ed_mask)
    assert abs(cy - 23.5) <= 1 and abs(cx - 23.5) <= 1
    # the disc radius (12 px * 1.25 mm = 15 mm) is 10 px at 1.5 mm
    assert (out.ed_mask[0] > 0).sum() == pytest.approx(np.pi * 10**2, rel=0.06)
    # ES image uses ED's crop: the ES slice z=4 equals the ED slice z=1 (es = ed[::-1] with 6 slices)
    full = prepare_volumes(vols, PrepareConfig(pixel_spacing_mm=1.5, size=48, heart_slices_only=False))
    np.testing.assert_array_equal(full.slice_index, np.arange(6))
    # bright disc in the image lies under the mask
    assert out.ed[out.ed_mask > 0].mean() > out.ed[out.ed_mask == 0].mean() + 0.3
    assert 0 <= out.ed.min() and out.ed.max() <= 1


def test_prepare_volumes_without_masks_keeps_all_slices_and_centres_image():
    vols = _volumes(masks=False, shape=(3, 40, 40), spacing=(8.0, 1.5, 1.5))
    out = prepare_volumes(vols, PrepareConfig(pixel_spacing_mm=1.5, size=20))
    assert out.ed_mask is None and out.es_mask is None
    np.testing.assert_array_equal(out.slice_index, [0, 1, 2])
    norm = normalise_percentile(vols.ed.array)
    np.testing.assert_allclose(out.ed, norm[:, 10:30, 10:30], atol=1e-6)


def test_prepare_volumes_rejects_ed_es_mismatch():
    vols = _volumes(masks=False, shape=(3, 20, 20))
    es = Volume(np.zeros((4, 20, 20), np.float32), vols.ed.spacing, vols.ed.affine)
    with pytest.raises(DataError, match="paired by slice index"):
        prepare_volumes(PatientVolumes(vols.record, vols.ed, es), PrepareConfig())


@pytest.mark.parametrize("kw", [{"pixel_spacing_mm": 0}, {"size": 4}, {"low_percentile": 99, "high_percentile": 1}])
def test_prepare_config_validation(kw):
    with pytest.raises(ConfigError):
        PrepareConfig(**kw)


@pytest.mark.parametrize("spacing", [(0.7, 0.7), (0.9, 1.3), (1.0, 1.0)])
def test_resample_downsampling_matches_torch_antialias(spacing):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.random((2, 64, 50)).astype(np.float32)
    out = resample_inplane(x, spacing, target_mm=1.5)
    scale = (spacing[0] / 1.5, spacing[1] / 1.5)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], scale_factor=scale, mode="bilinear",
                                          align_corners=False, antialias=True, recompute_scale_factor=False)
    np.testing.assert_allclose(out, ref[:, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("spacing", [(0.7, 0.8), (1.5625, 1.5625), (1.9, 1.2), (1.5, 1.5)])
@pytest.mark.parametrize("centre", [(20.0, 15.0), (2.3, 40.6), (-10.0, 5.0), (60.0, 70.0)])
def test_resample_crop_equals_resample_then_crop(spacing, centre):
    rng = np.random.default_rng(6)
    x = rng.random((2, 37, 33)).astype(np.float32)
    m = rng.integers(0, 4, size=(2, 37, 33)).astype(np.uint8)
    for arr, is_mask in ((x, False), (m, True)):
        fused = resample_crop(arr, spacing, target_mm=1.5, centre=centre, size=24, is_mask=is_mask)
        full = resample_inplane(arr, spacing, target_mm=1.5, is_mask=is_mask)
        ref = crop_or_pad(full, centre, size=24)
        assert fused.dtype == ref.dtype and fused.shape == (2, 24, 24)
        np.testing.assert_allclose(fused, ref, atol=1e-6)
