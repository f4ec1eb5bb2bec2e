"""Bad input refused at read time with a DataError naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.acdc import parse_info_cfg, read_acdc, write_acdc_patient
from cmrprior.io.checks import PLAUSIBLE_INPLANE_MM, PLAUSIBLE_SLICE_MM, check_patient_id
from cmrprior.utils.filenames import patient_filename
from cmrprior.io.dicom import read_dicom_series
from cmrprior.io.load import load_patient
from cmrprior.io.manifest import read_manifest
from cmrprior.io.nifti import read_nifti, write_nifti


def _image(shape=(3, 8, 7), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


def _nii(path: Path, spacing_xyz=(1.4, 1.4, 8.0), array=None) -> Path:
    write_nifti(_image() if array is None else array, np.diag(list(spacing_xyz) + [1.0]), path)
    return path


@pytest.mark.parametrize("spacing, what", [((0.001, 0.001, 8.0), "in-plane"), ((50.0, 50.0, 8.0), "in-plane"),
                                           ((1.4, 1.4, 0.5), "slice spacing"), ((1.4, 1.4, 40.0), "slice spacing")])
def test_implausible_spacing_is_refused(tmp_path, spacing, what):
    path = _nii(tmp_path / "x.nii.gz", spacing)
    with pytest.raises(DataError, match=what) as info:
        read_nifti(path)
    assert info.value.path == path
    assert PLAUSIBLE_INPLANE_MM == (0.2, 5.0) and PLAUSIBLE_SLICE_MM == (1.0, 30.0)
    read_nifti(_nii(tmp_path / "ok.nii.gz", (0.2, 5.0, 30.0)))  # the range limits are accepted


def test_implausible_dicom_pixel_spacing(tmp_path, dicom_slice, dicom_geometry):
    _, _, normal = dicom_geometry
    (tmp_path / "s").mkdir()
    for k in range(3):
        dicom_slice(tmp_path / "s" / f"{k}.dcm", np.full((6, 5), k, np.int16), k * 8.0 * normal, spacing=(0.001, 0.001))
    with pytest.raises(DataError, match="implausible in-plane pixel spacing"):
        read_dicom_series(tmp_path / "s")


def test_pixdim_zero_is_refused_not_replaced_by_1mm(tmp_path):
    img = nib.Nifti1Image(_image().transpose(2, 1, 0), np.diag([1.4, 1.4, 8.0, 1.0]))
    img.header["pixdim"][3] = 0.0
    path = tmp_path / "zero.nii"
    path.write_bytes(img.to_bytes())
    assert nib.load(str(path)).header.get_zooms()[2] == 1.0  # what nibabel alone makes of it
    with pytest.raises(DataError, match="pixdim"):
        read_nifti(path)


def test_info_cfg_ed_equal_es_and_repeated_group(tmp_path):
    folder = write_acdc_patient(tmp_path, "patient001", ed=_image(), es=_image(seed=1), ed_frame=1, es_frame=9,
                                spacing_zyx=(8.0, 1.4, 1.4), group="NOR")
    cfg = folder / "Info.cfg"
    cfg.write_text("ED: 1\nES: 9\nGroup: NOR\nGroup: DCM\nNbFrame: 20\n")
    with pytest.raises(DataError, match="Group given twice") as info:
        parse_info_cfg(cfg)
    assert info.value.path == cfg
    cfg.write_text("ED: 9\nES: 9\nGroup: NOR\nNbFrame: 20\n")
    with pytest.raises(DataError, match="ED and ES are the same frame"):
        read_acdc(tmp_path)


def test_mask_with_other_spacing_than_its_image(tmp_path):
    img = _nii(tmp_path / "ed.nii.gz")
    _nii(tmp_path / "es.nii.gz", array=_image(seed=2))
    write_nifti(np.zeros((3, 8, 7), np.uint8), np.diag([1.4, 1.4, 8.0, 1.0]), tmp_path / "es_gt.nii.gz")
    bad = tmp_path / "ed_gt.nii.gz"
    write_nifti(np.zeros((3, 8, 7), np.uint8), np.diag([1.0, 1.0, 8.0, 1.0]), bad)
    (tmp_path / "m.csv").write_text("patient_id,label,ed_image,es_image,ed_mask,es_mask\n"
                                    "a,NOR,ed.nii.gz,es.nii.gz,ed_gt.nii.gz,es_gt.nii.gz\n")
    with pytest.raises(DataError, match="spacing .* differs from image spacing") as info:
        load_patient(read_manifest(tmp_path / "m.csv").patients[0])
    assert info.value.path == bad and str(img) in str(info.value)


def _two_patients(tmp_path: Path) -> None:
    for pid, seed in (("a", 0), ("b", 1)):
        _nii(tmp_path / f"{pid}_ed.nii.gz", array=_image(seed=seed))
        _nii(tmp_path / f"{pid}_es.nii.gz", array=_image(seed=seed + 10))


def test_manifest_column_typo_names_column_and_suggestion(tmp_path):
    _two_patients(tmp_path)
    (tmp_path / "m.csv").write_text("patient_id,label,ed_image,es_image,ed_masks\na,NOR,a_ed.nii.gz,a_es.nii.gz,\n")
    with pytest.raises(DataError, match="unknown manifest column 'ed_masks': did you mean 'ed_mask'"):
        read_manifest(tmp_path / "m.csv")


def test_labels_differing_only_by_case(tmp_path):
    _two_patients(tmp_path)
    (tmp_path / "m.csv").write_text("patient_id,label,ed_image,es_image\n"
                                    "a,DCM,a_ed.nii.gz,a_es.nii.gz\nb,dcm,b_ed.nii.gz,b_es.nii.gz\n")
    with pytest.raises(DataError, match="'DCM' .*'dcm' .*differ only by case"):
        read_manifest(tmp_path / "m.csv")


def test_two_ids_pointing_at_the_same_images(tmp_path):
    _two_patients(tmp_path)
    (tmp_path / "m.csv").write_text("patient_id,label,ed_image,es_image\n"
                                    "a,NOR,a_ed.nii.gz,a_es.nii.gz\nb,DCM,./a_ed.nii.gz,b_es.nii.gz\n")
    with pytest.raises(DataError, match="patients 'a' and 'b' point at the same image .*a_ed.nii.gz"):
        read_manifest(tmp_path / "m.csv")


def test_constant_image(tmp_path):
    _nii(tmp_path / "ed.nii.gz", array=np.zeros((3, 8, 7), np.float32))
    _nii(tmp_path / "es.nii.gz")
    (tmp_path / "m.csv").write_text("patient_id,label,ed_image,es_image\na,NOR,ed.nii.gz,es.nii.gz\n")
    with pytest.raises(DataError, match="constant image") as info:
        load_patient(read_manifest(tmp_path / "m.csv").patients[0])
    assert info.value.path == tmp_path / "ed.nii.gz"


@pytest.mark.parametrize("pid", ["../escape", "/tmp/abs", "a/b", "a\\b", "..", "C:evil"])
def test_patient_ids_that_would_leave_the_run_folder(tmp_path, pid):
    _two_patients(tmp_path)
    (tmp_path / "m.csv").write_text(f"patient_id,label,ed_image,es_image\n{pid},NOR,a_ed.nii.gz,a_es.nii.gz\n")
    with pytest.raises(DataError, match="invalid patient id"):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(DataError, match="invalid patient id"):
        check_patient_id(pid, "here")


def test_patient_filename_is_one_plain_name():
    assert patient_filename("patient001") == "patient001"
    assert patient_filename("ICM 12 (site B)") == "ICM_12__site_B_"
    assert patient_filename(".hidden") == "hidden"
    for pid in ("../x", "/abs/p", "a\\b"):
        name = patient_filename(pid)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert Path("/run", name).parent == Path("/run")
    with pytest.raises(DataError):
        patient_filename("///")
