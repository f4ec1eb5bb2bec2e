"""The mid-ventricular RV/LV area ratios and the definition measures, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrprior.anatomy.measure import CSV_COLUMNS, measure_patient


def _stack(lv_areas: list[int], rv_areas: list[int], w: int = 40) -> np.ndarray:
    """One slice per entry: an LV cavity of `lv` pixels in row-major order from the top-left, an RV of `rv`
    pixels from the bottom-right (no overlap for these sizes)."""
    m = np.zeros((len(lv_areas), w, w), dtype=np.uint8)
    for z, (lv, rv) in enumerate(zip(lv_areas, rv_areas, strict=True)):
        flat = m[z].reshape(-1)
        flat[:lv] = 3
        if rv:
            flat[-rv:] = 1
    return m


def test_mid_third_ratio_uses_the_middle_third_of_the_ed_lv_slices():
    # LV cavity on slices 1-7 (7 slices): 7 // 3 = 2 left out at each end, the middle third is slices 3, 4, 5.
    lv_ed = [0, 100, 110, 120, 130, 140, 150, 160, 0]
    rv_ed = [500, 900, 900, 60, 70, 80, 900, 900, 0]
    lv_es = [0, 50, 50, 40, 50, 60, 50, 50, 0]
    rv_es = [400, 300, 300, 20, 30, 40, 300, 300, 0]
    m = measure_patient(_stack(lv_ed, rv_ed), _stack(lv_es, rv_es), (10.0, 1.0, 1.0))
    assert m.rv_lv_area_mid_ed_ratio == pytest.approx((60 + 70 + 80) / (120 + 130 + 140))
    assert m.rv_lv_area_mid_es_ratio == pytest.approx((20 + 30 + 40) / (40 + 50 + 60))


def test_mid_ratio_with_fewer_than_three_lv_slices_uses_them_all():
    m = measure_patient(_stack([0, 100, 200], [50, 30, 40]), _stack([0, 50, 100], [10, 10, 20]), (8.0, 1.0, 1.0))
    assert m.rv_lv_area_mid_ed_ratio == pytest.approx(70 / 300)
    assert m.rv_lv_area_mid_es_ratio == pytest.approx(30 / 150)


def test_mid_ratio_is_nan_without_lv_cavity_there():
    no_lv = measure_patient(_stack([0, 0, 0], [50, 60, 70]), _stack([0, 0, 0], [5, 6, 7]), (8.0, 1.0, 1.0))
    assert math.isnan(no_lv.rv_lv_area_mid_ed_ratio) and math.isnan(no_lv.rv_lv_area_mid_es_ratio)
    # an ES stack whose middle slices lost their LV cavity: ED's ratio still known, ES's NaN
    m = measure_patient(_stack([100, 100, 100], [10, 20, 30]), _stack([50, 0, 50], [5, 6, 7]), (8.0, 1.0, 1.0))
    assert m.rv_lv_area_mid_ed_ratio == pytest.approx(20 / 100)
    assert math.isnan(m.rv_lv_area_mid_es_ratio)


def _boxes(lv_ed: int, lv_es: int, rv_ed: int, rv_es: int, myo: int) -> tuple[np.ndarray, np.ndarray]:
    """Single-slice 200 x 200 masks with the given pixel counts of each label, each label in its own band of
    rows (LV 0-69, RV 70-139, myocardium 140-199), so none overwrites another."""
    ed, es = np.zeros((1, 200, 200), np.uint8), np.zeros((1, 200, 200), np.uint8)
    for mask, lv, rv, my in ((ed, lv_ed, rv_ed, myo), (es, lv_es, rv_es, 0)):
        assert max(lv, rv) <= 70 * 200 and my <= 60 * 200
        mask[0, :70].reshape(-1)[:lv] = 3
        mask[0, 70:140].reshape(-1)[:rv] = 1
        mask[0, 140:].reshape(-1)[:my] = 2
    return ed, es


def _box_measures(lv_ed: int, lv_es: int, rv_ed: int, rv_es: int, myo: int, **body: float):
    """`measure_patient` of `_boxes` on 10 x 2 x 2 mm voxels (0.04 ml each); `body`: height_cm and weight_kg."""
    return measure_patient(*_boxes(lv_ed, lv_es, rv_ed, rv_es, myo), (10.0, 2.0, 2.0), **body)


ADULT = {"height_cm": 180.0, "weight_kg": 80.0}  # BSA 2.0 m^2 (Mosteller)


def test_definition_measures_by_hand():
    # 10 x 2 x 2 mm voxels: 0.04 ml each; BSA of 180 cm and 80 kg is 2.0 m^2 (Mosteller)
    m = _box_measures(lv_ed=6000, lv_es=4500, rv_ed=1000, rv_es=300, myo=200, **ADULT)
    # LV: EDV 240 ml, ESV 180 ml -> EF 25 %, 15 points below 40; EDV index 120 ml/m^2 -> 20 above 100
    assert m.lvef_below_40_percent == pytest.approx(15.0)
    assert m.lv_edv_index_above_100_ml_m2 == pytest.approx(20.0)
    # RV: EDV 40 ml, ESV 12 ml -> EF 70 %: inside; EDV index 20 ml/m^2: inside
    assert m.rvef_below_40_percent == 0.0 and m.rv_edv_index_above_110_ml_m2 == 0.0
    # myocardium 200 voxels = 8 ml = 8.4 g, 4.2 g/m^2: inside
    assert m.myo_mass_index_above_110_g_m2 == 0.0


def test_definition_measures_of_a_dilated_failing_rv_and_a_heavy_myocardium():
    m = _box_measures(lv_ed=1000, lv_es=400, rv_ed=6000, rv_es=4800, myo=3000, **ADULT)
    # RV: EDV 240 ml, ESV 192 ml -> EF 20 %, 20 points below 40; index 120 -> 10 above 110
    assert m.rvef_below_40_percent == pytest.approx(20.0)
    assert m.rv_edv_index_above_110_ml_m2 == pytest.approx(10.0)
    # myocardium 3000 voxels = 120 ml = 126 g, 63 g/m^2: inside; LV EF 60 %: inside
    assert m.myo_mass_index_above_110_g_m2 == 0.0 and m.lvef_below_40_percent == 0.0
    heavy_myo = (1000, 400, 100, 50, 5000)  # 5000 myocardium voxels = 200 ml = 210 g
    heavy = _box_measures(*heavy_myo, **ADULT)
    assert heavy.myo_mass_index_above_110_g_m2 == 0.0  # 105 g/m^2 on 2.0 m^2: inside
    light_patient = _box_measures(*heavy_myo, height_cm=150.0,
                                  weight_kg=54.0)  # BSA sqrt(150 * 54 / 3600) = 1.5 m^2: 140 g/m^2
    assert light_patient.myo_mass_index_above_110_g_m2 == pytest.approx(210.0 / 1.5 - 110.0)


def test_indexed_definition_measures_need_height_and_weight():
    m = _box_measures(lv_ed=6000, lv_es=4500, rv_ed=1000, rv_es=300, myo=200)
    assert m.lv_edv_index_above_100_ml_m2 is None and m.rv_edv_index_above_110_ml_m2 is None
    assert m.myo_mass_index_above_110_g_m2 is None
    assert m.lvef_below_40_percent == pytest.approx(15.0)


def _annulus(h: int, r_in: float, r_out: float, pixel: float) -> np.ndarray:
    yy, xx = (np.mgrid[:h, :h].astype(np.float64) - (h - 1) / 2) * pixel
    m = np.zeros((h, h), np.uint8)
    m[yy**2 + xx**2 < r_out**2] = 2
    m[yy**2 + xx**2 < r_in**2] = 3
    return m[None]


def test_wall_thickness_past_15_mm():
    thick = _annulus(160, 10.0, 28.0, 0.5)  # an 18 mm wall: 3 mm past 15
    m = measure_patient(thick, thick, (10.0, 0.5, 0.5))
    assert m.max_wall_thickness_above_15_mm == pytest.approx(3.0, abs=0.5)
    thin = _annulus(160, 20.0, 28.0, 0.5)  # an 8 mm wall
    assert measure_patient(thin, thin, (10.0, 0.5, 0.5)).max_wall_thickness_above_15_mm == 0.0


def test_undefined_ef_leaves_its_definition_measure_undefined():
    z = np.zeros((3, 8, 8), dtype=np.uint8)
    m = measure_patient(z, z, (5.0, 1.0, 1.0))
    assert math.isnan(m.lvef_below_40_percent) and math.isnan(m.rvef_below_40_percent)


def test_new_columns_name_their_units():
    for col in ("rv_lv_area_mid_ed_ratio", "rv_lv_area_mid_es_ratio", "lvef_below_40_percent",
                "rvef_below_40_percent", "lv_edv_index_above_100_ml_m2", "rv_edv_index_above_110_ml_m2",
                "myo_mass_index_above_110_g_m2", "max_wall_thickness_above_15_mm"):
        assert col in CSV_COLUMNS.values()
