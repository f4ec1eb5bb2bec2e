"""In-plane resampling and cropping of `(Z, H, W)` arrays (pure NumPy; shared by preparation,
segmentation and the anatomy crops).

Geometry: pixel-centre alignment (`align_corners=False`): output pixel i of a grid scaled by `scale`
(output pixels per input pixel) samples source coordinate `(i + 0.5) / scale - 0.5`. Images are
resampled with separable linear interpolation (edge-clamped) when enlarging and with the anti-aliased
triangle filter of PIL / `torch.nn.functional.interpolate(antialias=True)` when shrinking, in float32;
masks with nearest (`nearest-exact`), dtype kept. Slices are never resampled in z.
"""

from __future__ import annotations

import numpy as np

from cmrprior.utils.arrays import crop_window


def resample_inplane(array: np.ndarray, spacing_yx: tuple[float, float], *, target_mm: float,
                     is_mask: bool = False) -> np.ndarray:
    """Resample each slice of `(Z, H, W)` from `spacing_yx` mm to `target_mm` mm (pixel-centre aligned).

    Output shape `(Z, floor(H * sy / t), floor(W * sx / t))`; output pixel i samples source coordinate
    `(i + 0.5) * t / s - 0.5`. Images: separable linear interpolation (edge-clamped) when enlarging, and
    the anti-aliased triangle filter of PIL / `torch.nn.functional.interpolate(antialias=True)` when
    shrinking, float32. Masks: nearest (`nearest-exact`), dtype kept. (torch's `interpolate` is not used:
    it silently copies the input when the output size happens to equal the input size, e.g.
    1.51 mm -> 1.5 mm on a 64-pixel image.)
    """
    sy, sx = spacing_yx
    rows = np.arange(int(np.floor(array.shape[1] * sy / target_mm)))
    cols = np.arange(int(np.floor(array.shape[2] * sx / target_mm)))
    return _resample_window(array, (sy / target_mm, sx / target_mm), rows, cols, is_mask)


def resample_crop(array: np.ndarray, spacing_yx: tuple[float, float], *, target_mm: float,
                  centre: tuple[float, float], size: int, is_mask: bool = False) -> np.ndarray:
    """`crop_or_pad(resample_inplane(array, ...), centre, size=size)` (zero fill), computing only the window.

    `centre` (row, col) is in output-grid pixels. Returns `(Z, size, size)`.
    """
    sy, sx = spacing_yx
    n_rows = int(np.floor(array.shape[1] * sy / target_mm))
    n_cols = int(np.floor(array.shape[2] * sx / target_mm))
    r0, c0 = window_origin(centre, size)
    rows = np.arange(r0, r0 + size)
    cols = np.arange(c0, c0 + size)
    rows = np.where((rows >= 0) & (rows < n_rows), rows, -1)
    cols = np.where((cols >= 0) & (cols < n_cols), cols, -1)
    return _resample_window(array, (sy / target_mm, sx / target_mm), rows, cols, is_mask)


def _resample_window(array: np.ndarray, scale: tuple[float, float], rows: np.ndarray, cols: np.ndarray,
                     is_mask: bool) -> np.ndarray:
    """Output pixels (rows x cols) of the resampled grid; index -1 = outside the grid -> 0."""
    if is_mask:
        ri = _nearest_index(rows, array.shape[1], scale[0])
        ci = _nearest_index(cols, array.shape[2], scale[1])
        out = array[:, np.maximum(ri, 0)[:, None], np.maximum(ci, 0)[None, :]]
        out[:, ri < 0, :] = 0
        out[:, :, ci < 0] = 0
        return out
    x = np.asarray(array, dtype=np.float32)
    x = _apply_taps(x, *linear_taps(rows, x.shape[1], scale[0]), axis=1)
    return _apply_taps(x, *linear_taps(cols, x.shape[2], scale[1]), axis=2)


def linear_taps(out_index: np.ndarray, n_in: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """1D resampling weights for output pixels `out_index` as taps: source indices and weights `(n, K)`.

    Output pixel i sits at source coordinate `c = (i + 0.5) / scale - 0.5`. Enlarging (scale >= 1): linear
    interpolation at c clamped to [0, n_in - 1]. Shrinking: triangle filter of half-width `1 / scale`
    centred at c (anti-aliasing), normalised to sum 1. Index -1 in `out_index` gives all-zero weights.
    """
    out_index = np.asarray(out_index)
    centre = (out_index + 0.5) / scale - 0.5
    support = 1.0 if scale >= 1 else 1.0 / scale
    if scale >= 1:
        centre = np.clip(centre, 0, n_in - 1)
    k = int(np.ceil(2 * support)) + 1
    first = np.floor(centre - support).astype(np.int64) + 1
    idx = first[:, None] + np.arange(k)[None, :]
    dist = np.abs(idx - centre[:, None]) / support
    w = np.maximum(0.0, 1.0 - dist)
    w[(idx < 0) | (idx >= n_in)] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    w[out_index < 0] = 0.0
    return np.clip(idx, 0, n_in - 1), w.astype(np.float32)


def _apply_taps(x: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Sum over taps k of w[:, k] * x.take(idx[:, k], axis): a banded matrix product without BLAS threads."""
    shape = [1] * x.ndim
    shape[axis] = idx.shape[0]
    out = np.zeros(x.shape[:axis] + (idx.shape[0],) + x.shape[axis + 1:], dtype=np.float32)
    for k in range(idx.shape[1]):
        if np.any(w[:, k]):
            out += w[:, k].reshape(shape) * np.take(x, idx[:, k], axis=axis)
    return out


def _nearest_index(out_index: np.ndarray, n_in: int, scale: float) -> np.ndarray:
    """nearest-exact source index floor((i + 0.5) / scale) of output pixels; -1 stays -1."""
    src = np.minimum(np.floor((out_index + 0.5) / scale).astype(np.int64), n_in - 1)
    return np.where(out_index < 0, -1, src)


def window_origin(centre: tuple[float, float], size: int) -> tuple[int, int]:
    """Top-left pixel (row, col) of the `size x size` window centred on `centre` (row, col)."""
    return int(round(centre[0] - (size - 1) / 2)), int(round(centre[1] - (size - 1) / 2))


def crop_or_pad(array: np.ndarray, centre: tuple[float, float], *, size: int, fill: float = 0) -> np.ndarray:
    """`(Z, size, size)` window of a `(Z, H, W)` array centred on `centre` (row, col); outside -> `fill`."""
    return crop_window(array, *window_origin(centre, size), size, fill=fill)
