"""NIfTI reading and writing (nibabel) into `Volume` records.

Array convention (see `cmrprior.io.records`): a NIfTI 3D image with data `(X, Y, Z)` becomes a float32
`Volume.array` `(Z, H, W) = data.transpose(2, 1, 0)`, spacing `(z, y, x)` mm from the header zooms, and the
header affine (voxel (i, j, k) -> RAS+ mm) unchanged. Masks keep their integer values (cast to float32 here;
`cmrprior.io.load` turns them into uint8 after checking the labels).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.checks import check_spacing
from cmrprior.io.orientation import for_writing
from cmrprior.io.records import Volume
from cmrprior.utils import atomic

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    """True when the file name ends in .nii or .nii.gz."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _raw_pixdim(img, path: Path) -> np.ndarray:
    """`pixdim[1:4]` as stored: nibabel silently replaces 0 by 1 when it loads a header."""
    header = img.header
    if "pixdim" not in header:
        return np.ones(3)
    try:
        with nib.openers.ImageOpener(str(path)) as fh:
            raw = type(header).from_fileobj(fh, check=False)
        return np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except Exception:  # noqa: BLE001 - the image itself loaded; fall back to the fixed header
        return np.asarray(header["pixdim"][1:4], dtype=np.float64)


def _load(path: Path):
    """(raw data (native dtype, scaling applied), affine, zooms, header); any read failure -> DataError."""
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a file (expected a NIfTI .nii or .nii.gz file)")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise DataError(path, f"corrupt or truncated NIfTI file ({type(exc).__name__}: {exc})") from exc
    _check_pixdim(img, path, data.ndim)
    _check_sform_scale(img, path)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    return data, np.asarray(img.affine, dtype=np.float64), zooms, img.header.copy()


def _check_pixdim(img, path: Path, ndim: int) -> None:
    pixdim = _raw_pixdim(img, path)[: min(ndim, 3)]
    if (pixdim == 0).any() or not np.isfinite(pixdim).all():
        raise DataError(path, f"voxel size (pixdim) {pixdim.tolist()} has zero or non-finite entries; "
                              "the header does not say the spacing")


# Relative difference allowed between a voxel size in pixdim and the length of the sform's column.
SFORM_PIXDIM_RTOL = 0.01


def _check_sform_scale(img, path: Path) -> None:
    """Refuse a header whose voxel sizes in `pixdim` and in the sform affine disagree (beyond 1 %).

    Spacing is read from pixdim and positions from the sform: when the two disagree (a factor of two after a
    hand-edited header or a faulty converter) volumes or positions are wrong, and which is right cannot be
    known. A sform whose columns all have unit length carries only an orientation (ACDC's files; the spacing
    is in pixdim alone) and is accepted, as is a file without a sform (its qform is built from pixdim). An
    axis of one voxel is not compared: its size is only a thickness.
    """
    header = img.header
    if "sform_code" not in header or int(header["sform_code"]) <= 0:
        return
    columns = np.linalg.norm(header.get_sform()[:3, :3], axis=0)
    if np.allclose(columns, 1.0, atol=1e-4):
        return
    zooms = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    shape = tuple(img.shape[:3]) + (2,) * (3 - len(img.shape[:3]))
    off = [a for a in range(3) if shape[a] > 1 and abs(columns[a] - zooms[a]) > SFORM_PIXDIM_RTOL * zooms[a]]
    if off:
        axes = ", ".join(f"{'ijk'[a]}: {zooms[a]:g} vs {columns[a]:g} mm" for a in off)
        raise DataError(path, f"voxel size in pixdim and in the sform affine differ ({axes}; more than "
                              f"{SFORM_PIXDIM_RTOL:.0%}): the header contradicts itself, fix pixdim or the sform")


def _check_finite(path: Path, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        n_bad = int((~np.isfinite(array)).sum())
        raise DataError(path, f"{n_bad} non-finite voxel(s) (NaN or Inf)")


def _to_volume(data_xyz: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...], path: Path,
               header=None) -> Volume:
    array = np.ascontiguousarray(data_xyz.transpose(2, 1, 0), dtype=np.float32)
    _check_finite(path, array)
    sx, sy, sz = (abs(z) for z in zooms[:3])
    if not all(np.isfinite(s) and s > 0 for s in (sx, sy, sz)):
        raise DataError(path, f"invalid voxel spacing {zooms[:3]} in the header")
    check_spacing((sz, sy, sx), path, n_slices=array.shape[0])
    return Volume(array=array, spacing=(sz, sy, sx), affine=affine, path=path, header=header)


