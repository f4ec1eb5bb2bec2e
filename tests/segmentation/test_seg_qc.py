"""QC metrics against hand values and MONAI, flags on hand-made implausible masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from cmrprior.errors import InputError
from cmrprior.segmentation import qc
from seg_doubles import disc_heart, make_cohort


def test_dice_hand_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :2] = True  # 2 px
    b[0, 1:4] = True  # 3 px, overlap 1
    assert qc.dice(a, b) == pytest.approx(2 * 1 / 5)
    assert qc.dice(a, a) == 1.0
    assert qc.dice(a, np.zeros_like(a)) == 0.0
    assert np.isnan(qc.dice(np.zeros_like(a), np.zeros_like(a)))


def test_hausdorff_of_shifted_squares_in_mm():
    a = np.zeros((1, 20, 20), bool)
    b = np.zeros((1, 20, 20), bool)
    a[0, 5:10, 5:10] = True
    b[0, 5:10, 8:13] = True  # shifted 3 columns
    assert qc.hausdorff(a, b, (8.0, 1.5, 2.0)) == pytest.approx(3 * 2.0)
    assert qc.hausdorff(a, b, (8.0, 2.0, 1.0)) == pytest.approx(3.0)
    assert np.isnan(qc.hausdorff(a, np.zeros_like(a), (1, 1, 1)))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI-internal deprecation notice
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_matches_monai(seed):
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(seed)
    a = np.zeros((3, 24, 24), bool)
    b = np.zeros((3, 24, 24), bool)
    for m in (a, b):
        for z in range(3):
            c = rng.integers(8, 16, 2)
            r = rng.integers(3, 7)
            yy, xx = np.mgrid[:24, :24]
            m[z] |= (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r * r
    spacing = (5.0, 1.25, 1.5)
    t = lambda m: torch.from_numpy(np.stack([~m, m]))[None].float()  # noqa: E731
    for pct in (None, 95):
        ref = compute_hausdorff_distance(t(a), t(b), include_background=False, percentile=pct, spacing=spacing)
        ours = qc.hausdorff(a, b, spacing, 100.0 if pct is None else 95.0)
        assert ours == pytest.approx(float(ref[0, 0]), rel=1e-4, abs=1e-4)


def test_mean_ci_matches_scipy():
    x = [0.9, 0.85, 0.92, float("nan"), 0.88]
    m, lo, hi, n = qc.mean_ci(x)
    v = np.array([0.9, 0.85, 0.92, 0.88])
    ref = stats.t.interval(0.95, 3, loc=v.mean(), scale=stats.sem(v))
    assert n == 4 and m == pytest.approx(v.mean())
    assert (lo, hi) == pytest.approx(ref)


def _stack(n=6):
    return np.stack([disc_heart(48, (24, 26), 6 - 0.5 * z, 2, 12) for z in range(n)])


def test_plausible_stack_has_no_flags():
    f = qc.mask_flags(_stack())
    assert not any(f[k] for k in ("empty_heart", "missing_structure_mid", "myo_not_surrounding_lv", "volume_jump"))


def test_each_flag_fires_on_its_defect():
    assert qc.mask_flags(np.zeros((4, 16, 16), np.uint8))["empty_heart"]
    s = _stack()
    s[2][s[2] == 1] = 0  # RV missing on a mid slice
    f = qc.mask_flags(s)
    assert f["missing_structure_mid"] and "slice 2" in f["details"]
    s = _stack()
    s[1][s[1] == 2] = 0  # LV cavity without myocardium around it
    assert qc.mask_flags(s)["myo_not_surrounding_lv"]
    s = _stack()
    s[4] = disc_heart(48, (24, 26), 1.5, 1, 3)  # heart area collapses between neighbours
    assert qc.mask_flags(s)["volume_jump"]


def test_image_flags_and_bad_shapes():
    assert qc.image_flags(np.zeros((3, 64, 64)))["blank_image"]
    assert qc.image_flags(np.ones((3, 20, 64)) * np.arange(64))["tiny_field_of_view"]
    assert not any(qc.image_flags(np.random.default_rng(0).normal(size=(3, 64, 64))).values())
    with pytest.raises(InputError):
        qc.mask_flags(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError):
        qc.image_flags(np.zeros((4, 4, 4, 4)))


def test_evaluate_prepared_perfect_prediction_and_summary(tmp_path):
    c = make_cohort(n_patients=2)
    rows = qc.evaluate_prepared(c, c)
    assert len(rows) == 4 and {r["phase"] for r in rows} == {"ED", "ES"}
    assert all(r["dice_LV"] == 1.0 and r["hd_MYO"] == 0.0 for r in rows)
    summ = qc.summarise(rows)
    lv = [s for s in summ if s["metric"] == "dice_LV" and s["phase"] == "all"][0]
    assert lv["mean"] == 1.0 and lv["n"] == 4
    qc.write_csv(rows, tmp_path / "qc.csv")
    assert (tmp_path / "qc.csv").read_text().startswith("patient_id,label,phase")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_on_the_bounding_box_equal_the_whole_grid(seed):
    """Reference: the distance transforms over the whole grid (masks near and touching the border too)."""
    from scipy import ndimage

    from cmrprior.segmentation.qc import surface, surface_distances

    rng = np.random.default_rng(seed)
    shape = (4, 40, 50)
    a = ndimage.binary_opening(rng.random(shape) > 0.6) & (np.arange(50) < 12 + 30 * seed % 38)[None, None]
    b = np.zeros(shape, bool)
    b[1:, 5 + seed : 30, 20 : 50 - seed] = True  # reaches the border for seed 0
    spacing = (10.0, 1.5, 1.2)
    sa, sb = surface(a), surface(b)
    want = (ndimage.distance_transform_edt(~sb, sampling=spacing)[sa], ndimage.distance_transform_edt(~sa, sampling=spacing)[sb])
    got = surface_distances(a, b, spacing)
    np.testing.assert_allclose(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
