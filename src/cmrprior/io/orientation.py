"""One in-plane frame for every image: the one the shipped segmenter was trained in (ACDC's).

Scanners and converters store a short-axis stack in any of the 8 in-plane orders (rows or columns reversed,
rows and columns swapped), each with an affine that makes every viewer show the same picture. A 2D network
sees only the pixel grid: given the same scan in another order it sees a mirrored or rotated heart (right
ventricle on the other side) and measures other volumes. So every image is turned to one frame before anything
looks at its pixels (`to_canonical`, applied by the readers of `cmrprior.io.load`), and what is written for an
image goes back to the image's own voxel order and header (`for_writing`, applied by
`cmrprior.io.nifti.write_nifti` when it writes `like=` a reoriented volume).

The frame. All 400 image and mask files of ACDC's 100 training patients have the affine diag(-1, -1, 1)
(nibabel axis codes L, P, S): the first voxel axis (array W, image columns) runs toward the patient's left,
the second (array H, rows) toward posterior, i.e. DICOM's own pixel order for an axial-like plane. The
phantom's NIfTI writer uses diag(-dx, -dy, dz), and its oblique DICOM plane is closest to that frame as
stored, so ACDC and the phantom are read unchanged (their golden tables stay what they were).

The rule. Among the 8 flips and transposes of the two in-plane axes, the one whose world directions
(columns of the affine, normalised) come closest to (left, posterior): the largest cos(first axis, L) +
cos(second axis, P); ties, possible only for planes that contain neither direction obliquely (exact
coronal or sagittal), go to the second axis toward inferior, then the first axis toward inferior. The score
depends on the world geometry alone, so every storage order of one scan gives one array and one affine. On
an axial-like affine it is nibabel's reorientation to axis codes (L, P, slice axis unchanged) (tested).

The slice axis (array Z) is neither moved nor reversed: slices stay slices, in their stored order; its world
direction is the third column of `Volume.affine`. (Nothing downstream takes base and apex from the affine:
they are found from the LV itself, `cmrprior.anatomy.thickness.base_is_first`.)

A NIfTI file whose qform and sform codes are both 0 says nothing about its orientation (nibabel then makes
up an Analyze-style affine); it is used as stored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import product

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff

from cmrprior.io.records import Volume

# World directions in nibabel's RAS+ space: toward the patient's left, posterior, inferior.
_LEFT, _POSTERIOR, _INFERIOR = np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.array([0, 0, -1.0])
_IDENTITY = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
# The 8 in-plane transforms as nibabel orientation transforms on the (X, Y, Z) voxel axes of a NIfTI file:
# row i = (where input axis i goes, 1 or -1 for kept or reversed). The slice axis Z always stays.
_CANDIDATES: tuple[np.ndarray, ...] = tuple(
    np.array([[a, s], [1 - a, t], [2, 1]], dtype=float) for a, s, t in product((0, 1), (1, -1), (1, -1)))


@dataclass(frozen=True, eq=False)
class StoredFrame:
    """How a volume was stored before `to_canonical`: its affine and spacing `(z, y, x)` mm as read, and
    `ornt`, the nibabel orientation transform (3, 2) on the stored (X, Y, Z) axes that gave the canonical
    array (row i: (new position of axis i, 1 kept or -1 reversed))."""

    ornt: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]


def in_plane_ornt(affine: np.ndarray) -> np.ndarray:
    """The orientation transform (3, 2) that takes an image with voxel-to-world `affine` to the canonical
    in-plane frame (module docstring); `_IDENTITY` when it already is."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :2]
    norms = np.linalg.norm(cols, axis=0)
    if not (np.isfinite(cols).all() and (norms > 0).all()):
        return _IDENTITY.copy()
    unit = cols / norms

    def key(ornt: np.ndarray) -> tuple[float, float, float]:
        new = [None, None]
        for axis in (0, 1):
            new[int(ornt[axis, 0])] = ornt[axis, 1] * unit[:, axis]
        return (float(new[0] @ _LEFT + new[1] @ _POSTERIOR), float(new[1] @ _INFERIOR), float(new[0] @ _INFERIOR))

    return max(_CANDIDATES, key=key).copy()  # max keeps the first of equal keys: deterministic