def read_nifti(path: str | Path) -> Volume:
    """Read a 3D NIfTI image as a float32 `(Z, H, W)` Volume.

    A 4D file with a single frame `(X, Y, Z, 1)` is accepted; a 2D image or one with a real 4th/5th
    dimension is rejected (use `read_nifti_4d` for cine).

    Raises:
        DataError: missing, corrupt or truncated file; not 3D; non-finite voxels; invalid spacing.
    """
    path = Path(path)
    data, affine, zooms, header = _load(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D image (X, Y, Z), got a {data.ndim}D array of shape {tuple(data.shape)}")
    if min(data.shape) < 1:
        raise DataError(path, f"empty image of shape {tuple(data.shape)}")
    return _to_volume(data, affine, zooms, path, header)


def read_nifti_4d(path: str | Path) -> list[Volume]:
    """Read a 4D cine NIfTI `(X, Y, Z, T)` as T Volumes `(Z, H, W)` (frame t = list index t, 0-based).

    Raises:
        DataError: missing or corrupt file, or not a 4D image.
    """
    path = Path(path)
    data, affine, zooms, header = _load(path)
    if data.ndim != 4:
        raise DataError(path, f"expected a 4D cine image (X, Y, Z, T), got a {data.ndim}D array of shape {tuple(data.shape)}")
    return [_to_volume(data[..., t], affine, zooms, path, header) for t in range(data.shape[3])]


def read_nifti_frame(path: str | Path, frame: int) -> Volume:
    """Frame `frame` (1-based, as in ACDC's Info.cfg) of a 4D cine NIfTI, without decoding the others.

    Raises:
        DataError: missing/corrupt file, not 4D, or frame out of range.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        img = nib.load(str(path))
        shape = img.shape
        if len(shape) != 4:
            raise DataError(path, f"expected a 4D cine image (X, Y, Z, T), got shape {tuple(shape)}")
        if not 1 <= frame <= shape[3]:
            raise DataError(path, f"frame {frame} out of range 1..{shape[3]}")
        data = np.asanyarray(img.dataobj[..., frame - 1])
        _check_pixdim(img, path, 3)
        _check_sform_scale(img, path)
    except DataError:
        raise
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise DataError(path, f"corrupt or truncated NIfTI file ({type(exc).__name__}: {exc})") from exc
    zooms = tuple(float(z) for z in img.header.get_zooms())
    return _to_volume(data, np.asarray(img.affine, dtype=np.float64), zooms, path, img.header.copy())


def write_nifti(
    array_zyx: np.ndarray,
    affine: np.ndarray | None,
    path: str | Path,
    like: Volume | None = None,
) -> Path:
    """Write a `(Z, H, W)` array (or `(Z, H, W, T)` -> 4D) as NIfTI, atomically (temp file, then rename).

    The file holds `array_zyx.transpose(2, 1, 0)` so that `read_nifti` gives the array back.

    Header: when `like` carries a NIfTI header (it was read from a NIfTI file) and `affine` is None or equals
    `like.affine`, that header is kept: `pixdim` (the true spacing, even when the sform has unit scale, as
    in ACDC), qform and sform with their codes, units; only the data type and shape change, and intensity
    scaling is dropped. Otherwise the affine is `affine`, else `like.affine`, else the identity, written as
    qform and sform with code 1 (scanner), and `pixdim` is `like.spacing` when given (a DICOM-derived
    volume), else the affine's column norms. uint8/int16/int32/float32 arrays keep their dtype; other
    types are stored as float32. `.nii.gz` is gzip-compressed, `.nii` not. When `like` was turned to the
    canonical in-plane frame on reading (`cmrprior.io.orientation`) and `affine` is None or `like.affine`,
    the array (on `like`'s grid) is turned back first: the file has the input's own voxel order and header.

    Raises:
        ValueError: array not 3D/4D, or file name not ending in .nii/.nii.gz.
    """
    path = Path(path)
    if not is_nifti(path):
        raise ValueError(f"{path}: a NIfTI file name must end in .nii or .nii.gz")
    array = np.asarray(array_zyx)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a (Z, H, W) or (Z, H, W, T) array, got shape {array.shape}")
    array, affine, like = for_writing(array, affine, like)
    if array.dtype not in (np.uint8, np.int16, np.int32, np.float32):
        array = array.astype(np.float32)
    data = np.ascontiguousarray(array.transpose(2, 1, 0) if array.ndim == 3 else array.transpose(2, 1, 0, 3))
    img = _image_like(data, affine, like)
    raw = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=6, mtime=0)
    return atomic.write_bytes(path, raw)


def _image_like(data: np.ndarray, affine: np.ndarray | None, like: Volume | None) -> nib.Nifti1Image:
    """A Nifti1Image for `(X, Y, Z[, T])` data with the header rules of `write_nifti`."""
    src = like.header if like is not None else None
    same = affine is None or (like is not None and np.allclose(affine, like.affine, atol=1e-6))
    if isinstance(src, nib.Nifti1Header) and same:
        header = src.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(1.0, 0.0)
        img = nib.Nifti1Image(data, None, header=header)
        pixdim = img.header["pixdim"]  # Nifti1Image(header=...) sets the shape; keep every stored voxel size
        pixdim[1:] = np.where(src["pixdim"][1:] > 0, src["pixdim"][1:], pixdim[1:])
        img.header["pixdim"] = pixdim
        return img
    if affine is None:
        affine = like.affine if like is not None else np.eye(4)
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if like is not None and same:
        dz, dy, dx = (float(s) for s in like.spacing)
        zooms = (dx, dy, dz) + tuple(img.header.get_zooms()[3:])
        img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    return img
