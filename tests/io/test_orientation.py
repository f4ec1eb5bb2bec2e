"""One in-plane frame for every storage order (`cmrprior.io.orientation`), checked against nibabel's own
reorientation (`as_closest_canonical`, `io_orientation`) and against world positions voxel by voxel; the
inverse gives the input's own file back; ACDC and the phantom are read unchanged."""

from __future__ import annotations

import os
from itertools import product
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy.spatial.transform import Rotation

from cmrprior.io.load import load_patient, read_cine, read_image
from cmrprior.io.nifti import read_nifti, write_nifti
from cmrprior.io.records import PatientRecord

ACDC_ROOT = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "../shared/data/acdc/training"))
# The 8 in-plane storage orders of a (X, Y, Z) array as nibabel orientation transforms (Z untouched).
STORAGE = [np.array([[a, s], [1 - a, t], [2, 1]], dtype=float) for a, s, t in product((0, 1), (1, -1), (1, -1))]
SHAPE_XYZ = (9, 7, 4)


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 30000, size=SHAPE_XYZ).astype(np.int16)


def _stored(data: np.ndarray, affine: np.ndarray, ornt: np.ndarray, path: Path, zooms=None) -> nib.Nifti1Image:
    """The same scan stored in another voxel order: data transformed by `ornt`, affine adjusted so that every
    voxel keeps its world position (what a converter writing another order does)."""
    img = nib.Nifti1Image(np.ascontiguousarray(apply_orientation(data, ornt)), affine @ inv_ornt_aff(ornt, data.shape))
    if zooms is not None:  # ACDC style: unit-scale sform, the voxel size in pixdim only
        img.header.set_zooms(tuple(np.asarray(zooms)[np.argsort(ornt[:, 0])]))
    nib.save(img, str(path))
    return nib.load(str(path))


