"""Array primitives shared by several layers (NumPy only)."""

from __future__ import annotations

import numpy as np


def crop_window(array: np.ndarray, top: int, left: int, size: int, *, fill: float = 0,
                dtype: np.dtype | type | None = None) -> np.ndarray:
    """`array[..., top:top+size, left:left+size]` of a `(..., H, W)` array; pixels outside it are `fill`.

    The result has dtype `dtype` (default: the array's) and never shares memory with `array`.
    """
    h, w = array.shape[-2:]
    out = np.full(array.shape[:-2] + (size, size), fill, dtype=array.dtype if dtype is None else dtype)
    sr0, sr1 = max(top, 0), min(top + size, h)
    sc0, sc1 = max(left, 0), min(left + size, w)
    if sr1 > sr0 and sc1 > sc0:
        out[..., sr0 - top : sr1 - top, sc0 - left : sc1 - left] = array[..., sr0:sr1, sc0:sc1]
    return out
