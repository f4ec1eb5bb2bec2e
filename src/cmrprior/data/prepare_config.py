"""`PrepareConfig`, how a cohort is prepared (`cmrprior.data.prepare`), in a module that imports neither SciPy
nor the image readers: the command line reads its defaults when it builds its parser."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrprior.errors import ConfigError


@dataclass(frozen=True)
class PrepareConfig:
    """How to prepare a cohort (all fields enter the cache hash).

    pixel_spacing_mm: in-plane output spacing in mm.
    size: output height = width in pixels.
    low_percentile, high_percentile: intensity window per volume, mapped to [0, 1] and clipped.
    heart_slices_only: keep only slices with a heart label at ED and at ES (when masks exist).
    full_fov_mm: side of the full images' square field of view around the image centre; None = the whole
        acquired field of view (its longer side), padded to a square.
    """

    pixel_spacing_mm: float = 1.5
    size: int = 128
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    heart_slices_only: bool = True
    full_fov_mm: float | None = None

    def __post_init__(self) -> None:
        if self.full_fov_mm is not None and not (self.full_fov_mm > 0 and np.isfinite(self.full_fov_mm)):
            raise ConfigError(f"full_fov_mm must be a positive number or None, got {self.full_fov_mm}")
        if not (self.pixel_spacing_mm > 0 and np.isfinite(self.pixel_spacing_mm)):
            raise ConfigError(f"pixel_spacing_mm must be a positive number, got {self.pixel_spacing_mm}")
        if int(self.size) != self.size or self.size < 8:
            raise ConfigError(f"size must be an integer >= 8, got {self.size}")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ConfigError(
                f"need 0 <= low_percentile < high_percentile <= 100, got {self.low_percentile}, {self.high_percentile}"
            )
