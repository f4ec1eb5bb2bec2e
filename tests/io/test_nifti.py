"""NIfTI reader/writer against nibabel directly (files written by the tests)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.nifti import read_nifti, read_nifti_4d, read_nifti_frame, write_nifti


def _nib_write(path, data_xyz, zooms=(1.25, 1.5, 8.0), slope=None):
    affine = np.diag([zooms[0], zooms[1], zooms[2], 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    img = nib.Nifti1Image(data_xyz, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 3.0)
    nib.save(img, str(path))
    return affine


def test_read_nifti_axes_spacing_affine_match_nibabel(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-100, 1000, size=(7, 5, 3)).astype(np.int16)  # (X, Y, Z)
    path = tmp_path / "img.nii.gz"
    affine = _nib_write(path, data)
    vol = read_nifti(path)
    assert vol.array.dtype == np.float32
    assert vol.shape == (3, 5, 7)
    # voxel (x=6, y=2, z=1) of the file is array[z, y, x]
    assert vol.array[1, 2, 6] == data[6, 2, 1]
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))
    assert vol.spacing == pytest.approx((8.0, 1.5, 1.25))
    np.testing.assert_allclose(vol.affine, affine)
    assert vol.path == path


def test_read_nifti_applies_scaling(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    path = tmp_path / "scaled.nii"
    _nib_write(path, data, slope=2.0)
    vol = read_nifti(path)
    np.testing.assert_allclose(vol.array, data.transpose(2, 1, 0) * 2.0 + 3.0)


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16])
def test_write_then_read_roundtrip(tmp_path, name, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.random((4, 6, 5)) * 100).astype(dtype)
    affine = np.diag([1.1, 1.2, 9.0, 1.0])
    path = write_nifti(arr, affine, tmp_path / name)
    vol = read_nifti(path)
    np.testing.assert_array_equal(vol.array, arr.astype(np.float32))
    assert vol.spacing == pytest.approx((9.0, 1.2, 1.1))
    # the file on disk is in NIfTI (X, Y, Z) order, readable by nibabel
    on_disk = np.asanyarray(nib.load(str(path)).dataobj)
    assert on_disk.dtype == dtype
    np.testing.assert_array_equal(on_disk, arr.transpose(2, 1, 0))
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary files left behind
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_write_nifti_like_takes_affine(tmp_path):
    arr = np.zeros((2, 3, 4), np.float32)
    src = write_nifti(arr, np.diag([2.0, 3.0, 4.0, 1.0]), tmp_path / "src.nii")
    like = read_nifti(src)
    out = read_nifti(write_nifti(arr + 1, None, tmp_path / "out.nii", like=like))
    np.testing.assert_allclose(out.affine, like.affine)
    with pytest.raises(ValueError):
        write_nifti(arr, None, tmp_path / "out.png")


def test_4d_cine_frames(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.random((6, 5, 3, 4)).astype(np.float32)  # (X, Y, Z, T)
    path = tmp_path / "cine_4d.nii.gz"
    _nib_write(path, data)
    frames = read_nifti_4d(path)
    assert len(frames) == 4
    for t, vol in enumerate(frames):
        np.testing.assert_array_equal(vol.array, data[..., t].transpose(2, 1, 0))
    np.testing.assert_array_equal(read_nifti_frame(path, 3).array, data[..., 2].transpose(2, 1, 0))
    with pytest.raises(DataError, match="out of range"):
        read_nifti_frame(path, 5)
    with pytest.raises(DataError, match="3D"):
        read_nifti(path)


def test_single_frame_4d_is_accepted_as_3d(tmp_path):
    data = np.ones((4, 3, 2, 1), np.float32)
    path = tmp_path / "one.nii"
    _nib_write(path, data)
    assert read_nifti(path).shape == (2, 3, 4)


@pytest.mark.parametrize("shape", [(5, 4), (3, 3, 2, 2, 2)])
def test_2d_and_5d_rejected(tmp_path, shape):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    with pytest.raises(DataError) as info:
        read_nifti(path)
    assert str(path) in str(info.value)
    assert f"{len(shape)}D" in str(info.value)


def test_non_finite_voxels_rejected(tmp_path):
    data = np.zeros((3, 3, 2), np.float32)
    data[1, 1, 1] = np.nan
    data[0, 0, 0] = np.inf
    path = tmp_path / "nan.nii.gz"
    _nib_write(path, data)
    with pytest.raises(DataError, match=r"2 non-finite voxel") as info:
        read_nifti(path)
    assert info.value.path == path


def test_truncated_and_garbage_files(tmp_path):
    data = np.random.default_rng(3).random((30, 30, 8)).astype(np.float32)
    good = tmp_path / "good.nii.gz"
    _nib_write(good, data)
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        read_nifti(truncated)
    assert info.value.path == truncated

    # uncompressed file cut inside the voxel data
    plain = tmp_path / "plain.nii"
    plain.write_bytes(gzip.decompress(raw)[:1000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_nifti(plain)

    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a nifti file at all" * 20)
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_nifti(garbage)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_nifti(tmp_path / "nope.nii.gz")
