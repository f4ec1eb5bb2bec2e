"""Post-processing of predicted label volumes: one connected component per structure, holes filled.

Works on one patient-phase stack `(Z, H, W)` (slices in anatomical order). Components are 3D with full
(26-) connectivity, so a structure continuing across neighbouring slices stays one component even when
slices are thick. Which component is kept follows the anatomy: the largest LV-cavity component; the
myocardium component that touches that cavity most (in-plane dilation by `contact_px`); the RV component
that touches the LV cavity and myocardium most. Where no component touches, the largest is kept. (On
whole fields of view a false "RV" on chest-wall or liver can be larger than the true RV, which always
abuts the septum.) Holes are filled per slice: holes of the LV cavity become LV cavity (papillary muscles
belong to the cavity in ACDC), holes of the RV become RV, and any background enclosed by the whole heart
takes the label of the nearest heart pixel. The myocardium's hole (the LV cavity) is not touched.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cmrprior.errors import InputError

_STRUCT_3D = np.ones((3, 3, 3), dtype=bool)


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a bool array (any ndim <= 3); empty stays empty."""
    structure = np.ones((3,) * binary.ndim, dtype=bool)
    lab, n = ndimage.label(binary, structure=structure)
    if n <= 1:
        return binary.astype(bool, copy=True)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def component_touching(binary: np.ndarray, anchor: np.ndarray, contact_px: int = 2) -> np.ndarray:
    """The 26-connected component of `binary` (bool `(Z, H, W)`) with the most voxels within `contact_px`
    pixels in-plane of `anchor`; the largest component when none touches or `anchor` is empty."""
    structure = np.ones((3, 3, 3), dtype=bool)
    lab, n = ndimage.label(binary, structure=structure)
    if n <= 1:
        return binary.astype(bool, copy=True)
    if anchor.any():
        near = ndimage.binary_dilation(anchor, structure=np.ones((1, 3, 3), bool), iterations=contact_px)
        contact = np.bincount(lab[near].ravel(), minlength=n + 1)
        contact[0] = 0
        if contact.max() > 0:
            return lab == int(contact.argmax())
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def fill_holes_per_slice(binary: np.ndarray) -> np.ndarray:
    """2D hole filling on each slice of a bool `(Z, H, W)` array."""
    return np.stack([ndimage.binary_fill_holes(s) for s in binary]) if binary.size else binary.copy()


def postprocess_labels(labels: np.ndarray, labels_to_clean: tuple[int, ...] = (1, 2, 3)) -> np.ndarray:
    """Clean one predicted stack: uint8 `(Z, H, W)` (or `(H, W)`) ACDC labels -> new uint8 array, same shape.

    Raises InputError for any other dimensionality.
    """
    squeeze = labels.ndim == 2
    lab = (labels[None] if squeeze else labels).astype(np.uint8, copy=True)
    if lab.ndim != 3:
        raise InputError(f"labels must be (Z, H, W) or (H, W), got shape {labels.shape}")
    # Work on the labels' in-plane bounding box plus one background pixel (clipped at the image border):
    # components, holes and nearest labels all lie inside it, and a whole field of view costs far more.
    rows, cols = np.flatnonzero(lab.any(axis=(0, 2))), np.flatnonzero(lab.any(axis=(0, 1)))
    if rows.size:
        box = (slice(None), slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
        lab[box] = _clean(lab[box].copy(), labels_to_clean)
    return lab[0] if squeeze else lab


def _clean(lab: np.ndarray, labels_to_clean: tuple[int, ...]) -> np.ndarray:
    """`postprocess_labels` on a uint8 `(Z, H, W)` stack (modified in place and returned)."""
    anchors = {3: None, 2: (3,), 1: (3, 2)}  # LV first, then MYO next to it, then RV next to both
    for value in (3, 2, 1):
        region = lab == value
        if value not in labels_to_clean or not region.any():
            continue
        if anchors[value] is None:
            keep = largest_component(region)
        else:
            keep = component_touching(region, np.isin(lab, anchors[value]))
        lab[region & ~keep] = 0
    for value in (3, 1):  # LV cavity, RV: fill their own holes
        filled = fill_holes_per_slice(lab == value)
        lab[filled] = value
    heart = lab > 0
    holes = fill_holes_per_slice(heart) & ~heart
    if holes.any():
        for z in np.flatnonzero(holes.reshape(holes.shape[0], -1).any(axis=1)):
            _, (iy, ix) = ndimage.distance_transform_edt(~heart[z], return_indices=True)
            lab[z][holes[z]] = lab[z][iy[holes[z]], ix[holes[z]]]
    return lab
