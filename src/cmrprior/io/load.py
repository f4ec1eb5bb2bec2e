"""Load a PatientRecord's voxels into PatientVolumes, checking what the later stages rely on.

Every image and mask read here is turned to one in-plane frame, the segmenter's
(`cmrprior.io.orientation.to_canonical`): the same scan stored in another voxel order gives the same array.

Checks: each image 3D, finite, with a plausible spacing (in the readers) and not constant; each mask the
same shape, spacing and affine (position, orientation) as its image, integer-valued, labels within 0..3
(ACDC: 0 BG, 1 RV, 2 MYO, 3 LV cavity). Masks are returned as uint8 `Volume.array`. ED/ES images may be frames of the record's cine (a 4D
NIfTI or a DICOM cine folder, see `read_cine`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.checks import check_not_constant
from cmrprior.io.dicom_cine import Cine
from cmrprior.io.nifti import is_nifti, read_nifti, read_nifti_4d, read_nifti_frame
from cmrprior.io.orientation import to_canonical
from cmrprior.io.records import MASK_LABELS, PatientRecord, PatientVolumes, Volume

MAX_MASK_LABEL = max(MASK_LABELS)


def read_image(path: str | Path, frame: int | None = None) -> Volume:
    """A NIfTI file or a DICOM series folder -> Volume `(Z, H, W)`, in the canonical in-plane frame
    (`cmrprior.io.orientation`).

    `frame` (1-based) is used only when `path` is a cine (a 4D NIfTI, or a DICOM folder with several phases
    per slice position): that frame is returned.

    Raises:
        DataError: missing path, unknown format, frame out of range, or any reader error.
    """
    return to_canonical(_read_stored(Path(path), frame))


def _read_stored(path: Path, frame: int | None) -> Volume:
    """`read_image` before the in-plane reorientation."""
    if path.is_dir():
        from cmrprior.io.dicom import read_dicom_series

        if frame is None:
            return read_dicom_series(path)
        return _cine_frame(read_cine(path), frame)  # frames of read_cine are turned already
    if not path.exists():
        raise DataError(path, "file not found")
    if not is_nifti(path):
        raise DataError(path, "unsupported image format (expected .nii, .nii.gz or a DICOM series folder)")
    if frame is not None:
        import nibabel as nib

        try:
            ndim = len(nib.load(str(path)).shape)
        except Exception as exc:  # noqa: BLE001 - any nibabel failure is a corrupt file
            raise DataError(path, f"corrupt or truncated NIfTI file ({type(exc).__name__}: {exc})") from exc
        if ndim == 4:
            return read_nifti_frame(path, frame)
    return read_nifti(path)


def read_cine(path: str | Path) -> Cine:
    """A cine, 4D NIfTI `(X, Y, Z, T)` or DICOM cine folder, as a `Cine` (frames in time order), each frame
    in the canonical in-plane frame (`cmrprior.io.orientation`).

    NIfTI trigger times are `t * pixdim[4]` ms when the header gives a positive frame interval, else None.

    Raises:
        DataError: missing path, unknown format, or any reader error.
    """
    path = Path(path)
    if path.is_dir():
        from cmrprior.io.dicom_cine import read_dicom_cine

        cine = read_dicom_cine(path)
        return dataclasses.replace(cine, frames=tuple(to_canonical(f) for f in cine.frames))
    if not path.exists():
        raise DataError(path, "file not found")
    if not is_nifti(path):
        raise DataError(path, "unsupported cine format (expected a 4D .nii/.nii.gz or a DICOM cine folder)")
    frames = read_nifti_4d(path)
    header = frames[0].header
    dt = float(header.get_zooms()[3]) if header is not None and len(header.get_zooms()) > 3 else 0.0
    if header is not None and header.get_xyzt_units()[1] == "sec":
        dt *= 1000.0
    times = tuple(t * dt for t in range(len(frames))) if dt > 0 else None
    return Cine(frames=tuple(to_canonical(f) for f in frames), trigger_times_ms=times, path=path)


def cine_frame_count(path: str | Path) -> int | None:
    """Frames of a 4D NIfTI cine from its header alone (nothing decoded); None for a DICOM folder or a file
    that is not a 4D NIfTI (their count is known once read)."""
    path = Path(path)
    if not (path.is_file() and is_nifti(path)):
        return None
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception:  # noqa: BLE001 - the reader names the problem when the cine is read
        return None
    return int(shape[3]) if len(shape) == 4 else None


def _cine_frame(cine: Cine, frame: int) -> Volume:
    if not 1 <= frame <= cine.n_frames:
        raise DataError(cine.path, f"frame {frame} out of range 1..{cine.n_frames}")
    return cine.frames[frame - 1]


# How far a mask's affine may be from its image's: origin (mm) and each voxel axis (relative to its length).
GRID_ORIGIN_TOL_MM = 1.0
GRID_AXIS_RTOL = 0.01


def _check_same_grid(mask: Volume, image: Volume) -> None:
    """Refuse a mask whose affine puts its voxels elsewhere than the image's (shifted, rotated or scaled):
    the labels would then be measured or written back at the wrong place. Raises DataError naming the mask."""
    shift = float(np.linalg.norm(mask.affine[:3, 3] - image.affine[:3, 3]))
    if shift > GRID_ORIGIN_TOL_MM:
        raise DataError(mask.path, f"mask affine is {shift:.1f} mm off its image's ({image.path}): the first voxel "
                                   f"is at {np.round(mask.affine[:3, 3], 2).tolist()} mm instead of "
                                   f"{np.round(image.affine[:3, 3], 2).tolist()} (accepted {GRID_ORIGIN_TOL_MM:g} mm); "
                                   "the mask belongs to another image or position")
    for a in range(3):
        ref = image.affine[:3, a]
        if np.linalg.norm(mask.affine[:3, a] - ref) > GRID_AXIS_RTOL * np.linalg.norm(ref):
            raise DataError(mask.path, f"mask affine's voxel axis {'ijk'[a]} {np.round(mask.affine[:3, a], 4).tolist()} "
                                       f"differs from its image's {np.round(ref, 4).tolist()} ({image.path}): "
                                       "orientation or voxel size differ")


def as_mask(volume: Volume, image: Volume) -> Volume:
    """Check a mask against its image and return it with a uint8 array.

    Raises:
        DataError: shape or voxel spacing (1 %) differs from the image, the affine differs (origin by more
            than 1 mm, an axis by more than 1 %), non-integer values, or labels outside 0..3.
    """
    path = volume.path
    if volume.shape != image.shape:
        raise DataError(path, f"mask shape {volume.shape} (Z, H, W) differs from image shape {image.shape} ({image.path})")
    if not np.allclose(volume.spacing, image.spacing, rtol=1e-2):
        raise DataError(path, f"mask voxel spacing {tuple(round(s, 4) for s in volume.spacing)} mm (z, y, x) differs "
                              f"from image spacing {tuple(round(s, 4) for s in image.spacing)} ({image.path})")
    _check_same_grid(volume, image)
    arr = volume.array
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > MAX_MASK_LABEL:
        bad = np.unique(arr[(arr < 0) | (arr > MAX_MASK_LABEL)])[:5]
        shown = ", ".join(f"{v:g}" for v in bad.tolist())
        raise DataError(path, f"mask labels outside 0..{MAX_MASK_LABEL}: [{shown}]")
    as_int = arr.astype(np.uint8)
    if not np.array_equal(as_int, arr):
        raise DataError(path, "mask has non-integer values")
    return dataclasses.replace(volume, array=as_int)


def load_patient(record: PatientRecord) -> PatientVolumes:
    """Read a patient's ED/ES images and (if present) masks.

    When an image path is the record's cine, frame `ed_frame`/`es_frame` (1-based) is taken from it (the
    cine is decoded once for both). A cine-only record without frames must first go through
    `cmrprior.segmentation.phases.resolve_cohort_phases`.

    Raises:
        DataError: naming the offending file (see `read_image`, `read_cine` and `as_mask`), a constant image,
            or a cine image without its frame number.
    """
    cine: Cine | None = None
    images = []
    for key, path, frame in (("ED", record.ed_image, record.ed_frame), ("ES", record.es_image, record.es_frame)):
        if record.cine is not None and Path(path) == Path(record.cine):
            if frame is None:
                raise DataError(path, f"patient {record.patient_id}: no {key} frame for the cine; give "
                                      f"{key.lower()}_frame or find it with resolve_cohort_phases")
            if Path(path).is_dir():
                cine = cine or read_cine(path)
                images.append(_cine_frame(cine, frame))
            else:
                images.append(read_image(path, frame))
        else:
            images.append(read_image(path))
    ed, es = images
    for vol in (ed, es):
        check_not_constant(vol)
    ed_mask = es_mask = None
    if record.ed_mask is not None:
        ed_mask = as_mask(read_image(record.ed_mask), ed)
    if record.es_mask is not None:
        es_mask = as_mask(read_image(record.es_mask), es)
    return PatientVolumes(record=record, ed=ed, es=es, ed_mask=ed_mask, es_mask=es_mask)
