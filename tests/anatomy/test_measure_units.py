"""The spacing the measures use comes from the header's pixdim (ACDC: unit-scale sform, true spacing in pixdim),
and a mask written by cmrprior and read back gives the same measures as the array in memory."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrprior.anatomy.measure import measure_patient
from cmrprior.io.load import as_mask, read_image
from cmrprior.io.nifti import write_nifti

PIXDIM_XYZ = (1.5625, 1.5625, 10.0)


def _labels_zyx() -> np.ndarray:
    yy, xx = np.mgrid[:96, :80].astype(np.float64)
    r2 = ((yy - 48) * PIXDIM_XYZ[1]) ** 2 + ((xx - 40) * PIXDIM_XYZ[0]) ** 2
    sl = np.zeros((96, 80), np.uint8)
    sl[r2 < 30.0**2] = 2
    sl[r2 < 22.0**2] = 3
    return np.stack([sl] * 5)


def _write_acdc_like(path: Path, labels_zyx: np.ndarray) -> None:
    """As ACDC stores it: sform code 2 with unit scale (a flip, no spacing), qform code 0, spacing only in pixdim."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    img = nib.Nifti1Image(labels_zyx.transpose(2, 1, 0).copy(), affine)
    img.set_qform(None, code=0)
    img.set_sform(affine, code=2)
    img.header.set_zooms(PIXDIM_XYZ)
    nib.save(img, str(path))


def test_spacing_comes_from_pixdim_not_the_unit_sform(tmp_path):
    labels = _labels_zyx()
    path = tmp_path / "mask.nii.gz"
    _write_acdc_like(path, labels)
    raw = nib.load(str(path))
    assert np.allclose(np.linalg.norm(raw.affine[:3, :3], axis=0), 1.0)  # the sform says 1 mm
    assert tuple(raw.header["pixdim"][1:4]) == PIXDIM_XYZ
    vol = read_image(path)
    assert vol.spacing == (10.0, 1.5625, 1.5625)
    m = measure_patient(vol.array.astype(np.uint8), vol.array.astype(np.uint8), vol.spacing)
    voxel_ml = 10.0 * 1.5625 * 1.5625 / 1000
    assert m.lv_edv_ml == pytest.approx(np.count_nonzero(labels == 3) * voxel_ml)
    assert m.lv_edv_ml == pytest.approx(np.pi * 22.0**2 * 5 * 10.0 / 1000, rel=0.03)  # 76 ml, not 3 ml
    assert m.max_wall_thickness_mm == pytest.approx(8.0, abs=1.5625)


def test_written_mask_read_back_gives_the_measures_in_memory(tmp_path):
    labels = _labels_zyx()
    src = tmp_path / "image.nii.gz"
    _write_acdc_like(src, labels)
    image = read_image(src)  # stands for the image a predicted mask is written "like"
    es = labels.copy()
    es[:, 40:56, 30:50][es[:, 40:56, 30:50] == 3] = 2
    for phase, arr in (("ED", labels), ("ES", es)):
        write_nifti(arr, None, tmp_path / f"p_{phase}.nii.gz", like=image)
    back = [as_mask(read_image(tmp_path / f"p_{ph}.nii.gz"), image) for ph in ("ED", "ES")]
    assert back[0].spacing == image.spacing
    assert nib.load(str(tmp_path / "p_ED.nii.gz")).header["sform_code"] == 2
    in_memory = measure_patient(labels, es, image.spacing, 170.0, 70.0)
    read_back = measure_patient(back[0].array, back[1].array, back[0].spacing, 170.0, 70.0)
    assert read_back.as_dict() == pytest.approx(in_memory.as_dict(), rel=0, abs=0, nan_ok=True)


def _acdc_root() -> Path:
    env = os.environ.get("ACDC_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared/data/acdc/training"


@pytest.mark.acdc
def test_acdc_file_spacing_and_round_trip(tmp_path):
    pdir = _acdc_root() / "patient001"
    if not pdir.is_dir():
        pytest.skip(f"ACDC not found at {pdir}")
    ed, es = (read_image(pdir / f"patient001_frame{f:02d}_gt.nii.gz") for f in (1, 12))
    hdr = nib.load(str(pdir / "patient001_frame01_gt.nii.gz")).header
    assert int(hdr["sform_code"]) > 0 and np.allclose(np.abs(hdr.get_sform()[:3, :3]).sum(axis=0), 1.0)
    assert ed.spacing == (10.0, 1.5625, 1.5625) == tuple(float(z) for z in hdr["pixdim"][[3, 2, 1]])
    m = measure_patient(ed.array.astype(np.uint8), es.array.astype(np.uint8), ed.spacing, 184.0, 95.0)
    for name, vol in (("ed", ed), ("es", es)):
        write_nifti(vol.array.astype(np.uint8), None, tmp_path / f"{name}.nii.gz", like=vol)
    back = [read_image(tmp_path / f"{n}.nii.gz") for n in ("ed", "es")]
    again = measure_patient(back[0].array.astype(np.uint8), back[1].array.astype(np.uint8), back[0].spacing,
                            184.0, 95.0)
    assert again.as_dict() == pytest.approx(m.as_dict(), rel=0, abs=0, nan_ok=True)


def test_bsa_refuses_a_height_in_metres():
    from cmrprior.anatomy.measure import mosteller_bsa
    from cmrprior.errors import InputError

    assert mosteller_bsa(172.0, 70.0) == pytest.approx((172.0 * 70.0 / 3600.0) ** 0.5)
    with pytest.raises(InputError, match="height 1.72 cm .* centimetres"):
        mosteller_bsa(1.72, 70.0)
    with pytest.raises(InputError, match="weight 70000 kg"):
        mosteller_bsa(172.0, 70000.0)
