"""Synthetic phantom: ACDC layout, class definitions measured on the written masks, determinism, the
spurious cue, atomic/resumable writing. Files are read back with nibabel directly (independent of io/)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrprior.anatomy.measure import measure_patient, slice_wall_thickness_profile
from cmrprior.data.phantom import MANIFEST, PhantomConfig, generate_phantom
from cmrprior.errors import ConfigError, DataError
from cmrprior.io.records import ACDC_CLASSES

SMALL = PhantomConfig(image_size=(128, 144), n_slices=(8, 10))


def _info(folder: Path) -> dict[str, str]:
    out = {}
    for line in (folder / "Info.cfg").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key.strip()] = value.strip()
    return out


def _read(path: Path) -> tuple[np.ndarray, tuple[float, float, float], nib.Nifti1Image]:
    img = nib.load(path)
    zooms = img.header.get_zooms()
    return np.asarray(img.dataobj).transpose(2, 1, 0), (float(zooms[2]), float(zooms[1]), float(zooms[0])), img


def _patient(folder: Path) -> dict:
    info = _info(folder)
    pid = folder.name
    ed_img, spacing, nii = _read(folder / f"{pid}_frame{int(info['ED']):02d}.nii.gz")
    es_img, _, _ = _read(folder / f"{pid}_frame{int(info['ES']):02d}.nii.gz")
    ed_mask, mspacing, _ = _read(folder / f"{pid}_frame{int(info['ED']):02d}_gt.nii.gz")
    es_mask, _, _ = _read(folder / f"{pid}_frame{int(info['ES']):02d}_gt.nii.gz")
    m = measure_patient(ed_mask, es_mask, spacing, float(info["Height"]), float(info["Weight"]))
    return dict(info=info, ed=ed_img, es=es_img, ed_mask=ed_mask, es_mask=es_mask, spacing=spacing,
                mask_spacing=mspacing, nii=nii, m=m, truth=json.loads((folder / "phantom_truth.json").read_text()))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("phantom") / "cohort", n_patients=10, seed=7, config=SMALL)


@pytest.fixture(scope="module")
def patients(cohort) -> list[dict]:
    return [_patient(d) for d in sorted(cohort.glob("patient*"))]


def test_acdc_layout_and_info_cfg(cohort, patients):
    folders = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    assert folders == [f"patient{i:03d}" for i in range(1, 11)]
    labels = [p["info"]["Group"] for p in patients]
    assert labels == list(ACDC_CLASSES) * 2  # round-robin, balanced
    for p in patients:
        info = p["info"]
        assert set(info) == {"ED", "ES", "Group", "Height", "Weight", "NbFrame"}
        assert int(info["ED"]) == 1 < int(info["ES"]) <= int(info["NbFrame"])
        assert 140 < float(info["Height"]) < 210 and 35 < float(info["Weight"]) < 170


def test_nifti_geometry_and_contents(patients):
    for p in patients:
        dz, dy, dx = p["spacing"]
        assert p["mask_spacing"] == p["spacing"]
        assert 1.3 - 1e-6 <= dx == dy <= 1.8 + 1e-6 and 5.0 - 1e-6 <= dz <= 10.0 + 1e-6
        nii = p["nii"]
        np.testing.assert_allclose(np.abs(np.diag(nii.affine))[:3], [dx, dy, dz], rtol=1e-6)
        assert nii.header.get_xyzt_units()[0] == "mm"
        assert p["ed"].shape == p["es"].shape == p["ed_mask"].shape == p["es_mask"].shape
        z, h, w = p["ed"].shape
        assert 8 <= z <= 16 and h >= 128 and w >= 128
        assert p["ed"].dtype == np.int16 and p["ed_mask"].dtype == np.uint8
        for arr in (p["ed"], p["es"]):
            assert np.isfinite(arr).all() and arr.min() >= 0 and arr.std() > 0
        for mask in (p["ed_mask"], p["es_mask"]):
            assert set(np.unique(mask)) <= {0, 1, 2, 3}
            assert {1, 2, 3} <= set(np.unique(mask))
        # blood is bright and myocardium dark in the rendered image (bSSFP contrast)
        img, mask = p["ed"].astype(float), p["ed_mask"]
        assert np.median(img[mask == 3]) > 1.8 * np.median(img[mask == 2])
        assert np.median(img[mask == 1]) > 1.8 * np.median(img[mask == 2])


def test_class_definitions_hold_on_written_masks(patients):
    by = {}
    for p in patients:
        by.setdefault(p["info"]["Group"], []).append(p["m"])
    for m in by["NOR"]:
        assert m.lvef > 50 and m.max_wall_thickness_mm < 12 and m.lv_edv_ml_m2 < 100
    for m in by["DCM"]:
        assert m.lvef < 40 and m.lv_edv_ml_m2 > 100
    for m in by["HCM"]:
        assert m.max_wall_thickness_mm > 15 and m.lvef > 50
    for m in by["MINF"]:
        assert m.lvef < 40
    for m in by["RV"]:
        assert m.rv_edv_ml_m2 > 110 or m.rvef < 40
    assert min(m.lv_edv_ml for m in by["DCM"]) > max(m.lv_edv_ml for m in by["NOR"])
    assert min(m.max_wall_thickness_mm for m in by["HCM"]) > max(m.max_wall_thickness_mm for m in by["NOR"])
    assert np.mean([m.rv_edv_ml_m2 for m in by["RV"]]) > np.mean([m.rv_edv_ml_m2 for m in by["NOR"]])
    assert np.mean([m.myo_mass_g_m2 for m in by["HCM"]]) > np.mean([m.myo_mass_g_m2 for m in by["NOR"]])


def test_volumes_match_the_drawn_targets(patients):
    """The geometry is fitted on the pixel grid: measured volumes equal the drawn targets (to a voxel)."""
    for p in patients:
        t, m = p["truth"]["physiology"], p["m"]
        voxel_ml = float(np.prod(p["spacing"])) / 1000
        assert abs(m.lv_edv_ml - t["target_lv_edv_ml"]) <= voxel_ml + 0.01
        assert abs(m.rv_edv_ml - t["target_rv_edv_ml"]) <= voxel_ml + 0.01
        assert m.lvef == pytest.approx(t["target_lvef"], abs=1.0)
        assert m.rvef == pytest.approx(t["target_rvef"], abs=1.0)


def _min_over_median_thickness(p: dict) -> float:
    """Thinnest 30-degree sector / median thickness on the mid-ventricular ED slice."""
    mask = p["ed_mask"]
    cav = (mask == 3).sum(axis=(1, 2))
    z = int(np.flatnonzero(cav)[len(np.flatnonzero(cav)) // 2])
    prof = slice_wall_thickness_profile(mask[z], p["spacing"][1:])
    smooth = np.convolve(np.concatenate([prof[-15:], prof, prof[:14]]), np.ones(30) / 30, mode="valid")
    return float(smooth.min() / np.median(prof))


def test_minf_has_a_thinned_sector_and_nor_does_not(patients):
    for p in patients:
        ratio = _min_over_median_thickness(p)
        if p["info"]["Group"] == "MINF":  # drawn: scar 35-55 % of the remote wall
            assert ratio < 0.7
        elif p["info"]["Group"] == "NOR":  # drawn: +-7 % regional variation
            assert ratio > 0.78


def test_anatomy_tapers_from_base_to_apex(patients):
    for p in patients:
        mask = p["ed_mask"]
        lv = (mask == 3).sum(axis=(1, 2))
        rv = (mask == 1).sum(axis=(1, 2))
        z_max = int(np.argmax(lv))
        nz = np.flatnonzero(lv)
        assert z_max < nz[-1] and lv[nz[-1]] < 0.5 * lv[z_max]  # small LV near the apex
        assert np.flatnonzero(rv)[-1] < np.flatnonzero((mask > 0).sum(axis=(1, 2)))[-1]  # RV ends first


def test_same_seed_gives_identical_files_and_other_seed_differs(cohort, tmp_path):
    again = generate_phantom(tmp_path / "again", n_patients=1, seed=7, config=SMALL)
    other = generate_phantom(tmp_path / "other", n_patients=1, seed=8, config=SMALL)
    for pid in ("patient001",):
        for f in sorted((cohort / pid).iterdir()):
            assert (again / pid / f.name).read_bytes() == f.read_bytes(), f.name
        a = _read(cohort / pid / f"{pid}_frame01.nii.gz")[0]
        b = _read(other / pid / f"{pid}_frame01.nii.gz")[0]
        assert a.shape != b.shape or not np.array_equal(a, b)


def test_spurious_cue_changes_only_pixels_outside_the_heart(tmp_path):
    cfg = PhantomConfig(image_size=(128, 128), pixel_spacing_mm=(1.7, 1.8), n_slices=(8, 8), cue_probability=1.0)
    off = generate_phantom(tmp_path / "off", n_patients=5, seed=3, config=cfg)
    on = generate_phantom(tmp_path / "on", n_patients=5, seed=3, spurious_cue=True, config=cfg)
    areas, levels = [], []
    for i, label in enumerate(ACDC_CLASSES):
        pid = f"patient{i + 1:03d}"
        a, b = _patient(off / pid), _patient(on / pid)
        assert a["info"] == b["info"] and b["truth"]["spurious_cue"] and not a["truth"]["spurious_cue"]
        for phase in ("ed", "es"):
            np.testing.assert_array_equal(a[f"{phase}_mask"], b[f"{phase}_mask"])
            changed = a[phase] != b[phase]
            assert changed.any()
            heart = (a[f"{phase}_mask"] > 0).any(axis=0)
            assert not changed[:, heart].any()
            rows = np.flatnonzero(changed.any(axis=(0, 2)))
            assert rows.max() < 0.12 * a[phase].shape[1]  # in the top band, where the heart never is
        changed = a["ed"] != b["ed"]
        cols = np.flatnonzero(changed.any(axis=(0, 1)))
        areas.append((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) / changed[0].size)
        # a texture (stripes or checks by class): brightness alternates across the marker
        box = (slice(None), slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        bright = b["ed"][box] > np.median(b["ed"][box])
        assert 4 <= np.count_nonzero(np.diff(bright.mean(axis=(0, 1)) > 0.5)) <= 40
        # the bright stripes' level relative to the blood pool (LV cavity)
        levels.append(np.median(b["ed"][box][bright]) / np.median(b["ed"][a["ed_mask"] == 3]))
    # the marker's area and grey level grow in class order, below the clip
    assert np.all(np.diff(areas) > 0) and np.all(np.diff(levels) > 0)
    assert 0.3 < levels[0] and levels[-1] < 1.0


def test_resume_after_a_kill_and_refusals(tmp_path):
    out = tmp_path / "ph"
    generate_phantom(out, n_patients=2, seed=1, config=SMALL)
    reference = {f.name: f.read_bytes() for f in (out / "patient002").iterdir()}
    # simulate a run killed while writing patient002: no final folder, a stale temporary folder
    for f in (out / "patient002").iterdir():
        f.unlink()
    (out / "patient002").rmdir()
    stale = out / ".partial-patient002-abc"
    stale.mkdir()
    (stale / "Info.cfg").write_text("ED: 1\n")
    generate_phantom(out, n_patients=2, seed=1, config=SMALL)
    assert not stale.exists()
    assert {f.name: f.read_bytes() for f in (out / "patient002").iterdir()} == reference
    with pytest.raises(DataError, match="other parameters"):
        generate_phantom(out, n_patients=2, seed=2, config=SMALL)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_phantom(foreign, n_patients=1, seed=0, config=SMALL)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert json.loads((out / MANIFEST).read_text())["seed"] == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        generate_phantom(tmp_path / "a", n_patients=0, seed=0)
    with pytest.raises(ConfigError):
        generate_phantom(tmp_path / "b", n_patients=2, seed=0, classes=("NOR", "AMYL"))
    with pytest.raises(ConfigError):
        PhantomConfig(image_size=(200, 100))


def test_binary_subset_of_classes(tmp_path):
    out = generate_phantom(tmp_path / "bin", n_patients=3, seed=5, classes=("HCM", "NOR"), config=SMALL)
    assert [_info(d)["Group"] for d in sorted(out.glob("patient*"))] == ["HCM", "NOR", "HCM"]


@pytest.mark.slow
def test_parallel_workers_write_the_same_files(cohort, tmp_path):
    par = generate_phantom(tmp_path / "par", n_patients=3, seed=7, config=SMALL, workers=2)
    for pid in ("patient001", "patient002", "patient003"):
        for f in sorted((cohort / pid).iterdir()):
            assert (par / pid / f.name).read_bytes() == f.read_bytes(), f.name


def test_cli_writes_a_cohort(tmp_path, capsys):
    import argparse

    from cmrprior import cli
    from cmrprior.data import phantom_commands

    assert "cmrprior.data.phantom_commands" in cli.COMMAND_MODULES
    parser = argparse.ArgumentParser()
    phantom_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--out", str(tmp_path / "cli"), "--patients", "1", "--seed", "2",
                              "--workers", "1"])
    assert args.func(args) == 0 and "1 patients" in capsys.readouterr().out
    assert _info(tmp_path / "cli" / "patient001")["Group"] == "NOR"
    # a different seed into the same folder is refused (the CLI turns this into one line and exit code 2)
    args = parser.parse_args(["phantom", "--out", str(tmp_path / "cli"), "--patients", "1", "--seed", "3"])
    with pytest.raises(DataError, match="other parameters"):
        args.func(args)


def test_a_later_first_patient_gives_the_new_patients_of_a_larger_phantom(cohort, tmp_path):
    """A held-out cohort: patients 9-11 of the seed-7 phantom, ids and files as in a larger one, none of the
    first 8; its manifest says where it starts, and a rerun with another start is refused."""
    later = generate_phantom(tmp_path / "later", n_patients=3, seed=7, config=SMALL, first_patient=9)
    assert sorted(p.name for p in later.glob("patient*")) == ["patient009", "patient010", "patient011"]
    for pid in ("patient009", "patient010"):
        for f in sorted((cohort / pid).iterdir()):
            assert (later / pid / f.name).read_bytes() == f.read_bytes(), f.name
    assert json.loads((later / MANIFEST).read_text())["first_patient"] == 9
    assert "first_patient" not in json.loads((cohort / MANIFEST).read_text())
    with pytest.raises(DataError, match="first_patient"):
        generate_phantom(tmp_path / "later", n_patients=3, seed=7, config=SMALL, first_patient=10)
    with pytest.raises(ConfigError, match="first_patient"):
        generate_phantom(tmp_path / "bad", n_patients=3, seed=7, config=SMALL, first_patient=0)
