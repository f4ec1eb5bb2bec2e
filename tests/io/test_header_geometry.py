"""Headers that contradict themselves or their image: a mask 40 mm off its image, pixdim and sform apart."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.load import load_patient, read_image
from cmrprior.io.manifest import read_manifest
from cmrprior.io.nifti import read_nifti, write_nifti

AFFINE = np.array([[1.4, 0, 0, -50.0], [0, 1.4, 0, 20.0], [0, 0, 8.0, 5.0], [0, 0, 0, 1]])


def _image(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, (3, 8, 7)).astype(np.float32)


def _patient(tmp_path: Path, ed_mask_affine: np.ndarray) -> Path:
    write_nifti(_image(0), AFFINE, tmp_path / "ed.nii.gz")
    write_nifti(_image(1), AFFINE, tmp_path / "es.nii.gz")
    mask = np.zeros((3, 8, 7), np.uint8)
    mask[1, 2:5, 2:5] = 3
    write_nifti(mask, ed_mask_affine, tmp_path / "ed_gt.nii.gz")
    write_nifti(mask, AFFINE, tmp_path / "es_gt.nii.gz")
    (tmp_path / "m.csv").write_text("patient_id,label,ed_image,es_image,ed_mask,es_mask\n"
                                    "a,NOR,ed.nii.gz,es.nii.gz,ed_gt.nii.gz,es_gt.nii.gz\n")
    return tmp_path / "m.csv"


def test_mask_40mm_off_its_image_is_refused(tmp_path):
    shifted = AFFINE.copy()
    shifted[:3, 3] += [0.0, 40.0, 0.0]
    with pytest.raises(DataError, match=r"mask affine is 40.0 mm off its image's .*ed.nii.gz") as info:
        load_patient(read_manifest(_patient(tmp_path, shifted)).patients[0])
    assert info.value.path == tmp_path / "ed_gt.nii.gz"


def test_mask_half_a_millimetre_off_is_accepted_and_a_flipped_axis_refused(tmp_path):
    near = AFFINE.copy()
    near[:3, 3] += [0.3, -0.3, 0.2]  # rounding in another tool's writer
    vols = load_patient(read_manifest(_patient(tmp_path, near)).patients[0])
    assert int((vols.ed_mask.array == 3).sum()) == 9
    flipped = AFFINE.copy()
    flipped[0, 0] = -1.4  # same spacing and origin, x mirrored: the labels would land on the other side
    # read in the canonical in-plane frame (`io.orientation`), the mirrored mask's first voxel lands at the far
    # end of the image's row: refused by the origin check
    with pytest.raises(DataError, match="mask affine (is .* mm off|'s voxel axis i .* differs from) its image's"):
        load_patient(read_manifest(_patient(tmp_path, flipped)).patients[0])


def _with_sform(path: Path, sform: np.ndarray, pixdim_xyz) -> Path:
    img = nib.Nifti1Image(_image().transpose(2, 1, 0), sform)
    img.set_sform(sform, code=2)
    img.set_qform(None, code=0)
    img.header["pixdim"][1:4] = pixdim_xyz
    path.write_bytes(img.to_bytes())
    return path


def test_pixdim_and_sform_apart_by_a_factor_of_two_is_refused(tmp_path):
    path = _with_sform(tmp_path / "x.nii", AFFINE, (2.8, 2.8, 8.0))  # sform says 1.4 mm
    with pytest.raises(DataError, match=r"pixdim and in the sform affine differ \(i: 2.8 vs 1.4 mm, j: 2.8 vs 1.4 mm") as info:
        read_nifti(path)
    assert info.value.path == path
    cine = nib.Nifti1Image(np.stack([_image(0), _image(1)], -1).transpose(2, 1, 0, 3), AFFINE)
    cine.set_sform(AFFINE, code=2)
    cine.header["pixdim"][1:4] = (1.4, 1.4, 16.0)
    (tmp_path / "c.nii").write_bytes(cine.to_bytes())
    with pytest.raises(DataError, match=r"k: 16 vs 8 mm"):
        read_image(tmp_path / "c.nii", frame=2)


def test_unit_scale_sform_with_spacing_in_pixdim_is_accepted_as_in_acdc(tmp_path):
    unit = np.diag([-1.0, -1.0, 1.0, 1.0])  # ACDC's files: orientation only, spacing in pixdim
    vol = read_nifti(_with_sform(tmp_path / "acdc.nii", unit, (1.5625, 1.5625, 10.0)))
    assert vol.spacing == (10.0, 1.5625, 1.5625)
    vol = read_nifti(_with_sform(tmp_path / "near.nii", AFFINE, (1.405, 1.4, 8.0)))  # within 1 %
    assert vol.spacing == pytest.approx((8.0, 1.4, 1.405))
    with pytest.raises(DataError, match="i: 1.5 vs 1.4 mm"):
        read_nifti(_with_sform(tmp_path / "far.nii", AFFINE, (1.5, 1.4, 8.0)))
