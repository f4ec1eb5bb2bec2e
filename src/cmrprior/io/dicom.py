"""DICOM series (one folder = one 3D phase, one file per slice) into a `Volume` (pydicom).

* Slices are sorted by their position along the slice normal n = row_cosine x column_cosine
  (`ImagePositionPatient . n`), so the array's z follows the normal's direction.
* Spacing: `PixelSpacing` = (row spacing, column spacing) gives (y, x); z is the distance between
  neighbouring slice positions (uniform within 1 %), or `SpacingBetweenSlices`/`SliceThickness` for a single
  slice.
* Affine: voxel (i = column, j = row, k = slice) -> RAS+ mm (DICOM's LPS with x and y negated), the same
  convention as NIfTI so that `write_nifti(volume.array, volume.affine, ...)` places it correctly.
* Intensities: `RescaleSlope * stored + RescaleIntercept`, float32.

Which files are read: hidden files and a DICOMDIR are ignored, and so are files that are not DICOM (no
`DICM` marker at byte 128, as DICOM part 10 files have: a README.txt, a Windows Thumbs.db), which are listed
in the log. A DICOM file that is not an image (a structured report, a presentation state: a SOP class other
than an image storage) is skipped with its reason; a DICOM image without pixel data (truncated, damaged
header) is an error that names it, so that a later check (a missing slice or phase) does not blame another
file. Compressed pixel data (JPEG, JPEG 2000) needs a decoder: without one, the error names the optional
extra `cmrprior[dicom-compressed]`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.checks import check_spacing
from cmrprior.io.records import Volume

log = logging.getLogger(__name__)

_TOL = 1e-3
# The optional extra (pyproject.toml) with the decoders of compressed transfer syntaxes.
COMPRESSED_EXTRA = "dicom-compressed"


def _read(path: Path):  # -> pydicom.Dataset
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types (struct.error, ...) for damaged files
        raise DataError(path, f"corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
    return ds


def _is_part10(path: Path) -> bool:
    """True for a DICOM part 10 file: 128 bytes of preamble, then `DICM`."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # unreadable: let the reader name the error
    return len(head) == 132 and head[128:] == b"DICM"


def non_image_reason(ds, path: Path) -> str | None:
    """None for a DICOM image with pixel data; the reason to skip a DICOM file that is no image.

    Raises:
        DataError: naming `path`, for a file that should be an image (image storage SOP class, or image
            attributes) but has no pixel data, or has no SOP class at all: a truncated or damaged file.
    """
    if "PixelData" in ds:
        return None
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    sop = getattr(ds, "SOPClassUID", None) or getattr(meta, "MediaStorageSOPClassUID", None)
    if sop is None:
        raise DataError(path, "damaged or truncated DICOM file: no SOP class and no pixel data were read")
    name = UID(str(sop)).name
    if "Image Storage" in name or "Rows" in ds:
        raise DataError(path, f"damaged or truncated DICOM file: a {name} without pixel data")
    return f"not an image ({name}, no pixel data)"


def pixel_array(ds, path: Path) -> np.ndarray:
    """`ds.pixel_array`, errors as DataError naming `path` (and the extra to install for a missing decoder)."""
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for truncated/unsupported pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is not None and syntax.is_compressed:
            hint = (f"no decoder for it is installed: pip install 'cmrprior[{COMPRESSED_EXTRA}]'"
                    if _decoder_missing(syntax) else
                    f"the file is damaged, or the installed decoders cannot read it (the extra "
                    f"cmrprior[{COMPRESSED_EXTRA}] adds the pylibjpeg decoders)")
            raise DataError(path, f"cannot decode compressed pixel data ({syntax.name}): {hint} "
                                  f"({type(exc).__name__}: {exc})") from exc
        raise DataError(path, f"cannot decode pixel data, file truncated or damaged "
                              f"({type(exc).__name__}: {exc})") from exc


def _decoder_missing(syntax) -> bool:
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2: the decoding error itself lists the missing packages
        return False
    try:
        return not get_decoder(syntax).is_available
    except NotImplementedError:
        return True


def _attr(ds, name: str, path: Path, n: int | None = None) -> list[float]:
    value = getattr(ds, name, None)
    if value is None:
        raise DataError(path, f"DICOM attribute {name} missing")
    from pydicom.multival import MultiValue

    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        vals = [float(v) for v in items]
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"DICOM attribute {name} is not numeric: {value!r}") from exc
    if n is not None and len(vals) != n:
        raise DataError(path, f"DICOM attribute {name} should have {n} values, has {len(vals)}")
    return vals


