"""The anatomic prior: heart masks and segmented-image modes (the study's "segmented images").

The study (Nakashima et al., section 3.1) unites the LV blood pool, LV myocardium and RV into one cardiac
mask and trains on images restricted to it. Here:

* `heart_mask`: union of ACDC labels 1 (RV), 2 (MYO), 3 (LV), dilated per slice by a disk of `margin_mm`.
* `apply_image_mode`: `full` (unchanged copy), `mask` (zero outside the dilated heart mask), `crop` (crop
  to the dilated heart's bounding box, made square, resized back to the input size) and `mask+crop`
  (mask, then crop with the same box).

Slices whose heart mask is empty (apex or base missed by the segmenter, or slices outside the heart)
-------------------------------------------------------------------------------------------------
* `mask`: the slice becomes all zero. Nothing of the heart is known on that slice, and keeping the full
  image would leak exactly the surrounding tissue the prior is meant to remove. The QC stage
  (`cmrprior.segmentation.qc`) flags empty-heart slices so a person can see how often this happens.
* `crop`: the box falls back to the union of the boxes of the non-empty slices of the same group
  (`groups`, e.g. `PreparedCohort.patient_index`, so a patient's apical slice is cropped like its other
  slices); if the group has no non-empty slice (or `groups` is None), the slice is not cropped (full image).
* `mask+crop`: the crop box falls back as for `crop`; the masked slice is all zero, so the result is zero.

No torch here: NumPy and SciPy only. Inputs are never modified in place.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from cmrprior.utils.arrays import crop_window
from cmrprior.errors import ConfigError, InputError

ImageMode = Literal["full", "mask", "crop", "mask+crop"]
IMAGE_MODES: tuple[str, ...] = ("full", "mask", "crop", "mask+crop")
HEART_LABELS: tuple[int, ...] = (1, 2, 3)


def disk(radius_px: float) -> np.ndarray:
    """A boolean disk structuring element `(2r+1, 2r+1)`, r = floor(radius_px); `[[True]]` for r < 1."""
    r = int(np.floor(radius_px + 1e-9))
    if r < 1:
        return np.ones((1, 1), dtype=bool)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= radius_px**2 + 1e-9


def _check_stack(name: str, arr: np.ndarray) -> None:
    if arr.ndim != 3:
        raise InputError(f"{name} must be (N, H, W), got shape {arr.shape}")


def heart_mask(masks: np.ndarray, margin_mm: float = 0.0, pixel_spacing_mm: float = 1.5) -> np.ndarray:
    """Union of RV, myocardium and LV cavity, dilated in-plane by `margin_mm`.

    Args:
        masks: uint8 `(N, H, W)` ACDC labels (0 background, 1 RV, 2 MYO, 3 LV).
        margin_mm: dilation radius in millimetres (>= 0); a disk of radius `margin_mm / pixel_spacing_mm`
            pixels, applied to each slice separately (no dilation across slices).
        pixel_spacing_mm: in-plane pixel size in millimetres (> 0), same in rows and columns.

    Returns:
        bool `(N, H, W)`.

    Raises:
        InputError: wrong dimensionality.
        ConfigError: negative margin or non-positive spacing.
    """
    masks = np.asarray(masks)
    _check_stack("masks", masks)
    if margin_mm < 0:
        raise ConfigError(f"margin_mm must be >= 0, got {margin_mm}")
    if pixel_spacing_mm <= 0:
        raise ConfigError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm}")
    heart = np.isin(masks, HEART_LABELS)
    structure = disk(margin_mm / pixel_spacing_mm)
    if structure.size == 1:
        return heart
    out = np.zeros_like(heart)
    for i in range(heart.shape[0]):
        if heart[i].any():
            out[i] = ndimage.binary_dilation(heart[i], structure=structure)
    return out


def square_box(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int, int]:
    """The square box `(top, left, side)` centred on the bounding box of the given pixel indices.

    `side` = the larger of the box's height and width (pixels, inclusive extent); the box may extend past
    the image edges (the crop pads with zeros there).
    """
    r0, r1 = int(rows.min()), int(rows.max())
    c0, c1 = int(cols.min()), int(cols.max())
    side = max(r1 - r0 + 1, c1 - c0 + 1)
    top = r0 - (side - (r1 - r0 + 1)) // 2
    left = c0 - (side - (c1 - c0 + 1)) // 2
    return top, left, side


def crop_resize(image: np.ndarray, top: int, left: int, side: int, out_shape: tuple[int, int]) -> np.ndarray:
    """Crop the square `[top:top+side, left:left+side]` (zeros outside `image`) and resize it bilinearly.

    Resizing follows the half-pixel convention of `torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)` with edge replication inside the crop, so a crop of the whole image is the
    identity. `image` float `(H, W)`; returns float32 `out_shape`.
    """
    patch = crop_window(image, top, left, side, dtype=np.float32)
    oh, ow = out_shape
    if (oh, ow) == (side, side):
        return patch
    sy, sx = side / oh, side / ow
    # output pixel centre o -> input coordinate (o + 0.5) * s - 0.5, clamped to the patch (edge replication)
    yy = np.clip((np.arange(oh) + 0.5) * sy - 0.5, 0, side - 1)
    xx = np.clip((np.arange(ow) + 0.5) * sx - 0.5, 0, side - 1)
    coords = np.stack(np.meshgrid(yy, xx, indexing="ij"))
    return ndimage.map_coordinates(patch, coords, order=1, mode="nearest").astype(np.float32)


def crop_boxes(heart: np.ndarray, groups: np.ndarray | None = None) -> list[tuple[int, int, int] | None]:
    """Per slice the square crop box of `heart` (bool `(N, H, W)`), with the empty-slice fallback.

    An empty slice gets the box of the union of its group's non-empty slices, or None (no crop) when there
    is none. `groups`: int `(N,)` group id per slice (e.g. patient index) or None.
    Raises InputError when `groups` does not have one entry per slice.
    """
    n = heart.shape[0]
    boxes: list[tuple[int, int, int] | None] = [None] * n
    nonempty = heart.reshape(n, -1).any(axis=1)
    for i in np.flatnonzero(nonempty):
        rows, cols = np.nonzero(heart[i])
        boxes[i] = square_box(rows, cols)
    if groups is None:
        return boxes
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise InputError(f"groups must have shape ({n},), got {groups.shape}")
    for g in np.unique(groups[~nonempty]):
        members = groups == g
        donors = members & nonempty
        if not donors.any():
            continue
        rows, cols = np.nonzero(heart[donors].any(axis=0))
        box = square_box(rows, cols)
        for i in np.flatnonzero(members & ~nonempty):
            boxes[i] = box
    return boxes


def apply_image_mode(
    images: np.ndarray,
    masks: np.ndarray,
    mode: ImageMode | str,
    margin_mm: float = 5.0,
    pixel_spacing_mm: float = 1.5,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Restrict images to the heart: the study's segmented images.

    Args:
        images: float32 `(N, H, W)`.
        masks: uint8 `(N, H, W)` ACDC labels, ground truth or predicted.
        mode: "full" | "mask" | "crop" | "mask+crop" (see the module docstring, also for empty masks).
        margin_mm: heart-mask dilation in mm; the crop box is the box of the dilated mask, so it includes
            the same margin.
        pixel_spacing_mm: in-plane pixel size in mm.
        groups: optional int `(N,)` group (patient) per slice, used for the crop fallback of empty slices.

    Returns:
        float32 `(N, H, W)`, a new array (same size as `images`).

    Raises:
        ConfigError: unknown mode.
        InputError: wrong dimensionality, or `images`/`masks` shapes differ.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if mode not in IMAGE_MODES:
        raise ConfigError(f"unknown image mode {mode!r}; expected one of {IMAGE_MODES}")
    _check_stack("images", images)
    if images.shape != masks.shape:
        raise InputError(f"images {images.shape} and masks {masks.shape} differ in shape")
    out = images.astype(np.float32, copy=True)
    if mode == "full":
        return out
    heart = heart_mask(masks, margin_mm=margin_mm, pixel_spacing_mm=pixel_spacing_mm)
    if mode in ("mask", "mask+crop"):
        out[~heart] = 0.0
    if mode in ("crop", "mask+crop"):
        boxes = crop_boxes(heart, groups)
        for i, box in enumerate(boxes):
            if box is not None:
                out[i] = crop_resize(out[i], *box, out_shape=out.shape[1:])
    return out
