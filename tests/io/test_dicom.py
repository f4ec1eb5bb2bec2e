"""DICOM series reader on tiny series written by the tests with pydicom (no downloads)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.dicom import read_dicom_series
from cmrprior.io.load import read_image
from cmrprior.io.nifti import write_nifti


def test_series_sorted_by_position_with_spacing_and_rescale(tmp_path, dicom_series, dicom_geometry):
    ROW, COL, NORMAL = dicom_geometry
    stack, origin = dicom_series(tmp_path / "ser")
    vol = read_dicom_series(tmp_path / "ser")
    assert vol.shape == (4, 6, 5)
    np.testing.assert_allclose(vol.array, stack.astype(np.float32) * 2.0 - 10.0)
    assert vol.spacing == pytest.approx((8.0, 1.25, 1.5))
    # affine: voxel (i col, j row, k slice) -> RAS = LPS with x, y negated
    i, j, k = 3, 2, 1
    lps = origin + k * 8.0 * NORMAL + i * 1.5 * ROW + j * 1.25 * COL
    ras = vol.affine @ np.array([i, j, k, 1.0])
    np.testing.assert_allclose(ras[:3], lps * np.array([-1, -1, 1]), atol=1e-6)
    assert read_image(tmp_path / "ser").shape == (4, 6, 5)  # folders dispatch to the DICOM reader


def test_dicom_to_nifti_keeps_geometry(tmp_path, dicom_series):
    dicom_series(tmp_path / "ser")
    vol = read_dicom_series(tmp_path / "ser")
    out = write_nifti(vol.array, vol.affine, tmp_path / "out.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.25, 8.0), atol=1e-5)


def test_single_slice_uses_slice_thickness(tmp_path, dicom_series):
    dicom_series(tmp_path / "one", n=1)
    assert read_dicom_series(tmp_path / "one").spacing[0] == pytest.approx(8.0)


def test_truncated_and_garbage_files(tmp_path, dicom_series):
    dicom_series(tmp_path / "ser")
    f = tmp_path / "ser" / "IM0002.dcm"
    f.write_bytes(f.read_bytes()[:-30])
    with pytest.raises(DataError, match="cannot decode pixel data") as info:
        read_dicom_series(tmp_path / "ser")
    assert info.value.path == f

    dicom_series(tmp_path / "g")
    (tmp_path / "g" / "notes.txt").write_text("hello")  # not DICOM (no DICM marker): ignored
    assert read_dicom_series(tmp_path / "g").shape == (4, 6, 5)
    g = tmp_path / "g" / "garbage.dcm"
    g.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + bytes(10))  # DICOM, damaged
    with pytest.raises(DataError, match="corrupt DICOM file|damaged or truncated DICOM file") as info:
        read_dicom_series(tmp_path / "g")
    assert info.value.path == g


def test_inconsistent_series(tmp_path, dicom_series, dicom_slice, dicom_geometry):
    ROW, COL, NORMAL = dicom_geometry
    dicom_series(tmp_path / "size")
    dicom_slice(tmp_path / "size" / "IMx.dcm", np.zeros((7, 5)), np.array([0, 0, 100.0]))
    with pytest.raises(DataError, match="image size"):
        read_dicom_series(tmp_path / "size")

    dicom_series(tmp_path / "dup")
    stack, origin = dicom_series(tmp_path / "dup2")
    dicom_slice(tmp_path / "dup" / "IMdup.dcm", stack[0], origin)
    with pytest.raises(DataError, match="same slice position"):
        read_dicom_series(tmp_path / "dup")

    (tmp_path / "gap").mkdir()
    for k, z in enumerate([0.0, 8.0, 16.0, 32.0]):  # one slice missing between 16 and 32
        dicom_slice(tmp_path / "gap" / f"IM{k}.dcm", np.zeros((6, 5)), np.array([10.0, -20.0, 30.0]) + z * NORMAL)
    with pytest.raises(DataError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path / "gap")

    dicom_series(tmp_path / "orient")
    dicom_slice(tmp_path / "orient" / "IMo.dcm", np.zeros((6, 5)), np.array([0, 0, 200.0]), iop=[1, 0, 0, 0, 1, 0])
    with pytest.raises(DataError, match="ImageOrientationPatient differs"):
        read_dicom_series(tmp_path / "orient")

    dicom_series(tmp_path / "mixed")
    dicom_slice(tmp_path / "mixed" / "IMm.dcm", np.zeros((6, 5)), np.array([10.0, -20.0, 30.0]) + 32 * NORMAL,
           series_uid="9.9.9")
    with pytest.raises(DataError, match="mixes series"):
        read_dicom_series(tmp_path / "mixed")


def test_missing_geometry_and_empty_folder(tmp_path, dicom_series):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM files"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        read_dicom_series(tmp_path / "absent")
    folder = tmp_path / "nogeo"
    dicom_series(folder, n=2)
    import pydicom

    f = folder / "IM0000.dcm"
    ds = pydicom.dcmread(str(f))
    del ds.ImagePositionPatient
    ds.save_as(str(f))
    with pytest.raises(DataError, match="ImagePositionPatient missing") as info:
        read_dicom_series(folder)
    assert info.value.path == f
