"""Regional (AHA-style segment) thickness, thickening and their spread, on rings with one segment that does not
thicken, against values computed by hand; and the new RV/LV measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrprior.anatomy.measure import CSV_COLUMNS, measure_patient
from cmrprior.anatomy.sectors import (
    SegmentalWall,
    rv_anchor_angle,
    sector_means,
    segmental_spread,
)

S = 0.25  # mm per pixel: fine enough that ray means sit within a few hundredths of a mm of the truth
N = 320


def _polar() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:N, :N].astype(np.float64)
    y, x = (yy - (N - 1) / 2) * S, (xx - (N - 1) / 2) * S
    return np.hypot(y, x), np.arctan2(y, x)


def _ring(r_in: float, r_out: np.ndarray | float, anchor: float) -> np.ndarray:
    """LV cavity disk r_in (3), myocardium to r_out (2, per pixel), RV (1): half annulus 30-38 mm centred on the
    direction `anchor` (radians, atan2(y, x) with y the row)."""
    r, th = _polar()
    m = np.zeros((N, N), dtype=np.uint8)
    m[(r >= 30) & (r < 38) & (np.cos(th - anchor) > 0)] = 1
    m[r < r_out] = 2
    m[r < r_in] = 3
    return m


def _infarct_pair(anchor: float, n_slices: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """ED: wall 20 -> 28 mm (8 mm) everywhere. ES: cavity 16 mm, wall to 27 mm (11 mm, +37.5 %) except in the
    wedge [anchor + 120, anchor + 180) degrees, where it stays 8 mm thick (16 -> 24 mm): no thickening."""
    _, th = _polar()
    rel = np.degrees((th - anchor) % (2 * np.pi))
    outer_es = np.where((rel >= 120) & (rel < 180), 24.0, 27.0)
    ed = np.stack([_ring(20.0, 28.0, anchor)] * n_slices)
    es = np.stack([_ring(16.0, outer_es, anchor)] * n_slices)
    return ed, es


def _segments(m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = m.as_dict()
    get = lambda kind: np.array([d[f"seg{k:02d}_{kind}"] for k in range(1, 17)])  # noqa: E731
    return get("wall_ed_mm"), get("wall_es_mm"), get("thickening_percent")


# By hand: the wedge is sector 3 of the basal and mid levels (60-degree sectors starting at the RV direction:
# [120, 180) degrees) -> segments 3 and 9 stay 8 mm (0 %); on the apical level (90-degree sectors) it covers
# 60 of the 90 degrees of sector 2 (segment 14): ES (60 x 8 + 30 x 11) / 90 = 9 mm, +12.5 %.
ES_EXPECTED = np.array([11.0] * 16)
ES_EXPECTED[[2, 8]] = 8.0
ES_EXPECTED[13] = 9.0
THICK_EXPECTED = 100 * (ES_EXPECTED - 8.0) / 8.0


@pytest.mark.parametrize("anchor_deg", [180.0, -90.0, 30.0])
def test_one_non_thickening_segment_on_a_ring(anchor_deg):
    ed, es = _infarct_pair(math.radians(anchor_deg))
    m = measure_patient(ed, es, (8.0, S, S))
    wall_ed, wall_es, thick = _segments(m)
    assert wall_ed == pytest.approx(np.full(16, 8.0), abs=0.15)
    assert wall_es == pytest.approx(ES_EXPECTED, abs=0.25)
    assert thick == pytest.approx(THICK_EXPECTED, abs=3.5)
    # spread over the 16 segments: 13 x 37.5 %, 2 x 0 %, 1 x 12.5 % -> mean 31.25, SD sqrt(2812.5 / 16)
    assert m.sector_thickening_sd_percent == pytest.approx(math.sqrt(2812.5 / 16), abs=1.5)  # 13.26
    assert m.sector_thickening_min_percent == pytest.approx(0.0, abs=3.5)
    assert m.sector_thickening_max_percent == pytest.approx(37.5, abs=3.5)
    assert m.sectors_hypokinetic_count == 3  # below half the median (18.75 %): 0, 0, 12.5
    assert m.sectors_akinetic_count == 2  # below 10 %
    assert m.sector_wall_ed_cv_ratio == pytest.approx(0.0, abs=0.01)
    assert m.sector_wall_ed_min_ratio == pytest.approx(1.0, abs=0.02)
    # ES: 13 x 11, 2 x 8, 1 x 9 mm: mean 10.5, SD sqrt(18 / 16)
    assert m.sector_wall_es_cv_ratio == pytest.approx(math.sqrt(18 / 16) / 10.5, abs=0.01)  # 0.101


def test_uniform_thickening_has_no_spread_and_an_absent_rv_starts_at_angle_zero():
    ed = np.stack([_ring(20.0, 28.0, 0.0)] * 6)
    es = np.stack([_ring(16.0, 27.0, 0.0)] * 6)
    m = measure_patient(np.where(ed == 1, 0, ed), np.where(es == 1, 0, es), (8.0, S, S))
    _, _, thick = _segments(m)
    assert thick == pytest.approx(np.full(16, 37.5), abs=3.0)
    assert m.sector_thickening_sd_percent < 1.0 and m.sectors_hypokinetic_count == 0
    assert rv_anchor_angle(np.where(ed == 1, 0, ed), (S, S)) is None


def test_rv_anchor_angle_points_to_the_rv():
    for deg in (180.0, -90.0, 30.0):
        ed = np.stack([_ring(20.0, 28.0, math.radians(deg))] * 2)
        assert math.degrees(rv_anchor_angle(ed, (S, S))) == pytest.approx(deg, abs=0.5)


def test_sector_means_follow_the_anchor_and_skip_rays_that_miss():
    profile = np.arange(360, dtype=np.float64) + 1.0  # ray k (k degrees) has value k + 1
    assert sector_means(profile, 0.0, 6) == pytest.approx([30.5, 90.5, 150.5, 210.5, 270.5, 330.5])
    shifted = sector_means(profile, math.radians(90), 4)  # sectors [90, 180), [180, 270), [270, 360), [0, 90)
    assert shifted == pytest.approx([135.5, 225.5, 315.5, 45.5])
    profile[:60] = 0.0  # no myocardium on the first 60 rays
    assert np.isnan(sector_means(profile, 0.0, 6)[0])


def test_spread_with_a_negative_median_and_missing_segments():
    thick = np.array([-10.0, -5.0, 5.0, np.nan] + [np.nan] * 12)
    wall = SegmentalWall(np.array([8.0, 4.0, 8.0] + [np.nan] * 13), np.array([7.2, 3.8, 8.4] + [np.nan] * 13), thick)
    s = segmental_spread(wall)
    assert s.thickening_min_pct == -10.0 and s.thickening_max_pct == 5.0
    assert s.thickening_sd_pct == pytest.approx(float(np.std([-10.0, -5.0, 5.0])))
    assert s.n_hypokinetic == 2  # median -5 taken as 0: segments below 0 %
    assert s.n_akinetic == 3
    assert s.ed_thickness_min_ratio == pytest.approx(0.5)
    assert s.ed_thickness_cv == pytest.approx(float(np.std([8.0, 4.0, 8.0]) / np.mean([8.0, 4.0, 8.0])))


def test_segments_need_slices_measured_at_both_phases():
    ed, es = _infarct_pair(0.0)
    es_empty = np.zeros_like(es)
    m = measure_patient(ed, es_empty, (8.0, S, S))
    _, _, thick = _segments(m)
    assert np.isnan(thick).all() and math.isnan(m.sector_thickening_sd_percent)
    assert math.isnan(m.sectors_hypokinetic_count)
    assert math.isnan(m.sector_wall_ed_cv_ratio)  # segments come from paired slices only
    # two slices: the basal and mid levels have one each, the apical level none (NaN)
    m2 = measure_patient(ed[:2], es[:2], (8.0, S, S))
    wall_ed, _, _ = _segments(m2)
    assert np.isfinite(wall_ed[:12]).all() and np.isnan(wall_ed[12:]).all()


def test_rv_lv_esv_ratio_and_rvef_minus_lvef():
    ed = np.stack([_ring(20.0, 28.0, math.pi)] * 4)
    es = np.stack([_ring(14.0, 25.0, math.pi)] * 4)
    es = np.where(es == 1, 0, es).astype(np.uint8)
    r, th = _polar()
    es[:, (r >= 30) & (r < 35) & (np.cos(th - math.pi) > 0)] = 1  # RV at ES: half annulus 30-35 mm
    m = measure_patient(ed, es, (8.0, S, S))
    assert m.rv_lv_esv_ratio == pytest.approx(0.5 * (35**2 - 30**2) / 14**2, rel=0.02)  # 0.829
    rvef = 100 * (1 - (35**2 - 30**2) / (38**2 - 30**2))  # 58.3 %
    lvef = 100 * (1 - 14**2 / 20**2)  # 51 %
    assert m.rvef_minus_lvef_percent == pytest.approx(rvef - lvef, abs=1.0)  # 7.3 points
    assert m.rvef_minus_lvef_percent == pytest.approx(m.rvef - m.lvef)
    for field in ("rv_lv_esv_ratio", "rvef_minus_lvef_percent", "sectors_hypokinetic_count", "seg16_thickening_percent"):
        assert CSV_COLUMNS[field] == field
