"""Configuration of the synthetic phantom cohort (acquisition ranges, noise, the optional spurious cue)."""

from __future__ import annotations

from dataclasses import dataclass

from cmrprior.errors import ConfigError


@dataclass(frozen=True)
class PhantomConfig:
    """Ranges drawn per patient (uniform). Lengths in mm, sizes in pixels, angles in degrees.

    image_size: in-plane matrix (X and Y drawn independently); enlarged when the heart would not fit.
    pixel_spacing_mm: in-plane (isotropic) pixel size. slice_spacing_mm: distance between slice centres,
    chosen to cover base to apex with `n_slices` slices (more slices when the clamp leaves the apex out).
    rotation_deg: random in-plane rotation around the ACDC-like orientation (anterior to the image left).
    position_jitter_mm: random offset of the heart from the image centre.
    noise: Rician noise sigma as a fraction of the blood signal. bias_strength: std of the log coil field
    polynomial coefficients. gain: stored intensity of blood (int16 NIfTI, fixed scale, not data-driven).
    cue_probability: with `spurious_cue`, chance that a patient carries its class marker.
    """

    image_size: tuple[int, int] = (160, 232)
    pixel_spacing_mm: tuple[float, float] = (1.3, 1.8)
    n_slices: tuple[int, int] = (8, 12)
    slice_spacing_mm: tuple[float, float] = (5.0, 10.0)
    rotation_deg: float = 20.0
    position_jitter_mm: float = 20.0
    noise: tuple[float, float] = (0.02, 0.05)
    bias_strength: float = 0.25
    gain: tuple[float, float] = (250.0, 650.0)
    cue_probability: float = 0.85
    max_attempts: int = 30

    def __post_init__(self) -> None:
        for name in ("image_size", "pixel_spacing_mm", "n_slices", "slice_spacing_mm", "noise", "gain"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi):
                raise ConfigError(f"PhantomConfig.{name} must be a (low, high) range with 0 <= low <= high, got {(lo, hi)}")
        if self.image_size[0] < 64:
            raise ConfigError(f"PhantomConfig.image_size must be at least 64 pixels, got {self.image_size}")
        if self.n_slices[0] < 3:
            raise ConfigError(f"PhantomConfig.n_slices must be at least 3, got {self.n_slices}")
        if self.pixel_spacing_mm[0] <= 0 or self.slice_spacing_mm[0] <= 0:
            raise ConfigError("PhantomConfig spacings must be positive")
        if not 0.0 <= self.cue_probability <= 1.0:
            raise ConfigError(f"PhantomConfig.cue_probability must be in [0, 1], got {self.cue_probability}")
