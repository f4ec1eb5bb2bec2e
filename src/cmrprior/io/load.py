"""Load a PatientRecord's voxels into PatientVolumes, checking what the later stages rely on.

Checks: each image 3D and finite (in the readers); each mask the same shape as its image, integer-valued,
labels within 0..3 (ACDC: 0 BG, 1 RV, 2 MYO, 3 LV cavity). Masks are returned as uint8 `Volume.array`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.nifti import is_nifti, read_nifti, read_nifti_frame
from cmrprior.io.records import MASK_LABELS, PatientRecord, PatientVolumes, Volume

MAX_MASK_LABEL = max(MASK_LABELS)


def read_image(path: str | Path, frame: int | None = None) -> Volume:
    """A NIfTI file or a DICOM series folder -> Volume `(Z, H, W)`.

    `frame` (1-based) is used only when `path` is a 4D NIfTI cine: that frame is returned.

    Raises:
        DataError: missing path, unknown format, or any reader error.
    """
    path = Path(path)
    if path.is_dir():
        from cmrprior.io.dicom import read_dicom_series

        return read_dicom_series(path)
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


def as_mask(volume: Volume, image: Volume) -> Volume:
    """Check a mask against its image and return it with a uint8 array.

    Raises:
        DataError: shape differs from the image, non-integer values, or labels outside 0..3.
    """
    path = volume.path
    if volume.shape != image.shape:
        raise DataError(path, f"mask shape {volume.shape} (Z, H, W) differs from image shape {image.shape} ({image.path})")
    arr = volume.array
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > MAX_MASK_LABEL:
        bad = np.unique(arr[(arr < 0) | (arr > MAX_MASK_LABEL)])[:5]
        shown = ", ".join(f"{v:g}" for v in bad.tolist())
        raise DataError(path, f"mask labels outside 0..{MAX_MASK_LABEL}: [{shown}]")
    as_int = arr.astype(np.uint8)
    if not np.array_equal(as_int, arr):
        raise DataError(path, "mask has non-integer values")
    return Volume(array=as_int, spacing=volume.spacing, affine=volume.affine, path=path)


def load_patient(record: PatientRecord) -> PatientVolumes:
    """Read a patient's ED/ES images and (if present) masks.

    When an image path is the record's 4D cine, frame `ed_frame`/`es_frame` (1-based) is taken from it.

    Raises:
        DataError: naming the offending file (see `read_image` and `as_mask`).
    """
    from_cine = lambda p, f: f if record.cine is not None and Path(p) == Path(record.cine) else None  # noqa: E731
    ed = read_image(record.ed_image, from_cine(record.ed_image, record.ed_frame))
    es = read_image(record.es_image, from_cine(record.es_image, record.es_frame))
    ed_mask = es_mask = None
    if record.ed_mask is not None:
        ed_mask = as_mask(read_image(record.ed_mask), ed)
    if record.es_mask is not None:
        es_mask = as_mask(read_image(record.es_mask), es)
    return PatientVolumes(record=record, ed=ed, es=es, ed_mask=ed_mask, es_mask=es_mask)