def _oblique(seed: int, spacing=(1.4, 1.7, 8.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.random(random_state=seed).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = np.random.default_rng(seed).normal(0, 50, 3)
    return affine


def _check_world_positions(vol, stored: nib.Nifti1Image) -> None:
    """Every voxel of the turned volume holds the stored value at the same world position."""
    data = np.asanyarray(stored.dataobj)
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ijk1 = np.c_[zyx[:, ::-1], np.ones(len(zyx))]  # (W, H, Z) = (i, j, k) voxel indices
    world = ijk1 @ vol.affine.T
    back = world @ np.linalg.inv(stored.affine).T
    idx = np.rint(back[:, :3]).astype(int)
    np.testing.assert_allclose(back[:, :3], idx, atol=1e-6)
    np.testing.assert_array_equal(vol.array[tuple(zyx.T)], data[tuple(idx.T)].astype(np.float32))


@pytest.mark.parametrize("k", range(8))
def test_axial_storage_orders_become_nibabels_lps_frame(tmp_path, k):
    """Reference: nibabel's `as_closest_canonical` (RAS) with x and y reversed, ACDC's L, P, S frame."""
    data = _data()
    affine = np.diag([-1.4, -1.7, 8.0, 1.0])
    affine[:3, 3] = (20.0, -5.0, 3.0)
    img = _stored(data, affine, STORAGE[k], tmp_path / "v.nii.gz")
    vol = read_image(tmp_path / "v.nii.gz")
    ras = nib.as_closest_canonical(img)
    want = np.flip(np.asanyarray(ras.dataobj), axis=(0, 1))
    np.testing.assert_array_equal(vol.array, want.transpose(2, 1, 0).astype(np.float32))
    np.testing.assert_allclose(vol.affine, ras.affine @ inv_ornt_aff(np.array([[0, -1], [1, -1], [2, 1]]), ras.shape))
    assert vol.spacing == pytest.approx((8.0, 1.7, 1.4))
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")
    _check_world_positions(vol, img)
    assert (vol.stored_frame is None) == (k == 0)  # the ACDC order itself is not touched


def test_the_slice_axis_keeps_its_order_and_direction(tmp_path):
    """Slices stored inferior-first stay so (nibabel's io_orientation reference to L, P, I); only the two
    in-plane axes move."""
    data = _data(1)
    affine = np.diag([1.4, 1.7, -8.0, 1.0])  # R, A, I: both in-plane axes reversed relative to ACDC
    img = _stored(data, affine, STORAGE[0], tmp_path / "v.nii.gz")
    vol = read_image(tmp_path / "v.nii.gz")
    ref = ornt_transform(io_orientation(img.affine), axcodes2ornt(("L", "P", "I")))
    np.testing.assert_array_equal(vol.array, apply_orientation(data, ref).transpose(2, 1, 0).astype(np.float32))
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "I")
    _check_world_positions(vol, img)


@pytest.mark.parametrize("seed", range(6))
def test_oblique_scans_give_one_array_whatever_the_storage_order(tmp_path, seed):
    """A random oblique plane (a slice normal closest to any world axis): the 8 storage orders give one
    array, affine and spacing; every voxel keeps its world value; the slice axis never moves."""
    data = _data(seed)
    affine = _oblique(seed)
    vols = []
    for k, ornt in enumerate(STORAGE):
        img = _stored(data, affine, ornt, tmp_path / f"v{k}.nii.gz")
        vol = read_image(tmp_path / f"v{k}.nii.gz")
        _check_world_positions(vol, img)
        assert vol.shape[0] == SHAPE_XYZ[2]
        vols.append(vol)
    for vol in vols[1:]:
        np.testing.assert_array_equal(vol.array, vols[0].array)
        np.testing.assert_allclose(vol.affine, vols[0].affine, atol=1e-4)  # sform rows are float32 in the file
        assert vol.spacing == pytest.approx(vols[0].spacing, rel=1e-6)
    # of the 8 orders, the chosen one has its first axis closest to the patient's left (-x in RAS), its second
    # to posterior (-y): the largest sum of the two cosines
    u = vols[0].affine[:3, :2] / np.linalg.norm(vols[0].affine[:3, :2], axis=0)
    best = max(-s * u[0, a] - t * u[1, 1 - a] for a, s, t in product((0, 1), (1, -1), (1, -1)))
    assert -u[0, 0] - u[1, 1] == pytest.approx(best)


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_planes_without_an_oblique_tie_break_are_still_one_array(tmp_path, plane):
    """Exact coronal and sagittal planes tie on the main score; the tie-break depends on the geometry only."""
    data = _data(2)
    cols = {"coronal": ([-1.4, 0, 0], [0, 0, -1.7], [0, 8.0, 0]), "sagittal": ([0, -1.4, 0], [0, 0, -1.7], [8.0, 0, 0])}
    affine = np.eye(4)
    affine[:3, :3] = np.array(cols[plane]).T
    arrays = []
    for k, ornt in enumerate(STORAGE):
        img = _stored(data, affine, ornt, tmp_path / f"v{k}.nii.gz")
        vol = read_image(tmp_path / f"v{k}.nii.gz")
        _check_world_positions(vol, img)
        arrays.append(vol.array)
    for a in arrays[1:]:
        np.testing.assert_array_equal(a, arrays[0])


@pytest.mark.parametrize("k", range(8))
def test_written_masks_have_the_inputs_voxel_order_and_header(tmp_path, k):
    """A mask made on the turned grid is written back in the input's order with the input's header
    (ACDC-style unit sform, spacing in pixdim), and reads back as the turned mask."""
    data = _data(3)
    affine = _oblique(10 + k, spacing=(1.0, 1.0, 1.0))
    img = _stored(data, affine, STORAGE[k], tmp_path / "img.nii.gz", zooms=(1.4, 1.7, 8.0))
    vol = read_image(tmp_path / "img.nii.gz")
    mask = (vol.array % 4).astype(np.uint8)
    out = write_nifti(mask, None, tmp_path / "mask.nii.gz", like=vol)
    written = nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (np.asanyarray(img.dataobj) % 4).astype(np.uint8))
    np.testing.assert_array_equal(written.affine, img.affine)
    np.testing.assert_array_equal(written.header["pixdim"][1:4], img.header["pixdim"][1:4])
    for key in ("qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "quatern_b", "quatern_c", "quatern_d"):
        np.testing.assert_array_equal(written.header[key], img.header[key])
    np.testing.assert_array_equal(read_image(out).array, mask)
    from cmrprior.io.orientation import as_stored

    # the inverse on the volume itself, and a 4D (Z, H, W, T) array on the grid
    back = as_stored(vol)
    np.testing.assert_array_equal(back.array, read_nifti(tmp_path / "img.nii.gz").array)
    np.testing.assert_array_equal(back.affine, img.affine)
    cine = np.stack([mask, 3 - mask], axis=-1)
    out4 = write_nifti(cine, None, tmp_path / "cine.nii.gz", like=vol)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out4)).dataobj)[..., 1],
                                  3 - (np.asanyarray(img.dataobj) % 4).astype(np.uint8))