def _pixels(ds, path: Path) -> np.ndarray:
    arr = pixel_array(ds, path)
    if arr.ndim != 2:
        raise DataError(path, f"expected one 2D image per file, got pixel data of shape {arr.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def dicom_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(DICOM files, other files) of a folder, sorted by name; hidden files and DICOMDIR are in neither.

    The other files (no `DICM` marker: README.txt, Thumbs.db) are listed in the log.
    """
    files = sorted(f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR")
    is_dicom = {f: _is_part10(f) for f in files}
    dicom = [f for f in files if is_dicom[f]]
    others = [f for f in files if not is_dicom[f]]
    if others:
        log.info("%s: %d file(s) that are not DICOM ignored: %s", folder, len(others), ", ".join(f.name for f in others))
    return dicom, others


def _listing(files: list[Path]) -> str:
    shown = ", ".join(f.name for f in files[:5])
    return shown + (f" and {len(files) - 5} more" if len(files) > 5 else "")


def read_dicom_series(folder: str | Path) -> Volume:
    """Read a folder holding one DICOM series (one phase) as a float32 `(Z, H, W)` Volume.

    Raises:
        DataError: folder missing or without DICOM images, a damaged DICOM file or one whose pixels cannot
            be decoded (module doc), missing geometry attributes, or an inconsistent series (different image
            sizes, orientations, pixel spacings or series UIDs; two slices at one position; non-uniform slice
            spacing; non-finite values; implausible spacing, see `cmrprior.io.checks`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "DICOM series folder not found")
    files, others = dicom_files(folder)
    if not files:
        extra = f" (files that are not DICOM: {_listing(others)})" if others else ""
        raise DataError(folder, f"no DICOM files in the series folder{extra}")
    slices = []
    for f in files:
        ds = _read(f)
        reason = non_image_reason(ds, f)
        if reason is not None:
            log.info("%s: skipped, %s", f, reason)
            continue
        iop = np.array(_attr(ds, "ImageOrientationPatient", f, 6))
        ipp = np.array(_attr(ds, "ImagePositionPatient", f, 3))
        ps = _attr(ds, "PixelSpacing", f, 2)
        rows, cols = int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))
        slices.append({"path": f, "ds": ds, "iop": iop, "ipp": ipp, "ps": ps, "shape": (rows, cols),
                       "uid": str(getattr(ds, "SeriesInstanceUID", ""))})
    if not slices:
        raise DataError(folder, "no DICOM images in the series folder (only files without pixel data)")
    ref = slices[0]
    for s in slices[1:]:
        if s["shape"] != ref["shape"]:
            raise DataError(s["path"], f"image size {s['shape']} differs from {ref['shape']} of {ref['path'].name}; "
                                       "inconsistent series")
        if not np.allclose(s["iop"], ref["iop"], atol=_TOL):
            raise DataError(s["path"], f"ImageOrientationPatient differs from {ref['path'].name}; inconsistent series")
        if not np.allclose(s["ps"], ref["ps"], rtol=_TOL):
            raise DataError(s["path"], f"PixelSpacing {s['ps']} differs from {ref['ps']} of {ref['path'].name}")
        if s["uid"] != ref["uid"]:
            raise DataError(s["path"], f"SeriesInstanceUID differs from {ref['path'].name}: the folder mixes series")
    row_cos, col_cos = ref["iop"][:3], ref["iop"][3:]
    normal = np.cross(row_cos, col_cos)
    if not (abs(np.linalg.norm(row_cos) - 1) < 1e-2 and abs(np.linalg.norm(col_cos) - 1) < 1e-2
            and abs(row_cos @ col_cos) < 1e-2):
        raise DataError(ref["path"], f"ImageOrientationPatient {ref['iop'].tolist()} is not two orthonormal vectors")
    dist = np.array([s["ipp"] @ normal for s in slices])
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    dist = dist[order]
    gaps = np.diff(dist)
    if len(gaps) and gaps.min() < _TOL:
        k = int(np.argmin(gaps))
        raise DataError(slices[k + 1]["path"], f"same slice position as {slices[k]['path'].name}: the folder holds "
                                               "several images per position (a cine? give it as `cine`, whose ED "
                                               "and ES frames are then taken or found)")
    if len(gaps):
        dz = float(gaps.mean())
        if np.abs(gaps - dz).max() > 0.01 * dz + _TOL:
            raise DataError(folder, f"non-uniform slice spacing {np.round(gaps, 3).tolist()} mm (missing slices?)")
    else:
        ds = ref["ds"]
        dz = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)
    dy, dx = (float(v) for v in ref["ps"])
    check_spacing((dz, dy, dx), folder, n_slices=len(slices))
    array = np.stack([_pixels(s["ds"], s["path"]) for s in slices])
    if not np.isfinite(array).all():
        raise DataError(folder, "non-finite voxel values after rescaling")
    affine = np.eye(4)
    affine[:3, 0] = row_cos * dx  # column index i moves along the row direction
    affine[:3, 1] = col_cos * dy  # row index j moves along the column direction
    affine[:3, 2] = normal * dz
    affine[:3, 3] = slices[0]["ipp"]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return Volume(array=array, spacing=(dz, dy, dx), affine=lps_to_ras @ affine, path=folder)
