"""Myocardial wall thickness on short-axis label slices: radial chords from the LV cavity centroid.

Masks are ACDC-labelled `(Z, H, W)` stacks (2 LV myocardium, 3 LV cavity), spacing `(z, y, x)` mm. The method
and the summaries built on it are defined in `cmrprior.anatomy.measure`'s module docstring; this module holds
the arithmetic.

Slices are in stack order. The base-to-apex direction is taken from the stack when its first third of
measured slices has at least the mean LV cavity area of its last third (ACDC and the phantom store the base
first); otherwise the stack is read apex first. The cavity narrows towards the apex, so this also orders a
stack written apex first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cmrprior.vocab import LV_LABEL, MYO_LABEL

N_ANGLES = 360
MEDIAN_DEGREES = 9
SAMPLES_PER_PIXEL = 8


def slice_wall_thickness_profile(
    mask2d: np.ndarray, pixel_spacing_yx: tuple[float, float], *, n_angles: int = N_ANGLES
) -> np.ndarray | None:
    """Radial myocardial thickness (mm) per angle on one slice `(H, W)`, unfiltered; None without cavity.

    Rays start at the LV cavity centroid; the thickness along a ray is the length of its first contiguous
    run of myocardium (label 2). All rays are sampled at once, `(n_angles, n_radii)` nearest-neighbour.
    """
    cavity = mask2d == LV_LABEL
    myo = mask2d == MYO_LABEL
    if not cavity.any() or not myo.any():
        return None
    sy, sx = float(pixel_spacing_yx[0]), float(pixel_spacing_yx[1])
    cy, cx = ndimage.center_of_mass(cavity)
    h, w = mask2d.shape
    step = min(sy, sx) / SAMPLES_PER_PIXEL
    my, mx = np.nonzero(myo)
    r_max = float(np.sqrt(((my - cy) * sy) ** 2 + ((mx - cx) * sx) ** 2).max()) + 2.0 * max(sy, sx)
    radii = np.arange(0.0, r_max, step)
    theta = np.linspace(0.0, 2.0 * np.pi, n_angles, endpoint=False)
    yy = cy + np.outer(np.sin(theta), radii) / sy
    xx = cx + np.outer(np.cos(theta), radii) / sx
    iy = np.rint(yy).astype(np.int64)
    ix = np.rint(xx).astype(np.int64)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    on_myo = np.zeros(iy.shape, dtype=bool)
    on_myo[inside] = myo[iy[inside], ix[inside]]
    hit = on_myo.any(axis=1)
    first = np.argmax(on_myo, axis=1)
    after_first = np.arange(radii.size)[None, :] >= first[:, None]
    left = after_first & ~on_myo
    # first sample after the run (or the end of the ray when the run reaches the border)
    end = np.where(left.any(axis=1), np.argmax(left, axis=1), radii.size)
    return np.where(hit, (end - first) * step, 0.0)


def smooth_profile(profile: np.ndarray) -> np.ndarray:
    """Circular median over `MEDIAN_DEGREES` of a per-angle thickness profile (removes one-ray artefacts)."""
    size = max(1, int(round(MEDIAN_DEGREES * profile.size / 360.0)))
    return ndimage.median_filter(profile, size=size, mode="wrap")


@dataclass(frozen=True, eq=False)
class SliceThickness:
    """One measured slice: its index in the stack, its smoothed profile (mm per angle), its cavity area."""

    index: int
    profile_mm: np.ndarray
    cavity_px: int

    @property
    def max_mm(self) -> float:
        return float(self.profile_mm.max())

    @property
    def mean_mm(self) -> float:
        """Mean over the rays that cross myocardium (rays through a gap in the wall are not zeros)."""
        hit = self.profile_mm[self.profile_mm > 0]
        return float(hit.mean()) if hit.size else 0.0


def slice_thicknesses(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> list[SliceThickness]:
    """Every slice of a `(Z, H, W)` stack with LV cavity and myocardium, in stack order."""
    out = []
    for z in range(mask.shape[0]):
        profile = slice_wall_thickness_profile(mask[z], (spacing_zyx[1], spacing_zyx[2]))
        if profile is not None:
            out.append(SliceThickness(z, smooth_profile(profile), int(np.count_nonzero(mask[z] == LV_LABEL))))
    return out


def max_wall_thickness_mm(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Maximal myocardial thickness (mm) over slices of a `(Z, H, W)` mask; 0.0 when none measurable.

    See `cmrprior.anatomy.measure` for the method (radial chords, 9-degree circular median, max).
    """
    return max((s.max_mm for s in slice_thicknesses(mask, spacing_zyx)), default=0.0)


@dataclass(frozen=True)
class ThicknessSummary:
    """Summaries of one phase's measured slices (mm); NaN where no slice (or no slice of a third) exists."""

    max_mm: float
    mean_mm: float
    max_sd_mm: float
    basal_mm: float
    mid_mm: float
    apical_mm: float
    n_slices: int


def base_is_first(cavity_areas) -> bool:
    """Whether a stack is stored base first, from the LV cavity areas of its slices that hold one, in stack
    order: the first third's mean area is at least the last third's (module docstring)."""
    areas = [float(a) for a in cavity_areas]
    if len(areas) < 2:
        return True
    k = max(1, len(areas) // 3)
    return float(np.mean(areas[:k])) >= float(np.mean(areas[-k:]))


def base_to_apex(slices: list[SliceThickness]) -> list[SliceThickness]:
    """The measured slices ordered base first (module docstring)."""
    return list(slices) if base_is_first([s.cavity_px for s in slices]) else list(reversed(slices))


def summarise_thickness(slices: list[SliceThickness]) -> ThicknessSummary:
    """Max, mean, SD over slices of the per-slice max, and mean per basal / mid / apical third."""
    nan = float("nan")
    if not slices:
        return ThicknessSummary(0.0, nan, nan, nan, nan, nan, 0)
    maxima = np.array([s.max_mm for s in slices])
    means = np.array([s.mean_mm for s in slices])
    ordered = base_to_apex(slices)
    thirds = [float(np.mean([s.mean_mm for s in part])) if len(part) else nan
              for part in np.array_split(np.array(ordered, dtype=object), 3)]
    return ThicknessSummary(
        max_mm=float(maxima.max()), mean_mm=float(means.mean()), max_sd_mm=float(maxima.std()),
        basal_mm=thirds[0], mid_mm=thirds[1], apical_mm=thirds[2], n_slices=len(slices),
    )


def thickening_pct(ed_mean_mm: float, es_mean_mm: float) -> float:
    """Systolic wall thickening 100 * (ES - ED) / ED in percent; NaN when ED is not positive or either is NaN."""
    if not (ed_mean_mm > 0) or math.isnan(es_mean_mm):
        return float("nan")
    return 100.0 * (es_mean_mm - ed_mean_mm) / ed_mean_mm