def test_a_mask_stored_in_another_order_than_its_image_is_read_in_place(tmp_path):
    data = _data(4)
    affine = _oblique(4)
    _stored(data, affine, STORAGE[0], tmp_path / "ed.nii.gz")
    _stored(data, affine, STORAGE[0], tmp_path / "es.nii.gz")
    _stored((data % 4).astype(np.uint8), affine, STORAGE[6], tmp_path / "ed_gt.nii.gz")
    _stored((data % 4).astype(np.uint8), affine, STORAGE[3], tmp_path / "es_gt.nii.gz")
    pv = load_patient(PatientRecord("p", None, tmp_path / "ed.nii.gz", tmp_path / "es.nii.gz",
                                    tmp_path / "ed_gt.nii.gz", tmp_path / "es_gt.nii.gz"))
    np.testing.assert_array_equal(pv.ed_mask.array, pv.ed.array % 4)
    np.testing.assert_array_equal(pv.es_mask.array, pv.es.array % 4)


def test_a_4d_cine_is_turned_frame_by_frame(tmp_path):
    rng = np.random.default_rng(5)
    cine = rng.random((8, 6, 3, 4)).astype(np.float32)
    affine = np.diag([1.5, -1.5, 10.0, 1.0])  # x reversed relative to ACDC
    nib.save(nib.Nifti1Image(cine, affine), str(tmp_path / "c.nii.gz"))
    frames = read_cine(tmp_path / "c.nii.gz").frames
    for t, f in enumerate(frames):
        np.testing.assert_array_equal(f.array, cine[::-1, :, :, t].transpose(2, 1, 0))
    np.testing.assert_array_equal(read_image(tmp_path / "c.nii.gz", frame=3).array, frames[2].array)


def test_dicom_series_stored_transposed_or_mirrored_read_as_one(tmp_path, dicom_slice, dicom_geometry):
    """The same slices written as a scanner would with rows and columns swapped (ImageOrientationPatient
    swapped, the slice normal then reversed) or with columns reversed: one in-plane array."""
    row, col, normal = dicom_geometry
    stack = np.random.default_rng(6).integers(1, 1000, size=(3, 6, 5)).astype(np.int16)
    origin = np.array([10.0, -20.0, 30.0])
    dy, dx = 1.25, 1.5
    for k in range(3):
        ipp = origin + k * 8.0 * normal
        (tmp_path / "a").mkdir(exist_ok=True)
        dicom_slice(tmp_path / "a" / f"{k}.dcm", stack[k], ipp, spacing=(dy, dx), slope=1.0, intercept=0.0)
        (tmp_path / "t").mkdir(exist_ok=True)
        dicom_slice(tmp_path / "t" / f"{k}.dcm", stack[k].T, ipp, iop=np.r_[col, row], spacing=(dx, dy),
                    slope=1.0, intercept=0.0)
        (tmp_path / "m").mkdir(exist_ok=True)
        dicom_slice(tmp_path / "m" / f"{k}.dcm", stack[k][:, ::-1], ipp + (stack.shape[2] - 1) * dx * row,
                    iop=np.r_[-row, col], spacing=(dy, dx), slope=1.0, intercept=0.0)
    a, t, m = (read_image(tmp_path / n) for n in "atm")
    np.testing.assert_array_equal(a.array, stack.astype(np.float32))  # this plane is stored in ACDC's frame
    assert a.stored_frame is None
    np.testing.assert_array_equal(t.array, a.array[::-1])  # the slice axis follows the (reversed) normal
    np.testing.assert_array_equal(m.array, a.array[::-1])  # reversed columns reverse the normal too
    assert t.spacing == a.spacing == m.spacing
    for turned in (t, m):  # voxel (i, j, k) of the turned stacks is voxel (i, j, 2 - k) of the first
        np.testing.assert_allclose(turned.affine @ [2, 3, 0, 1.0], a.affine @ [2, 3, 2, 1.0], atol=1e-6)
        np.testing.assert_allclose(turned.affine[:3, :2], a.affine[:3, :2], atol=1e-6)