def _is_identity(ornt: np.ndarray) -> bool:
    return bool(np.array_equal(ornt, _IDENTITY))


def _apply(array_zyx: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """`apply_orientation` on a `(Z, H, W[, T])` array (whose (X, Y, Z) view is `transpose(2, 1, 0)`)."""
    order = (2, 1, 0) + tuple(range(3, array_zyx.ndim))  # (Z, H, W, ...) <-> (X, Y, Z, ...): its own inverse
    return np.ascontiguousarray(apply_orientation(array_zyx.transpose(order), ornt).transpose(order))


def _inverse(ornt: np.ndarray) -> np.ndarray:
    inv = np.empty_like(ornt)
    for axis, (new, flip) in enumerate(ornt):
        inv[int(new)] = (axis, flip)
    return inv


def _reoriented(array_zyx: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float],
                ornt: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(array, affine, spacing) after `ornt`; every voxel keeps its world position."""
    shape_xyz = array_zyx.shape[:3][::-1]
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, shape_xyz)
    spacing_xyz = np.array(spacing[::-1], dtype=np.float64)
    new_xyz = np.empty(3)
    new_xyz[ornt[:, 0].astype(int)] = spacing_xyz
    return _apply(array_zyx, ornt), new_affine, (float(new_xyz[2]), float(new_xyz[1]), float(new_xyz[0]))


def _states_orientation(volume: Volume) -> bool:
    header = volume.header
    if header is None or "qform_code" not in header:
        return True  # DICOM: the affine comes from ImageOrientationPatient
    return int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0


def to_canonical(volume: Volume) -> Volume:
    """`volume` in the canonical in-plane frame (module docstring): array, affine and spacing transformed
    together (world positions unchanged), the stored frame kept in `Volume.stored_frame` for the writers.
    The same object when no change is needed (ACDC, the phantom, an already canonical volume)."""
    if volume.stored_frame is not None or not _states_orientation(volume):
        return volume
    ornt = in_plane_ornt(volume.affine)
    if _is_identity(ornt):
        return volume
    array, affine, spacing = _reoriented(volume.array, volume.affine, volume.spacing, ornt)
    stored = StoredFrame(ornt=ornt, affine=np.asarray(volume.affine), spacing=volume.spacing)
    return dataclasses.replace(volume, array=array, affine=affine, spacing=spacing, stored_frame=stored)


def to_stored(array_zyx: np.ndarray, volume: Volume) -> np.ndarray:
    """An array `(Z, H, W[, T])` on `volume`'s (canonical) grid, in the voxel order the volume was stored in."""
    if volume.stored_frame is None:
        return array_zyx
    if tuple(array_zyx.shape[:3]) != volume.shape:
        raise ValueError(f"array of shape {array_zyx.shape} is not on the grid {volume.shape} of {volume.path}")
    return _apply(np.asarray(array_zyx), _inverse(volume.stored_frame.ornt))


def as_stored(volume: Volume) -> Volume:
    """`volume` as it was read, before `to_canonical` (array, affine and spacing of the stored frame)."""
    frame = volume.stored_frame
    if frame is None:
        return volume
    return dataclasses.replace(volume, array=to_stored(volume.array, volume), affine=frame.affine,
                               spacing=frame.spacing, stored_frame=None)


def for_writing(array_zyx: np.ndarray, affine: np.ndarray | None, like: Volume | None
                ) -> tuple[np.ndarray, np.ndarray | None, Volume | None]:
    """What a writer stores for `array_zyx` on the grid of `like`: the array in `like`'s stored voxel order,
    with `like`'s stored geometry (so its header applies as read). Unchanged when `like` was not reoriented,
    or when the caller gives an `affine` of its own (the array is then on that affine's grid)."""
    if like is None or like.stored_frame is None:
        return array_zyx, affine, like
    if affine is not None and not np.allclose(affine, like.affine, atol=1e-6):
        return array_zyx, affine, like
    return to_stored(array_zyx, like), None, as_stored(like)
