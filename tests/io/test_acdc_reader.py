"""ACDC layout reader and patient loader, on tiny cohorts the tests write (plus the real set if present)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.acdc import parse_info_cfg, read_acdc, write_acdc_patient
from cmrprior.io.load import load_patient
from cmrprior.io.records import ACDC_CLASSES

ACDC_ROOT = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "../shared/data/acdc/training"))


def _arrays(seed: int, shape=(4, 12, 10)):
    rng = np.random.default_rng(seed)
    ed = (rng.random(shape) * 500).astype(np.int16)
    es = (rng.random(shape) * 500).astype(np.int16)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 4:8, 3:7] = 3
    mask[1:3, 4:6, 3:5] = 1
    return ed, es, mask


def _write(root, pid, group="NOR", ed_frame=1, es_frame=12, masks=True, seed=0, **kw):
    ed, es, mask = _arrays(seed)
    return write_acdc_patient(root, pid, ed=ed, es=es, ed_frame=ed_frame, es_frame=es_frame,
                              spacing_zyx=(10.0, 1.5625, 1.5625), group=group,
                              ed_mask=mask if masks else None, es_mask=mask if masks else None,
                              n_frames=30, height_cm=180.0, weight_kg=80.5, **kw)


def test_read_acdc_records(tmp_path):
    _write(tmp_path, "patient001", group="DCM", ed_frame=1, es_frame=12)
    _write(tmp_path, "patient002", group="NOR", ed_frame=3, es_frame=9, masks=False)
    cohort = read_acdc(tmp_path)
    assert [p.patient_id for p in cohort.patients] == ["patient001", "patient002"]
    assert cohort.classes == ("NOR", "DCM")  # ACDC order, restricted to the classes present
    p1, p2 = cohort.patients
    assert p1.label == "DCM" and p1.ed_frame == 1 and p1.es_frame == 12 and p1.n_frames == 30
    assert p1.ed_image.name == "patient001_frame01.nii.gz"  # zero-padded frame numbers
    assert p1.es_mask.name == "patient001_frame12_gt.nii.gz"
    assert p1.height_cm == 180.0 and p1.weight_kg == 80.5
    assert p1.has_masks and not p2.has_masks
    assert p2.ed_image.name == "patient002_frame03.nii.gz"
    # a single patient folder is read too
    single = read_acdc(tmp_path / "patient002")
    assert [p.patient_id for p in single.patients] == ["patient002"]


def test_load_patient_values(tmp_path):
    _write(tmp_path, "patient001", seed=5)
    vols = load_patient(read_acdc(tmp_path).patients[0])
    ed, es, mask = _arrays(5)
    np.testing.assert_array_equal(vols.ed.array, ed.astype(np.float32))
    np.testing.assert_array_equal(vols.es.array, es.astype(np.float32))
    assert vols.ed_mask.array.dtype == np.uint8
    np.testing.assert_array_equal(vols.es_mask.array, mask)
    assert vols.ed.spacing == pytest.approx((10.0, 1.5625, 1.5625))


def test_testing_layout_without_group_is_unlabelled(tmp_path):
    _write(tmp_path, "patient101", group=None, masks=False)
    _write(tmp_path, "patient102", group=None, masks=False)
    cohort = read_acdc(tmp_path)
    assert cohort.labels == [None, None]
    assert cohort.classes == ()


def test_group_missing_in_labelled_folder_is_an_error(tmp_path):
    _write(tmp_path, "patient001", group="NOR")
    folder = _write(tmp_path, "patient002", group=None)
    with pytest.raises(DataError, match="missing Group") as info:
        read_acdc(tmp_path)
    assert info.value.path == folder / "Info.cfg"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("ES: 12\nGroup: NOR\n", "missing ED"),
        ("ED: 1\nGroup: NOR\n", "missing ES"),
        ("ED: 1.5\nES: 12\nGroup: NOR\n", "ED must be an integer"),
        ("ED: one\nES: 12\nGroup: NOR\n", "ED must be an integer"),
        ("ED: 1\nES: 12\nGroup: NOR\nthis line is junk\n", "malformed line 4"),
        ("ED: 1\nES: 40\nGroup: NOR\nNbFrame: 30\n", "ES frame 40 out of range"),
        ("ED: 1\nES: 12\nGroup: XYZ\n", "unknown Group 'XYZ'"),
        ("ED: 1\nES: 12\nGroup: NOR\nHeight: tall\n", "Height must be a number"),
    ],
)
def test_malformed_info_cfg(tmp_path, text, problem):
    _write(tmp_path, "patient000", group="NOR")  # a good neighbour keeps the folder "labelled"
    folder = _write(tmp_path, "patient001")
    (folder / "Info.cfg").write_text(text)
    with pytest.raises(DataError, match=problem) as info:
        read_acdc(tmp_path)
    assert str(folder / "Info.cfg") in str(info.value)


def test_missing_info_cfg_and_missing_frame(tmp_path):
    folder = _write(tmp_path, "patient001")
    (folder / "Info.cfg").unlink()
    with pytest.raises(DataError, match="Info.cfg not found"):
        read_acdc(tmp_path)
    _write(tmp_path, "patient001")
    (folder / "patient001_frame12.nii.gz").unlink()
    with pytest.raises(DataError, match="ES frame file not found") as info:
        read_acdc(tmp_path)
    assert info.value.path == folder / "patient001_frame12.nii.gz"


def test_only_one_mask_is_an_error(tmp_path):
    folder = _write(tmp_path, "patient001")
    (folder / "patient001_frame01_gt.nii.gz").unlink()
    with pytest.raises(DataError, match="mask file not found"):
        read_acdc(tmp_path)


def test_skip_bad_lists_skipped_patients(tmp_path):
    _write(tmp_path, "patient001")
    bad = _write(tmp_path, "patient002")
    (bad / "Info.cfg").write_text("ED: x\nES: 1\nGroup: NOR\n")
    cohort = read_acdc(tmp_path, skip_bad=True)
    assert [p.patient_id for p in cohort.patients] == ["patient001"]
    assert len(cohort.skipped) == 1 and cohort.skipped[0][0] == "patient002"
    assert "ED must be an integer" in cohort.skipped[0][1]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_acdc(tmp_path / "nothing")
    with pytest.raises(DataError, match="no ACDC patient folders"):
        read_acdc(tmp_path)


def test_frames_taken_from_4d_cine_when_frame_files_absent(tmp_path):
    rng = np.random.default_rng(7)
    cine = rng.random((10, 12, 4, 5)).astype(np.float32)  # (X, Y, Z, T)
    folder = tmp_path / "patient001"
    folder.mkdir()
    nib.save(nib.Nifti1Image(cine, np.diag([-1.5, -1.5, 10, 1])), str(folder / "patient001_4d.nii.gz"))  # ACDC frame
    (folder / "Info.cfg").write_text("ED: 1\nES: 4\nGroup: HCM\nNbFrame: 5\n")
    rec = read_acdc(tmp_path).patients[0]
    assert rec.cine == folder / "patient001_4d.nii.gz" and rec.ed_image == rec.cine
    vols = load_patient(rec)
    np.testing.assert_array_equal(vols.ed.array, cine[..., 0].transpose(2, 1, 0))
    np.testing.assert_array_equal(vols.es.array, cine[..., 3].transpose(2, 1, 0))


def test_parse_info_cfg_plain(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    assert parse_info_cfg(path) == {"ED": "1", "ES": "12", "Group": "DCM", "Height": "184.0",
                                     "NbFrame": "30", "Weight": "95.0"}


@pytest.mark.acdc
@pytest.mark.skipif(not ACDC_ROOT.is_dir(), reason="ACDC training folder absent")
def test_real_acdc_training_records():
    cohort = read_acdc(ACDC_ROOT)
    assert len(cohort) == 100
    assert cohort.classes == ACDC_CLASSES
    assert all(cohort.labels.count(c) == 20 for c in ACDC_CLASSES)
    assert all(p.has_masks for p in cohort.patients)
    first = cohort.patients[0]
    assert (first.patient_id, first.label, first.ed_frame, first.es_frame) == ("patient001", "DCM", 1, 12)
