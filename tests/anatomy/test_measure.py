"""Anatomy measurements checked against hand-computed volumes, EF, BSA and analytic wall thickness."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from cmrprior.anatomy.measure import (
    AnatomyMeasures,
    ejection_fraction,
    max_wall_thickness_mm,
    measure_cohort,
    measure_patient,
    mosteller_bsa,
    slice_wall_thickness_profile,
)
from cmrprior.errors import DataError, InputError
from cmrprior.io.records import PatientRecord, PatientVolumes, Volume


def _grid(h: int, w: int, sy: float, sx: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in mm, origin at the image centre."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    return (yy - (h - 1) / 2) * sy, (xx - (w - 1) / 2) * sx


def _annulus_slice(
    h: int, w: int, sy: float, sx: float, r_in: float, r_out: float, inner_offset_x: float = 0.0
) -> np.ndarray:
    """LV cavity disk (label 3) of radius r_in centred at (0, offset), myocardium out to r_out (label 2)."""
    y, x = _grid(h, w, sy, sx)
    m = np.zeros((h, w), dtype=np.uint8)
    m[y**2 + x**2 < r_out**2] = 2
    m[y**2 + (x - inner_offset_x) ** 2 < r_in**2] = 3
    return m


def test_box_volumes_are_voxel_count_times_voxel_volume():
    ed = np.zeros((12, 40, 50), dtype=np.uint8)
    es = np.zeros_like(ed)
    ed[1:11, 5:25, 5:35] = 3  # 10 * 20 * 30 = 6000 voxels
    es[1:11, 5:25, 5:20] = 3  # 3000 voxels
    ed[1:6, 30:38, 5:15] = 1  # 5 * 8 * 10 = 400 voxels
    es[1:6, 30:38, 5:9] = 1  # 160 voxels
    ed[2:4, 0:2, 40:50] = 2  # 2 * 2 * 10 = 40 voxels
    spacing = (2.0, 1.5, 1.5)  # 4.5 mm^3 per voxel
    m = measure_patient(ed, es, spacing)
    assert m.lv_edv_ml == pytest.approx(6000 * 4.5 / 1000)  # 27 ml
    assert m.lv_esv_ml == pytest.approx(13.5)
    assert m.lv_sv_ml == pytest.approx(13.5)
    assert m.lvef == pytest.approx(50.0)
    assert m.rv_edv_ml == pytest.approx(1.8)
    assert m.rv_esv_ml == pytest.approx(0.72)
    assert m.rvef == pytest.approx(60.0)
    assert m.myo_mass_g == pytest.approx(40 * 4.5 / 1000 * 1.05)
    assert m.bsa_m2 is None and m.lv_edv_ml_m2 is None and m.myo_mass_g_m2 is None


def test_ejection_fraction_by_hand():
    assert ejection_fraction(150.0, 60.0) == pytest.approx(60.0)
    assert ejection_fraction(200.0, 160.0) == pytest.approx(20.0)
    assert math.isnan(ejection_fraction(0.0, 0.0))


def test_mosteller_bsa_and_indexed_volumes():
    assert mosteller_bsa(180.0, 80.0) == pytest.approx(2.0)  # sqrt(180 * 80 / 3600) = sqrt(4)
    assert mosteller_bsa(160.0, 56.25) == pytest.approx(math.sqrt(2.5))
    ed = np.zeros((2, 10, 10), dtype=np.uint8)
    ed[:, :5, :] = 3  # 100 voxels of 1 mm^3 x 10 (z) -> 1 ml
    ed[:, 5:, :4] = 2
    es = np.zeros_like(ed)
    es[:, :2, :] = 3
    m = measure_patient(ed, es, (10.0, 1.0, 1.0), height_cm=180.0, weight_kg=80.0)
    assert m.bsa_m2 == pytest.approx(2.0)
    assert m.lv_edv_ml == pytest.approx(1.0)
    assert m.lv_edv_ml_m2 == pytest.approx(0.5)
    assert m.lv_esv_ml_m2 == pytest.approx(0.4 / 2.0)
    assert m.myo_mass_g_m2 == pytest.approx(0.4 * 1.05 / 2.0)
    assert measure_patient(ed, es, (10.0, 1.0, 1.0), height_cm=180.0).bsa_m2 is None
    with pytest.raises(InputError):
        mosteller_bsa(0.0, 70.0)


def test_cylinder_and_annulus_volumes_match_analytic_values():
    sy = sx = 0.5
    r_in, r_out, n_slices, dz = 20.0, 30.0, 6, 8.0
    sl = _annulus_slice(160, 160, sy, sx, r_in, r_out)
    ed = np.stack([sl] * n_slices)
    es = np.stack([_annulus_slice(160, 160, sy, sx, 15.0, 27.0)] * n_slices)
    m = measure_patient(ed, es, (dz, sy, sx))
    cavity_ml = math.pi * r_in**2 * n_slices * dz / 1000
    myo_ml = math.pi * (r_out**2 - r_in**2) * n_slices * dz / 1000
    assert m.lv_edv_ml == pytest.approx(cavity_ml, rel=0.01)
    assert m.myo_mass_g == pytest.approx(myo_ml * 1.05, rel=0.01)
    assert m.lvef == pytest.approx(100 * (1 - 15.0**2 / 20.0**2), abs=1.0)  # 43.75 %
    assert m.max_wall_thickness_mm == pytest.approx(r_out - r_in, abs=sx)


@pytest.mark.parametrize(("r_in", "r_out"), [(20.0, 28.0), (25.0, 43.0), (12.0, 16.0)])
def test_concentric_annulus_thickness_is_constant_over_angles(r_in, r_out):
    sl = _annulus_slice(200, 200, 0.5, 0.5, r_in, r_out)
    profile = slice_wall_thickness_profile(sl, (0.5, 0.5))
    assert profile is not None and profile.shape == (360,)
    # every single ray within one pixel diagonal (two boundary crossings, half a diagonal each)
    assert np.all(np.abs(profile - (r_out - r_in)) <= 0.5 * math.sqrt(2))
    assert max_wall_thickness_mm(sl[None], (8.0, 0.5, 0.5)) == pytest.approx(r_out - r_in, abs=0.5)


def test_eccentric_annulus_gives_the_analytic_maximum():
    # cavity shifted by e towards +x: thickness along a ray from its centre is
    # -e cos(t) + sqrt(R^2 - e^2 sin^2 t) - r, maximal (R - r + e) towards -x, minimal (R - r - e) towards +x
    r_in, r_out, e = 18.0, 32.0, 5.0
    sl = _annulus_slice(200, 200, 0.4, 0.4, r_in, r_out, inner_offset_x=e)
    profile = slice_wall_thickness_profile(sl, (0.4, 0.4))
    t = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    analytic = -e * np.cos(t) + np.sqrt(r_out**2 - e**2 * np.sin(t) ** 2) - r_in
    assert np.max(np.abs(profile - analytic)) <= 0.8
    assert max_wall_thickness_mm(sl[None], (10.0, 0.4, 0.4)) == pytest.approx(r_out - r_in + e, abs=0.4)


def test_anisotropic_pixels_are_measured_in_mm():
    sy, sx = 1.0, 2.0
    sl = _annulus_slice(120, 60, sy, sx, 20.0, 32.0)
    assert max_wall_thickness_mm(sl[None], (10.0, sy, sx)) == pytest.approx(12.0, abs=sx)
    profile = slice_wall_thickness_profile(sl, (sy, sx))
    assert np.median(profile) == pytest.approx(12.0, abs=1.0)


def test_max_over_slices_and_thin_spike_is_filtered():
    thin = _annulus_slice(160, 160, 0.5, 0.5, 20.0, 26.0)
    thick = _annulus_slice(160, 160, 0.5, 0.5, 20.0, 36.0)
    cap = np.where(thin > 0, 2, 0).astype(np.uint8)  # apical cap: myocardium only, never measured
    vol = np.stack([thin, thick, cap])
    assert max_wall_thickness_mm(vol, (10.0, 0.5, 0.5)) == pytest.approx(16.0, abs=0.5)
    # a one-ray spur (1 px wide strip of myocardium sticking out) must not set the maximum
    spur = thin.copy()
    spur[80, 132:150] = 2
    assert max_wall_thickness_mm(spur[None], (10.0, 0.5, 0.5)) == pytest.approx(6.0, abs=0.5)


def test_empty_masks_give_zero_volumes_and_nan_ef():
    z = np.zeros((3, 8, 8), dtype=np.uint8)
    m = measure_patient(z, z, (5.0, 1.0, 1.0))
    assert m.lv_edv_ml == 0 and m.max_wall_thickness_mm == 0
    assert math.isnan(m.lvef) and math.isnan(m.rvef)


def test_bad_masks_raise_data_error():
    good = np.zeros((2, 8, 8), dtype=np.uint8)
    with pytest.raises(DataError, match="3D"):
        measure_patient(good[0], good, (5.0, 1.0, 1.0))
    bad = good.copy()
    bad[0, 0, 0] = 5
    with pytest.raises(DataError, match="labels outside"):
        measure_patient(good, bad, (5.0, 1.0, 1.0))
    with pytest.raises(DataError, match="differ"):
        measure_patient(good, np.zeros((2, 8, 9), np.uint8), (5.0, 1.0, 1.0))
    with pytest.raises(DataError, match="spacing"):
        measure_patient(good, good, (5.0, 0.0, 1.0))


def _volume(arr: np.ndarray, spacing, path=None) -> Volume:
    return Volume(array=arr.astype(np.float32), spacing=spacing, affine=np.eye(4), path=path)


def test_measure_cohort_rows_match_measure_patient():
    rng = np.random.default_rng(0)
    pvs, expected = [], []
    for i in range(3):
        ed = rng.integers(0, 4, size=(4, 16, 16)).astype(np.uint8)
        es = np.where(rng.random(ed.shape) < 0.5, ed, 0).astype(np.uint8)
        spacing = (8.0, 1.25, 1.25)
        rec = PatientRecord(f"p{i}", "NOR", Path("ed.nii.gz"), Path("es.nii.gz"), height_cm=170.0, weight_kg=70.0)
        pvs.append(PatientVolumes(rec, _volume(ed, spacing), _volume(es, spacing), _volume(ed, spacing),
                                  _volume(es, spacing)))
        expected.append(measure_patient(ed, es, spacing, 170.0, 70.0))
    rows = measure_cohort(pvs)
    assert [r["patient_id"] for r in rows] == ["p0", "p1", "p2"]
    for row, exp in zip(rows, expected):
        assert row["label"] == "NOR"
        for key, value in exp.as_dict().items():
            assert row[key] == pytest.approx(value, nan_ok=True)
    no_mask = PatientVolumes(pvs[0].record, pvs[0].ed, pvs[0].es)
    with pytest.raises(DataError, match="p0"):
        measure_cohort([no_mask])


def test_measures_is_frozen():
    m = measure_patient(np.zeros((1, 4, 4), np.uint8), np.zeros((1, 4, 4), np.uint8), (1.0, 1.0, 1.0))
    assert isinstance(m, AnatomyMeasures)
    with pytest.raises(AttributeError):
        m.lvef = 1.0  # type: ignore[misc]


def _acdc_root() -> Path:
    env = os.environ.get("ACDC_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared/data/acdc/training"


@pytest.mark.acdc
def test_acdc_ground_truth_follows_the_published_class_definitions():
    root = _acdc_root()
    if not root.is_dir():
        pytest.skip(f"ACDC not found at {root}")
    nib = pytest.importorskip("nibabel")
    per_class: dict[str, list[AnatomyMeasures]] = {}
    for pdir in sorted(root.glob("patient*")):
        info = dict(
            line.split(":", 1) for line in (pdir / "Info.cfg").read_text().splitlines() if ":" in line
        )
        info = {k.strip(): v.strip() for k, v in info.items()}
        group = info["Group"]
        if group not in ("NOR", "DCM", "HCM"):
            continue

        def gt(frame: int):
            img = nib.load(pdir / f"{pdir.name}_frame{frame:02d}_gt.nii.gz")
            return np.asarray(img.dataobj).transpose(2, 1, 0), img.header.get_zooms()

        ed, zooms = gt(int(info["ED"]))
        es, _ = gt(int(info["ES"]))
        spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
        per_class.setdefault(group, []).append(
            measure_patient(ed, es, spacing, float(info["Height"]), float(info["Weight"]))
        )
    mean = {g: {k: float(np.mean([getattr(m, k) for m in ms])) for k in ("lvef", "lv_edv_ml_m2",
            "max_wall_thickness_mm")} for g, ms in per_class.items()}
    assert mean["DCM"]["lvef"] < 40
    assert mean["NOR"]["lvef"] > 50
    assert mean["DCM"]["lv_edv_ml_m2"] > 100  # ACDC: DCM = LV EDV > 100 ml/m^2 and LVEF < 40 %
    assert mean["HCM"]["max_wall_thickness_mm"] > 15 > mean["NOR"]["max_wall_thickness_mm"]