def test_a_nifti_without_orientation_codes_is_used_as_stored(tmp_path):
    data = _data(7)
    img = nib.Nifti1Image(data, None)  # qform and sform codes 0: nibabel's made-up Analyze affine
    nib.save(img, str(tmp_path / "v.nii"))
    assert nib.aff2axcodes(nib.load(str(tmp_path / "v.nii")).affine) != ("L", "P", "S")
    vol = read_image(tmp_path / "v.nii")
    assert vol.stored_frame is None
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0).astype(np.float32))


def test_already_canonical_volumes_are_returned_as_they_are(tmp_path):
    from cmrprior.io.orientation import in_plane_ornt, to_canonical

    data = _data(8)
    _stored(data, _oblique(8), STORAGE[5], tmp_path / "v.nii.gz")
    vol = read_image(tmp_path / "v.nii.gz")
    assert to_canonical(vol) is vol
    np.testing.assert_array_equal(in_plane_ornt(vol.affine), [[0, 1], [1, 1], [2, 1]])


def test_phantom_files_are_stored_in_the_canonical_frame(tmp_path):
    """The phantom's NIfTI and DICOM writers store the segmenter's frame: their golden tables stand."""
    from cmrprior.data.phantom import generate_phantom
    from cmrprior.data.phantom.config import PhantomConfig
    from cmrprior.data.phantom.dicom_writer import CINE_FOLDER

    small = PhantomConfig(image_size=(64, 72), n_slices=(3, 3))
    nifti = generate_phantom(tmp_path / "n", n_patients=1, seed=1, classes=("NOR",), config=small)
    for f in sorted((nifti / "patient001").glob("*.nii.gz")):
        vol = read_image(f)
        assert vol.stored_frame is None
        np.testing.assert_array_equal(vol.array, read_nifti(f).array)
    dicom = generate_phantom(tmp_path / "d", n_patients=1, seed=1, classes=("NOR",), config=small,
                             output_format="dicom")
    frames = read_cine(dicom / "patient001" / CINE_FOLDER).frames
    assert all(f.stored_frame is None for f in frames)
    np.testing.assert_array_equal(frames[0].array, read_nifti(nifti / "patient001" / "patient001_frame01.nii.gz").array)


@pytest.mark.acdc
@pytest.mark.skipif(not ACDC_ROOT.is_dir(), reason="ACDC training folder absent")
def test_every_acdc_file_is_in_the_canonical_frame():
    """All 100 training patients, images and masks: the reorientation is the identity (headers only)."""
    from cmrprior.io.orientation import in_plane_ornt

    files = sorted(ACDC_ROOT.glob("patient*/patient*_frame*.nii.gz"))
    assert len(files) == 400
    for f in files:
        np.testing.assert_array_equal(in_plane_ornt(nib.load(str(f)).affine), [[0, 1], [1, 1], [2, 1]], err_msg=str(f))
    vol = read_image(files[0])
    assert vol.stored_frame is None
    np.testing.assert_array_equal(vol.array, read_nifti(files[0]).array)
