"""Regional wall thickness and systolic thickening on AHA-style sectors (16 segments), and their spread.

Masks are ACDC-labelled `(Z, H, W)` stacks (1 RV, 2 LV myocardium, 3 LV cavity), spacing `(z, y, x)` mm; the
thickness profiles are `cmrprior.anatomy.thickness.slice_thicknesses`' (360 smoothed radial chords from each
slice's LV cavity centroid). The definitions are in `cmrprior.anatomy.measure`'s module docstring; this module
holds the arithmetic.

Why: prior myocardial infarction loses thickening in the infarcted segments while the remote myocardium still
thickens, where dilated cardiomyopathy thins and hypokinesis is global; the spread of thickening over segments
tells them apart where the patient's mean does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cmrprior.anatomy.thickness import SliceThickness, base_to_apex
from cmrprior.vocab import LV_LABEL, RV_LABEL

# sectors per level, base to apex (AHA 17-segment model without the apical cap: segments 1-6, 7-12, 13-16)
LEVEL_SECTORS: tuple[int, ...] = (6, 6, 4)
N_SEGMENTS = sum(LEVEL_SECTORS)
# a segment thickens "little" below this fraction of the patient's median segment thickening
HYPOKINETIC_FRACTION = 0.5
# and is akinetic (or dyskinetic) below this absolute thickening (%)
AKINETIC_PERCENT = 10.0


@dataclass(frozen=True)
class SegmentalWall:
    """Per-segment ED / ES thickness (mm) and thickening (%), AHA order (basal 1-6, mid 7-12, apical 13-16);
    NaN for a segment without a measured ray."""

    ed_mm: np.ndarray  # (16,)
    es_mm: np.ndarray  # (16,)
    thickening_pct: np.ndarray  # (16,)


def rv_anchor_angle(mask: np.ndarray, spacing_yx: tuple[float, float]) -> float | None:
    """Angle (radians, the profiles' convention: atan2(dy mm, dx mm), y = row) from the LV cavity centroid to the
    RV centroid, in-plane over the whole stack; None without an RV or an LV cavity."""
    rv, lv = mask == RV_LABEL, mask == LV_LABEL
    if not rv.any() or not lv.any():
        return None
    _, ry, rx = ndimage.center_of_mass(rv)
    _, ly, lx = ndimage.center_of_mass(lv)
    return math.atan2((ry - ly) * spacing_yx[0], (rx - lx) * spacing_yx[1])


def sector_means(profile_mm: np.ndarray, anchor: float, n_sectors: int) -> np.ndarray:
    """Mean thickness of the rays of each of `n_sectors` equal sectors, sector 0 starting at `anchor` and the
    sectors following in the profile's angle order; rays that miss the myocardium (0) are left out, NaN for a
    sector without a measured ray. `profile_mm`: one value per angle, angles evenly spaced from 0."""
    n = profile_mm.size
    theta = np.arange(n) * (2.0 * np.pi / n)
    sector = np.floor(((theta - anchor) % (2.0 * np.pi)) / (2.0 * np.pi / n_sectors)).astype(np.int64)
    sector = np.minimum(sector, n_sectors - 1)  # guards against a float landing on 2 pi
    out = np.full(n_sectors, np.nan)
    for k in range(n_sectors):
        vals = profile_mm[(sector == k) & (profile_mm > 0)]
        if vals.size:
            out[k] = float(vals.mean())
    return out


def segmental_wall(ed_slices: list[SliceThickness], es_slices: list[SliceThickness], anchor: float | None
                   ) -> SegmentalWall:
    """Segments from the slices measured at both ED and ES (paired by stack index), ordered base to apex by
    their ED cavity areas and split into thirds (`numpy.array_split`); a segment's thickness is the mean over its
    level's slices of the slice's sector mean; thickening is 100 (ES - ED) / ED of the segment's thicknesses.
    `anchor` None: sectors start at angle 0."""
    a = 0.0 if anchor is None else float(anchor)
    es_by_index = {s.index: s for s in es_slices}
    paired = [s for s in base_to_apex(ed_slices) if s.index in es_by_index]
    ed, es = np.full(N_SEGMENTS, np.nan), np.full(N_SEGMENTS, np.nan)
    start = 0
    for level, n_sec in zip(np.array_split(np.array(paired, dtype=object), len(LEVEL_SECTORS)), LEVEL_SECTORS):
        if len(level):
            ed[start:start + n_sec] = _nanmean_rows([sector_means(s.profile_mm, a, n_sec) for s in level])
            es[start:start + n_sec] = _nanmean_rows([sector_means(es_by_index[s.index].profile_mm, a, n_sec)
                                                     for s in level])
        start += n_sec
    with np.errstate(invalid="ignore", divide="ignore"):
        thick = np.where(ed > 0, 100.0 * (es - ed) / ed, np.nan)
    return SegmentalWall(ed, es, thick)


def _nanmean_rows(rows: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(rows)
    counts = np.sum(~np.isnan(stacked), axis=0)
    sums = np.nansum(stacked, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class SegmentalSpread:
    """Heterogeneity of the segments of one patient (NaN-free segments only; NaN without any)."""

    thickening_sd_pct: float
    thickening_min_pct: float
    thickening_max_pct: float
    n_hypokinetic: float
    n_akinetic: float
    ed_thickness_cv: float
    ed_thickness_min_ratio: float
    es_thickness_cv: float


def segmental_spread(wall: SegmentalWall) -> SegmentalSpread:
    """SD (ddof 0), min and max of segment thickening; segments thickening below `HYPOKINETIC_FRACTION` x the
    patient's median segment thickening (the median taken as 0 when negative) and below `AKINETIC_PERCENT`;
    coefficient of variation (SD / mean) of the ED and of the ES segment thicknesses; min / median of the ED
    segment thicknesses."""
    nan = float("nan")
    t = wall.thickening_pct[np.isfinite(wall.thickening_pct)]
    ed = wall.ed_mm[np.isfinite(wall.ed_mm)]
    es = wall.es_mm[np.isfinite(wall.es_mm)]
    if not t.size:
        return SegmentalSpread(nan, nan, nan, nan, nan, _cv(ed), _min_ratio(ed), _cv(es))
    threshold = HYPOKINETIC_FRACTION * max(float(np.median(t)), 0.0)
    return SegmentalSpread(
        thickening_sd_pct=float(t.std()), thickening_min_pct=float(t.min()), thickening_max_pct=float(t.max()),
        n_hypokinetic=float(np.count_nonzero(t < threshold)), n_akinetic=float(np.count_nonzero(t < AKINETIC_PERCENT)),
        ed_thickness_cv=_cv(ed), ed_thickness_min_ratio=_min_ratio(ed), es_thickness_cv=_cv(es))


def _cv(x: np.ndarray) -> float:
    return float(x.std() / x.mean()) if x.size and x.mean() > 0 else float("nan")


def _min_ratio(x: np.ndarray) -> float:
    return float(x.min() / np.median(x)) if x.size and np.median(x) > 0 else float("nan")
