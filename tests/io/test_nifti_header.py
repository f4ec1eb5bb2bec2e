"""Written NIfTI files keep the input's header; volumes read back with nibabel alone match cmrprior's."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cmrprior.anatomy.measure import label_volume_ml
from cmrprior.io.dicom import read_dicom_series
from cmrprior.io.nifti import read_nifti, write_nifti

ACDC_ROOT = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "../shared/data/acdc/training"))


def _nibabel_volume_ml(path: Path, label: int) -> float:
    """What another tool computes: voxel count x product of the header's zooms."""
    img = nib.load(str(path))
    return float((np.asarray(img.dataobj) == label).sum()) * float(np.prod(img.header.get_zooms()[:3])) / 1000.0


def _acdc_style(path: Path, shape=(40, 36, 4)) -> Path:
    """ACDC's header: sform code 2 with unit scale, qform code 0, true spacing only in pixdim."""
    data = np.random.default_rng(0).uniform(0, 300, shape).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.header.set_zooms((1.5625, 1.5625, 10.0))
    img.header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
    img.header.set_qform(None, code=0)
    img.header.set_xyzt_units("mm", "sec")
    path.write_bytes(img.to_bytes())
    return path


def test_mask_keeps_acdc_style_header(tmp_path):
    src = _acdc_style(tmp_path / "img.nii")
    vol = read_nifti(src)
    assert vol.spacing == pytest.approx((10.0, 1.5625, 1.5625))
    mask = np.zeros(vol.shape, np.uint8)
    mask[1:3, 10:20, 8:15] = 3  # 2 * 10 * 7 = 140 voxels
    out = write_nifti(mask, None, tmp_path / "mask.nii.gz", like=vol)
    a, b = nib.load(str(src)).header, nib.load(str(out)).header
    np.testing.assert_allclose(b["pixdim"][1:4], a["pixdim"][1:4])
    assert (int(b["sform_code"]), int(b["qform_code"])) == (int(a["sform_code"]), int(a["qform_code"])) == (2, 0)
    np.testing.assert_allclose(b.get_sform(), a.get_sform())
    assert b.get_data_dtype() == np.uint8
    expected = 140 * 1.5625 * 1.5625 * 10.0 / 1000.0
    assert _nibabel_volume_ml(out, 3) == pytest.approx(expected)
    assert label_volume_ml(mask, 3, vol.spacing) == pytest.approx(expected)
    np.testing.assert_array_equal(read_nifti(out).array, mask)


def test_mask_of_dicom_input_carries_the_dicom_geometry(tmp_path, dicom_series):
    dicom_series(tmp_path / "ser")
    vol = read_dicom_series(tmp_path / "ser")
    mask = np.zeros(vol.shape, np.uint8)
    mask[:2, 1:4, 1:3] = 3
    out = write_nifti(mask, None, tmp_path / "mask.nii.gz", like=vol)
    img = nib.load(str(out))
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.25, 8.0), rtol=1e-6)
    # independent geometry from the tags of the first slice (lowest position along the normal)
    files = [pydicom.dcmread(str(f)) for f in sorted((tmp_path / "ser").iterdir())]
    iop = np.array(files[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    first = min(files, key=lambda d: np.array(d.ImagePositionPatient, float) @ normal)
    ijk = np.array([2, 3, 1])
    lps = (np.array(first.ImagePositionPatient, float) + ijk[0] * 1.5 * iop[:3] + ijk[1] * 1.25 * iop[3:]
           + ijk[2] * 8.0 * normal)
    np.testing.assert_allclose(nib.affines.apply_affine(img.affine, ijk), lps * [-1, -1, 1], atol=1e-4)
    np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)
    assert _nibabel_volume_ml(out, 3) == pytest.approx(2 * 3 * 2 * 1.25 * 1.5 * 8.0 / 1000.0)


@pytest.mark.acdc
@pytest.mark.skipif(not ACDC_ROOT.is_dir(), reason="ACDC training folder not found")
def test_acdc_mask_round_trip_volumes(tmp_path):
    src = ACDC_ROOT / "patient001" / "patient001_frame01_gt.nii.gz"
    gt = read_nifti(src)
    out = write_nifti(gt.array.astype(np.uint8), None, tmp_path / "m.nii.gz", like=gt)
    for label in (1, 2, 3):
        assert _nibabel_volume_ml(out, label) == pytest.approx(label_volume_ml(gt.array, label, gt.spacing), rel=1e-6)
        assert _nibabel_volume_ml(out, label) == pytest.approx(_nibabel_volume_ml(src, label), rel=1e-6)
