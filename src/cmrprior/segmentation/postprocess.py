"""Post-processing of predicted label volumes: largest connected component per structure, holes filled.

Works on one patient-phase stack `(Z, H, W)` (slices in anatomical order). Components are 3D with full
(26-) connectivity, so a structure continuing across neighbouring slices stays one component even when
slices are thick. Holes are filled per slice: holes of the LV cavity become LV cavity (papillary muscles
belong to the cavity in ACDC), holes of the RV become RV, and any background enclosed by the whole heart
takes the label of the nearest heart pixel. The myocardium's hole (the LV cavity) is not touched.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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


def fill_holes_per_slice(binary: np.ndarray) -> np.ndarray:
    """2D hole filling on each slice of a bool `(Z, H, W)` array."""
    return np.stack([ndimage.binary_fill_holes(s) for s in binary]) if binary.size else binary.copy()


def postprocess_labels(labels: np.ndarray, labels_to_clean: tuple[int, ...] = (1, 2, 3)) -> np.ndarray:
    """Clean one predicted stack: uint8 `(Z, H, W)` (or `(H, W)`) ACDC labels -> new uint8 array, same shape."""
    squeeze = labels.ndim == 2
    lab = (labels[None] if squeeze else labels).astype(np.uint8, copy=True)
    if lab.ndim != 3:
        raise ValueError(f"labels must be (Z, H, W) or (H, W), got shape {labels.shape}")
    for value in labels_to_clean:
        region = lab == value
        if region.any():
            keep = largest_component(region)
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
    return lab[0] if squeeze else lab
