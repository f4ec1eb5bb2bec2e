"""Phantom building blocks against hand-computed values and brute-force references (no files written)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrprior.anatomy.measure import AnatomyMeasures
from cmrprior.data.phantom.body import coverage, ellipse_sdf
from cmrprior.data.phantom.heart import Grid, build_ed, build_es, heart_labels, lv_lengths, rv_thresholds, taper
from cmrprior.data.phantom.physiology import ANGLES, KNOWN_CLASSES, sample_physiology, violates_definition
from cmrprior.data.phantom.render import rician_noise


def _measures(**kw) -> AnatomyMeasures:
    base = dict(lv_edv_ml=150.0, lv_esv_ml=60.0, lv_sv_ml=90.0, lvef=60.0, rv_edv_ml=150.0, rv_esv_ml=70.0,
                rv_sv_ml=80.0, rvef=53.0, myo_mass_g=110.0, max_wall_thickness_mm=9.0, bsa_m2=1.9,
                lv_edv_ml_m2=79.0, lv_esv_ml_m2=31.6, rv_edv_ml_m2=79.0, rv_esv_ml_m2=36.8, myo_mass_g_m2=58.0)
    base.update(kw)
    return AnatomyMeasures(**base)


def test_violates_definition_by_hand():
    assert violates_definition("NOR", _measures()) is None
    assert "LVEF > 50" in violates_definition("NOR", _measures(lvef=48.0))
    assert "wall < 12" in violates_definition("NOR", _measures(max_wall_thickness_mm=12.5))
    assert violates_definition("DCM", _measures(lvef=25.0, lv_edv_ml_m2=130.0)) is None
    assert "index > 100" in violates_definition("DCM", _measures(lvef=25.0, lv_edv_ml_m2=95.0))
    assert violates_definition("HCM", _measures(max_wall_thickness_mm=18.0, lvef=70.0)) is None
    assert "wall > 15" in violates_definition("HCM", _measures(max_wall_thickness_mm=14.0))
    assert violates_definition("MINF", _measures(lvef=30.0)) is None
    assert violates_definition("MINF", _measures(lvef=45.0)) is not None
    assert violates_definition("RV", _measures(rv_edv_ml_m2=120.0)) is None  # dilated, normal RVEF
    assert violates_definition("RV", _measures(rvef=30.0)) is None  # normal size, low RVEF
    assert violates_definition("RV", _measures()) is not None


def test_taper_is_a_half_ellipse_profile():
    x = np.array([-1.0, 0.0, 30.0, 60.0, 80.0])
    np.testing.assert_allclose(taper(x, 60.0), [0.0, 1.0, math.sqrt(0.75), 0.0, 0.0])


def test_ellipse_sdf_sign_is_exact_and_partial_volume_preserves_area():
    yy, xx = np.mgrid[-40:40:0.5, -40:40:0.5] + 0.25
    d = ellipse_sdf(xx, yy, 1.0, -2.0, 20.0, 12.0)
    inside = ((xx - 1.0) / 20.0) ** 2 + ((yy + 2.0) / 12.0) ** 2 < 1
    np.testing.assert_array_equal(d < 0, inside)
    # near the boundary the first-order distance matches the true distance on the axes
    assert float(ellipse_sdf(np.array([23.0]), np.array([-2.0]), 1.0, -2.0, 20.0, 12.0)[0]) == pytest.approx(2.0, rel=0.02)
    # anti-aliased coverage integrates to the ellipse area (pi a b) on a coarse 2 mm grid
    yc, xc = np.mgrid[-40:40:2.0, -40:40:2.0] + 1.0
    area = coverage(ellipse_sdf(xc, yc, 0.3, 0.7, 20.0, 12.0), 2.0).sum() * 4.0
    assert area == pytest.approx(math.pi * 20 * 12, rel=0.01)


def _grid(pixel: float = 1.6, dz: float = 9.0, n: int = 13, size: int = 150) -> Grid:
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    u, v = (xx - c) * pixel, (c - yy) * pixel
    depths = 2.0 + dz * np.arange(n)
    return Grid.crop(np.broadcast_to(u, (n, size, size)).copy(), np.broadcast_to(v, (n, size, size)).copy(),
                     depths, pixel * pixel * dz)


@pytest.mark.parametrize("label", KNOWN_CLASSES)
def test_volumes_are_matched_on_the_pixel_grid(label):
    rng = np.random.default_rng(11)
    phys = sample_physiology(label, rng)
    grid = _grid()
    ed = build_ed(phys, grid, rng=rng)
    es = build_es(phys, ed, grid)
    voxel_ml = grid.voxel_mm3 / 1000
    ed_lab, es_lab = heart_labels(ed, grid), heart_labels(es, grid)
    count = lambda lab, k: np.count_nonzero(lab == k) * voxel_ml  # noqa: E731
    assert count(ed_lab, 3) == pytest.approx(phys.lv_edv, abs=voxel_ml)
    assert count(ed_lab, 1) == pytest.approx(phys.rv_edv, abs=voxel_ml)
    assert count(es_lab, 1) == pytest.approx(phys.rv_edv * (1 - phys.rvef / 100), abs=voxel_ml)
    lvef = 100 * (1 - count(es_lab, 3) / count(ed_lab, 3))
    assert lvef == pytest.approx(phys.lvef, abs=0.5)
    # brute-force reference for the RV threshold inversion: pixels below the chosen height are the RV label
    assert np.count_nonzero(rv_thresholds(ed, grid) < ed.rv_height) == np.count_nonzero(ed_lab == 1)
    # the ES base has descended, the LV is shorter, the apex stays
    assert es.base_s > 0 and es.l_endo + es.base_s == pytest.approx(ed.l_endo)
    assert lv_lengths(phys)[1] == pytest.approx(ed.l_endo)


@pytest.mark.parametrize("seed", [2, 4])  # DCMs with an LVEF near 10 %
def test_a_failing_heart_still_contracts_radially(seed):
    """Base descent alone could eject a small stroke volume; it may carry at most `LONG_AXIS_SHARE` of it,
    so the mid-ventricular cavity moves too (without, every mid slice stays the same over the cycle)."""
    rng = np.random.default_rng(seed)
    phys = sample_physiology("DCM", rng)
    assert phys.lvef < 12
    grid = _grid()
    ed = build_ed(phys, grid, rng=rng)
    es = build_es(phys, ed, grid)
    moving = phys.kinesis > 0.5
    assert float(np.mean(es.endo[moving] / ed.endo[moving])) < 0.98
    lab_ed, lab_es = heart_labels(ed, grid), heart_labels(es, grid)
    lvef = 100 * (1 - np.count_nonzero(lab_es == 3) / np.count_nonzero(lab_ed == 3))
    assert lvef == pytest.approx(phys.lvef, abs=0.5)
    third = lab_ed.shape[0] // 3
    mid = slice(third, 2 * third)  # the middle third of the stack
    assert third > 0 and np.count_nonzero(lab_es[mid] == 3) < 0.97 * np.count_nonzero(lab_ed[mid] == 3)


def test_akinetic_sector_neither_moves_nor_thickens():
    rng = np.random.default_rng(4)
    phys = sample_physiology("MINF", rng)
    grid = _grid()
    ed = build_ed(phys, grid, rng=rng)
    es = build_es(phys, ed, grid)
    sector = phys.kinesis == 0
    assert sector.sum() >= 40  # at least 40 degrees akinetic
    np.testing.assert_allclose(es.endo[sector], ed.endo[sector])
    np.testing.assert_allclose((es.epi - es.endo)[sector], (ed.epi - ed.endo)[sector])
    healthy = phys.kinesis > 0.9
    assert np.all(es.endo[healthy] < 0.95 * ed.endo[healthy])  # the rest contracts
    assert np.all((es.epi - es.endo)[healthy] > (ed.epi - ed.endo)[healthy])  # and thickens
    # the sector is thinned relative to the remote myocardium
    assert phys.wall_ed[sector].max() < 0.75 * np.median(phys.wall_ed[healthy])
    assert ANGLES.shape == phys.wall_ed.shape


@pytest.mark.parametrize("signal", [0.0, 0.5, 2.0, 10.0])
def test_rician_noise_matches_scipy_rice_distribution(signal):
    stats = pytest.importorskip("scipy.stats")
    sigma = 0.7
    x = rician_noise(np.full(400_000, signal, dtype=np.float32), sigma, np.random.default_rng(0))
    ref = stats.rice(b=signal / sigma, scale=sigma)
    assert x.mean() == pytest.approx(ref.mean(), rel=0.01)
    assert x.std() == pytest.approx(ref.std(), rel=0.01)
    assert x.min() >= 0
