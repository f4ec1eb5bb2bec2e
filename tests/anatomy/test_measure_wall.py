"""Wall thickness summaries, thickening, ratios and the RV, checked against analytic values of synthetic shapes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from cmrprior.anatomy.measure import CSV_COLUMNS, AnatomyMeasures, measure_patient
from cmrprior.anatomy.thickness import base_to_apex, slice_thicknesses, summarise_thickness, thickening_pct


def _grid(h: int, w: int, sy: float, sx: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    return (yy - (h - 1) / 2) * sy, (xx - (w - 1) / 2) * sx


def _heart_slice(h, w, sy, sx, r_in, r_out, rv=None) -> np.ndarray:
    """LV cavity disk r_in (3), myocardium to r_out (2); optional RV (1): half-annulus x < 0 from rv[0] to rv[1]."""
    y, x = _grid(h, w, sy, sx)
    r2 = y**2 + x**2
    m = np.zeros((h, w), dtype=np.uint8)
    if rv is not None:
        m[(r2 >= rv[0] ** 2) & (r2 < rv[1] ** 2) & (x < 0)] = 1
    m[r2 < r_out**2] = 2
    m[r2 < r_in**2] = 3
    return m


def test_concentric_cylinders_give_analytic_thickening_and_ratios():
    s, n, dz = 0.5, 6, 8.0
    ed = np.stack([_heart_slice(200, 200, s, s, 20.0, 28.0, rv=(30.0, 45.0))] * n)
    es = np.stack([_heart_slice(200, 200, s, s, 14.0, 25.0, rv=(30.0, 38.0))] * n)
    m = measure_patient(ed, es, (dz, s, s))
    # thickness: ED 8 mm, ES 11 mm, each ray within a pixel; the mean over 360 rays much closer
    assert m.max_wall_thickness_mm == pytest.approx(8.0, abs=s)
    assert m.mean_wall_thickness_mm == pytest.approx(8.0, abs=0.25)
    assert m.mean_wall_thickness_es_mm == pytest.approx(11.0, abs=0.25)
    assert m.systolic_thickening_percent == pytest.approx(100 * 3 / 8, abs=4.0)  # 37.5 %
    assert m.systolic_thickening_percent == pytest.approx(
        thickening_pct(m.mean_wall_thickness_mm, m.mean_wall_thickness_es_mm))
    assert m.max_wall_thickness_sd_mm == pytest.approx(0.0, abs=1e-12)  # identical slices
    assert m.myo_lv_volume_ratio_ed == pytest.approx((28**2 - 20**2) / 20**2, rel=0.02)  # 0.96
    assert m.myo_lv_volume_ratio_es == pytest.approx((25**2 - 14**2) / 14**2, rel=0.03)  # 2.19
    # RV: half annuli 30-45 mm (ED) and 30-38 mm (ES) on every slice
    rv_edv = 0.5 * math.pi * (45**2 - 30**2) * n * dz / 1000
    assert m.rv_edv_ml == pytest.approx(rv_edv, rel=0.02)
    assert m.rvef == pytest.approx(100 * (1 - (38**2 - 30**2) / (45**2 - 30**2)), abs=1.0)  # 51.6 %
    assert m.rv_lv_edv_ratio == pytest.approx(0.5 * (45**2 - 30**2) / 20**2, rel=0.02)  # 1.41
    # the RV beside the wall does not change the wall's thickness
    alone = measure_patient(np.where(ed == 1, 0, ed), np.where(es == 1, 0, es), (dz, s, s))
    assert alone.mean_wall_thickness_mm == m.mean_wall_thickness_mm


def _tapered_stack(s: float) -> tuple[np.ndarray, list[float]]:
    """9 slices base to apex: wall 10, 10, 10, 8, 8, 8, 6, 6, 6 mm, cavity 22 -> 6 mm radius."""
    walls = [10.0] * 3 + [8.0] * 3 + [6.0] * 3
    cavities = [22.0, 21.0, 20.0, 17.0, 15.0, 13.0, 10.0, 8.0, 6.0]
    return np.stack([_heart_slice(140, 140, s, s, r, r + t) for r, t in zip(cavities, walls)]), walls


def test_profile_thirds_sd_and_stack_direction():
    s = 0.5
    stack, walls = _tapered_stack(s)
    m = measure_patient(stack, stack, (10.0, s, s))
    assert m.wall_thickness_basal_mm == pytest.approx(10.0, abs=0.3)
    assert m.wall_thickness_mid_mm == pytest.approx(8.0, abs=0.3)
    assert m.wall_thickness_apical_mm == pytest.approx(6.0, abs=0.3)
    assert m.mean_wall_thickness_mm == pytest.approx(8.0, abs=0.3)
    assert m.max_wall_thickness_sd_mm == pytest.approx(float(np.std(walls)), abs=0.3)  # sqrt(8/3) = 1.63
    assert m.systolic_thickening_percent == pytest.approx(0.0)
    # a stack stored apex first is read apex first: the same thirds
    flipped = measure_patient(stack[::-1], stack[::-1], (10.0, s, s))
    for key in ("wall_thickness_basal_mm", "wall_thickness_mid_mm", "wall_thickness_apical_mm"):
        assert getattr(flipped, key) == pytest.approx(getattr(m, key))
    # 7 slices split 3 / 2 / 2 (numpy.array_split); an apical cap (no cavity) is not a measured slice
    cap = np.where(stack[8] > 0, 2, 0).astype(np.uint8)
    seven = np.concatenate([stack[[0, 1, 2, 3, 4, 6, 7]], cap[None]])
    t = summarise_thickness(slice_thicknesses(seven, (10.0, s, s)))
    assert t.n_slices == 7
    assert (t.basal_mm, t.mid_mm, t.apical_mm) == pytest.approx((10.0, 8.0, 6.0), abs=0.3)
    assert [x.index for x in base_to_apex(slice_thicknesses(seven[::-1], (10.0, s, s)))] == [7, 6, 5, 4, 3, 2, 1]


def test_fewer_than_three_slices_leave_thirds_nan():
    sl = _heart_slice(120, 120, 0.5, 0.5, 15.0, 23.0)
    m = measure_patient(np.stack([sl, sl]), np.stack([sl, sl]), (10.0, 0.5, 0.5))
    assert m.wall_thickness_basal_mm == pytest.approx(8.0, abs=0.3)
    assert m.wall_thickness_mid_mm == pytest.approx(8.0, abs=0.3)
    assert math.isnan(m.wall_thickness_apical_mm)


def test_anisotropic_pixels_mean_thickness_in_mm():
    sy, sx = 1.0, 2.0
    sl = _heart_slice(120, 60, sy, sx, 20.0, 32.0)
    m = measure_patient(sl[None], sl[None], (10.0, sy, sx))
    assert m.mean_wall_thickness_mm == pytest.approx(12.0, abs=1.0)
    assert m.max_wall_thickness_mm == pytest.approx(12.0, abs=sx)


def test_empty_masks_give_nan_summaries():
    z = np.zeros((3, 8, 8), dtype=np.uint8)
    m = measure_patient(z, z, (5.0, 1.0, 1.0))
    for key in ("mean_wall_thickness_mm", "max_wall_thickness_sd_mm", "wall_thickness_basal_mm",
                "systolic_thickening_percent", "rv_lv_edv_ratio", "myo_lv_volume_ratio_ed", "myo_lv_volume_ratio_es"):
        assert math.isnan(getattr(m, key)), key
    assert m.max_wall_thickness_mm == 0.0


def test_old_constructor_still_works_and_csv_columns_carry_units():
    m = AnatomyMeasures(1.0, 0.5, 0.5, 50.0, 1.0, 0.5, 0.5, 50.0, 1.0, 5.0)
    assert math.isnan(m.mean_wall_thickness_mm) and m.bsa_m2 is None
    assert set(CSV_COLUMNS) == set(m.as_dict())
    assert CSV_COLUMNS["lvef"] == "lvef_percent" and CSV_COLUMNS["lv_edv_ml"] == "lv_edv_ml"
    units = ("_ml", "_percent", "_g", "_mm", "_m2", "_ratio", "_ratio_ed", "_ratio_es", "_count")
    assert all(col.endswith(units) for col in CSV_COLUMNS.values()), CSV_COLUMNS
    assert len(set(CSV_COLUMNS.values())) == len(CSV_COLUMNS)


def _acdc_root() -> Path:
    env = os.environ.get("ACDC_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared/data/acdc/training"


@pytest.mark.acdc
def test_acdc_expert_masks_order_the_classes_as_the_definitions_say():
    root = _acdc_root()
    if not root.is_dir():
        pytest.skip(f"ACDC not found at {root}")
    from cmrprior.io.acdc import read_acdc_patient
    from cmrprior.io.load import load_patient

    per_class: dict[str, list[AnatomyMeasures]] = {}
    for pdir in sorted(root.glob("patient*"))[::3]:
        pv = load_patient(read_acdc_patient(pdir))
        rec = pv.record
        per_class.setdefault(rec.label, []).append(measure_patient(
            pv.ed_mask.array, pv.es_mask.array, pv.ed_mask.spacing, rec.height_cm, rec.weight_kg))

    def mean(group: str, key: str) -> float:
        return float(np.nanmean([getattr(m, key) for m in per_class[group]]))

    assert mean("HCM", "mean_wall_thickness_mm") > mean("NOR", "mean_wall_thickness_mm") + 2
    assert mean("NOR", "systolic_thickening_percent") > mean("MINF", "systolic_thickening_percent")
    assert mean("NOR", "systolic_thickening_percent") > mean("DCM", "systolic_thickening_percent")
    assert mean("DCM", "myo_lv_volume_ratio_ed") < mean("NOR", "myo_lv_volume_ratio_ed") < mean("HCM", "myo_lv_volume_ratio_ed")
    assert mean("RV", "rv_lv_edv_ratio") > mean("NOR", "rv_lv_edv_ratio")
    # published normal ranges (thickening 30-60 %, mean wall 6-10 mm)
    assert 6 < mean("NOR", "mean_wall_thickness_mm") < 10
    assert 25 < mean("NOR", "systolic_thickening_percent") < 80
