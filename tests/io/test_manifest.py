"""Manifest CSV reader (NIfTI and DICOM entries, relative paths, label sets, bad rows) and open_cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.cohort import open_cohort
from cmrprior.io.load import load_patient
from cmrprior.io.manifest import read_manifest
from cmrprior.io.nifti import write_nifti

HEADER = "patient_id,label,ed_image,es_image,ed_mask,es_mask,height_cm,weight_kg\n"


def _nii(path: Path, value: float, shape=(3, 8, 7), dtype=np.float32) -> Path:
    arr = np.full(shape, value, dtype)
    if dtype == np.float32:  # not constant (constant images are refused), mean still `value`
        arr.flat[0] += 1.0
        arr.flat[1] -= 1.0
    write_nifti(arr, np.diag([1.4, 1.4, 8.0, 1.0]), path)
    return path


def _setup(tmp_path: Path) -> Path:
    img = tmp_path / "images"
    for pid in ("a", "b", "c"):
        _nii(img / f"{pid}_ed.nii.gz", 1.0)
        _nii(img / f"{pid}_es.nii.gz", 2.0)
        _nii(img / f"{pid}_ed_gt.nii.gz", 0, dtype=np.uint8)
        _nii(img / f"{pid}_es_gt.nii.gz", 0, dtype=np.uint8)
    return img


def _csv(tmp_path: Path, rows: str, header: str = HEADER) -> Path:
    p = tmp_path / "cohort.csv"
    p.write_text(header + rows)
    return p


def test_manifest_binary_labels_relative_and_absolute_paths(tmp_path):
    img = _setup(tmp_path)
    rows = (
        "a,NICM,images/a_ed.nii.gz,images/a_es.nii.gz,images/a_ed_gt.nii.gz,images/a_es_gt.nii.gz,170,70\n"
        f"b,ICM,{img}/b_ed.nii.gz,{img}/b_es.nii.gz,,,,\n"
    )
    cohort = read_manifest(_csv(tmp_path, rows))
    assert cohort.classes == ("ICM", "NICM")  # sorted when not ACDC classes
    a, b = cohort.patients
    assert a.ed_image == tmp_path / "images" / "a_ed.nii.gz" and a.has_masks and a.height_cm == 170.0
    assert b.label == "ICM" and not b.has_masks and b.weight_kg is None
    vols = load_patient(a)
    assert vols.es.array.mean() == 2.0 and vols.ed_mask.array.dtype == np.uint8
    assert open_cohort(tmp_path / "cohort.csv").patients == cohort.patients


def test_manifest_acdc_labels_in_acdc_order_and_extra_columns(tmp_path):
    _setup(tmp_path)
    rows = ("a,RV,images/a_ed.nii.gz,images/a_es.nii.gz,site1\n"
            "b,NOR,images/b_ed.nii.gz,images/b_es.nii.gz,site2\n")
    cohort = read_manifest(_csv(tmp_path, rows, header="patient_id,label,ed_image,es_image,meta_site\n"))
    assert cohort.classes == ("NOR", "RV")
    assert cohort.patients[0].extra == {"meta_site": "site1"}


def test_manifest_with_dicom_folders(tmp_path, dicom_series):
    dicom_series(tmp_path / "dcm" / "ed")
    dicom_series(tmp_path / "dcm" / "es")
    cohort = read_manifest(_csv(tmp_path, "p1,AMYL,dcm/ed,dcm/es\n", header="patient_id,label,ed_image,es_image\n"))
    vols = load_patient(cohort.patients[0])
    assert vols.ed.shape == (4, 6, 5)


def test_missing_columns(tmp_path):
    p = _csv(tmp_path, "a,NOR,x.nii\n", header="patient_id,label,ed_image\n")
    with pytest.raises(DataError, match="manifest missing column.*es_image") as info:
        read_manifest(p)
    assert info.value.path == p


def test_missing_file_names_the_file(tmp_path):
    _setup(tmp_path)
    p = _csv(tmp_path, "a,NOR,images/a_ed.nii.gz,images/nope.nii.gz,,,,\n")
    with pytest.raises(DataError, match=r"not found \(es_image of line 2") as info:
        read_manifest(p)
    assert info.value.path == tmp_path / "images" / "nope.nii.gz"


def test_duplicates_unknown_labels_and_skip_bad(tmp_path):
    _setup(tmp_path)
    rows = ("a,ICM,images/a_ed.nii.gz,images/a_es.nii.gz,,,,\n"
            "a,ICM,images/b_ed.nii.gz,images/b_es.nii.gz,,,,\n"
            "c,XYZ,images/c_ed.nii.gz,images/c_es.nii.gz,,,,\n")
    p = _csv(tmp_path, rows)
    with pytest.raises(DataError, match="line 3: duplicate patient id 'a' \\(first on line 2\\)"):
        read_manifest(p)
    no_dup = _csv(tmp_path, rows.replace("a,ICM,images/b", "b,ICM,images/b"))
    with pytest.raises(DataError, match="line 4 .*unknown label 'XYZ' \\(allowed: ICM, NICM\\)"):
        read_manifest(no_dup, allowed_labels=("ICM", "NICM"))
    assert [r.label for r in read_manifest(no_dup).patients] == ["ICM", "ICM", "XYZ"]  # any label by default
    cohort = read_manifest(_csv(tmp_path, rows), skip_bad=True, allowed_labels=("ICM", "NICM"))
    assert [r.patient_id for r in cohort.patients] == ["a"]
    assert [s[0] for s in cohort.skipped] == ["a", "c"]


@pytest.mark.parametrize(
    "row, problem",
    [
        ("a,NOR,images/a_ed.nii.gz,images/a_es.nii.gz,images/a_ed_gt.nii.gz,,,\n", "both ed_mask and es_mask"),
        ("a,NOR,images/a_ed.nii.gz,images/a_es.nii.gz,,,tall,\n", "height_cm must be a positive number"),
        (",NOR,images/a_ed.nii.gz,images/a_es.nii.gz,,,,\n", "empty patient_id"),
        ("a,NOR,,images/a_es.nii.gz,,,,\n", "empty ed_image"),
    ],
)
def test_bad_rows(tmp_path, row, problem):
    _setup(tmp_path)
    with pytest.raises(DataError, match=problem):
        read_manifest(_csv(tmp_path, row))


def test_open_cohort_dispatch_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_cohort(tmp_path / "absent.csv")
    f = tmp_path / "x.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="not a cohort"):
        open_cohort(f)
    with pytest.raises(DataError, match="manifest has no patient rows"):
        read_manifest(_csv(tmp_path, ""))
