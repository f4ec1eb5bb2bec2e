"""Intensity windowing of image arrays (pure NumPy; shared by preparation and segmentation)."""

from __future__ import annotations

import numpy as np


def normalise_percentile(array: np.ndarray, *, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """float32 copy of `array` with its [low, high] percentile window mapped to [0, 1], clipped.

    A constant volume becomes all zeros.
    """
    lo, hi = np.percentile(array, [low, high])
    return apply_window(array, float(lo), float(hi))


def apply_window(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """float32 `(array - lo) / (hi - lo)` clipped to [0, 1]; zeros when hi <= lo."""
    scale = float(hi - lo)
    if scale <= 0:
        return np.zeros(array.shape, dtype=np.float32)
    out = (array.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / scale)
    return np.clip(out, 0.0, 1.0, out=out)
