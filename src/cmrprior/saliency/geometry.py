"""Heart masks in the geometry of the classifier's input images.

The classifier sees the prepared slices, possibly restricted to the heart (`cmrprior.anatomy.heart.
apply_image_mode`: `mask` keeps the geometry, `crop` and `mask+crop` crop a square box around the dilated
heart and resize it back), then resized to `input_size` (`cmrprior.classify.data.resize_stack`). The
in-heart score needs the heart mask on exactly that grid, so the same crop box and resize are applied
to the (dilated) heart mask, which is then thresholded at 0.5. Full images (mode "full") are on their own
grid (the whole field of view, `PreparedCohort.ed_full`), so their heart masks are the prepared cohort's
`ed_full_mask`, dilated with each slice's own pixel size (`heart_masks_for` picks the right ones).
"""

from __future__ import annotations

import numpy as np

from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import ConfigError, DataError
from cmrprior.vocab import IMAGE_MODES


def heart_masks_for(prepared: PreparedCohort, rows: np.ndarray, image_mode: str
                    ) -> tuple[np.ndarray, np.ndarray, float | np.ndarray]:
    """(ED masks, ES masks, pixel size mm: scalar or per slice) of `rows` on the grid of `image_mode`'s
    images: the full grid for "full" (when the cohort has full images), else the prepared crop.

    Raises DataError when the cohort has no masks.
    """
    if prepared.ed_mask is None or prepared.es_mask is None:
        raise DataError(None, "prepared cohort has no heart masks")
    spacing = prepared.full_pixel_spacing_per_slice
    if image_mode == "full" and prepared.ed_full_mask is not None and prepared.es_full_mask is not None \
            and spacing is not None:
        return prepared.ed_full_mask[rows], prepared.es_full_mask[rows], spacing[rows]
    return prepared.ed_mask[rows], prepared.es_mask[rows], prepared.pixel_spacing_mm


def heart_on_input_grid(
    masks: np.ndarray,
    *,
    margin_mm: float,
    pixel_spacing_mm: float | np.ndarray,
    image_mode: str,
    image_margin_mm: float,
    input_size: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Dilated heart mask on the classifier's input grid.

    masks: uint8 (N, H, W) ACDC labels on the grid of the images (`heart_masks_for`); pixel_spacing_mm:
    its pixel size, one number or one per slice (N,) (full images).
    margin_mm: dilation of the heart mask for the score. image_mode: "full" | "mask" | "crop" |
    "mask+crop", the mode the classifier's images were made with; image_margin_mm: that mode's margin
    (it sets the crop box). groups: (N,) patient per slice (crop fallback for empty slices).
    Returns bool (N, input_size, input_size).
    """
    from cmrprior.anatomy.heart import crop_boxes, crop_resize, heart_mask
    from cmrprior.classify.data import resize_stack

    if image_mode not in IMAGE_MODES:
        raise ConfigError(f"unknown image mode {image_mode!r}; expected one of {list(IMAGE_MODES)}")
    spacing = np.broadcast_to(np.asarray(pixel_spacing_mm, np.float64), (masks.shape[0],))
    heart = np.zeros(masks.shape, np.float32)
    for s in np.unique(spacing):
        rows = spacing == s
        heart[rows] = heart_mask(masks[rows], margin_mm=margin_mm, pixel_spacing_mm=float(s))
    if image_mode in ("crop", "mask+crop"):
        box_source = heart_mask(masks, margin_mm=image_margin_mm, pixel_spacing_mm=float(spacing[0]))
        boxes = crop_boxes(box_source, groups)
        out = heart.copy()
        for i, box in enumerate(boxes):
            if box is not None:
                out[i] = crop_resize(heart[i], *box, out_shape=heart.shape[1:])
        heart = out
    resized = resize_stack(np.ascontiguousarray(heart, dtype=np.float32), input_size)
    return resized >= 0.5
