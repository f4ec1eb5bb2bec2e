"""Heart masks in the geometry of the classifier's input images.

The classifier sees the prepared slices, possibly restricted to the heart (`cmrprior.anatomy.heart.
apply_image_mode`: `mask` keeps the geometry, `crop` and `mask+crop` crop a square box around the dilated
heart and resize it back), then resized to `input_size` (`cmrprior.classify.data.resize_stack`). The
in-heart score needs the heart mask on exactly that grid, so the same crop box and resize are applied
to the (dilated) heart mask, which is then thresholded at 0.5.
"""

from __future__ import annotations

import numpy as np

from cmrprior.errors import ConfigError
from cmrprior.vocab import IMAGE_MODES


def heart_on_input_grid(
    masks: np.ndarray,
    *,
    margin_mm: float,
    pixel_spacing_mm: float,
    image_mode: str,
    image_margin_mm: float,
    input_size: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Dilated heart mask on the classifier's input grid.

    masks: uint8 (N, H, W) ACDC labels on the prepared grid (`pixel_spacing_mm` per pixel).
    margin_mm: dilation of the heart mask for the score. image_mode: "full" | "mask" | "crop" |
    "mask+crop", the mode the classifier's images were made with; image_margin_mm: that mode's margin
    (it sets the crop box). groups: (N,) patient per slice (crop fallback for empty slices).
    Returns bool (N, input_size, input_size).
    """
    from cmrprior.anatomy.heart import crop_boxes, crop_resize, heart_mask
    from cmrprior.classify.data import resize_stack

    if image_mode not in IMAGE_MODES:
        raise ConfigError(f"unknown image mode {image_mode!r}; expected one of {list(IMAGE_MODES)}")
    heart = heart_mask(masks, margin_mm=margin_mm, pixel_spacing_mm=pixel_spacing_mm).astype(np.float32)
    if image_mode in ("crop", "mask+crop"):
        box_source = heart_mask(masks, margin_mm=image_margin_mm, pixel_spacing_mm=pixel_spacing_mm)
        boxes = crop_boxes(box_source, groups)
        out = heart.copy()
        for i, box in enumerate(boxes):
            if box is not None:
                out[i] = crop_resize(heart[i], *box, out_shape=heart.shape[1:])
        heart = out
    resized = resize_stack(np.ascontiguousarray(heart, dtype=np.float32), input_size)
    return resized >= 0.5
