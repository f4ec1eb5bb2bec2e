"""Heart geometry of the phantom: LV cavity, LV myocardium, RV cavity as signed distance fields.

Canonical short-axis frame in mm, origin at the LV centre: u towards the patient's left, v anterior; angles
counter-clockwise from +u (see `physiology`). Every pixel carries its slice depth s (mm below the ED mitral
plane). Each ventricle is a truncated half-ellipsoid: at depth x = s - base_s the radius profile is scaled by
g(x) = sqrt(1 - (x / L)^2), so the LV tapers to the apex (a myocardial cap below the cavity) and the shorter
RV disappears before it. At ES the base descends (long-axis shortening) while the apex stays.

The RV cavity is a crescent on the epicardium: between the LV epicardial radius E(theta) g_epi and
E(theta) g_epi + H g_rv c(theta), with c = cos(pi/2 |theta - phi| / W)^p on an angular sector (W narrower
towards the apex), so that it wraps the septum and tapers to the insertion points; its free wall is a thin
myocardial band outside it. Signed distances are radial (r - R(theta)), negative inside.

Volumes are matched to the physiological targets on the actual pixel grid: a pixel is inside the LV cavity
iff r / (shape g) < R and inside the RV iff (r - E g_epi) / (g_rv c) < H, so both ED volumes (and the ES RV)
are set to one voxel by sorting these thresholds; the ES LV contraction is found by bisection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from cmrprior.data.phantom.physiology import N_ANGLES, Physiology

BIG = 1e6


class Grid:
    """Pixel centres relative to their slice's LV centre (`du`, `dv` mm), their slice index and depth.

    `du`, `dv` have any common shape: `(Z, h, w)` for a crop (then `zi` is `(Z, 1, 1)`) or 1-D for a subset
    of pixels. `depths` (Z,) are the slice depths in mm below the ED base.
    """

    def __init__(self, du: np.ndarray, dv: np.ndarray, zi: np.ndarray, depths: np.ndarray, voxel_mm3: float):
        self.du, self.dv, self.zi = du, dv, zi
        self.depths = np.asarray(depths, dtype=np.float64)
        self.s = self.depths[zi]
        self.voxel_mm3 = voxel_mm3
        self.r = np.hypot(du, dv)
        self.theta = np.arctan2(dv, du)
        t = (self.theta % (2 * np.pi)) * (N_ANGLES / (2 * np.pi))
        self._i0 = np.floor(t).astype(np.intp) % N_ANGLES
        self._i1 = (self._i0 + 1) % N_ANGLES
        self._f = t - np.floor(t)
        zi_full = np.broadcast_to(np.asarray(zi, dtype=np.intp), du.shape)
        self._flat0 = zi_full * N_ANGLES + self._i0  # indices into a raveled (Z, N_ANGLES) table
        self._flat1 = zi_full * N_ANGLES + self._i1

    @classmethod
    def crop(cls, du: np.ndarray, dv: np.ndarray, depths: np.ndarray, voxel_mm3: float) -> Grid:
        return cls(du, dv, np.arange(len(depths))[:, None, None], depths, voxel_mm3)

    def angular(self, profile: np.ndarray) -> np.ndarray:
        """Evaluate a per-angle profile `(N_ANGLES,)` at every pixel (linear, circular interpolation)."""
        a, b = np.take(profile, self._i0), np.take(profile, self._i1)
        return a + (b - a) * self._f

    def angular_per_slice(self, table: np.ndarray) -> np.ndarray:
        """Evaluate per-slice angular profiles `(Z, N_ANGLES)` at every pixel."""
        flat = np.ascontiguousarray(table).ravel()
        a, b = np.take(flat, self._flat0), np.take(flat, self._flat1)
        return a + (b - a) * self._f

    def subset(self, keep: np.ndarray) -> Grid:
        """The pixels where `keep` is True, as a 1-D grid (same voxel volume)."""
        zi = np.broadcast_to(self.zi, self.du.shape)[keep]
        return Grid(self.du[keep], self.dv[keep], zi, self.depths, self.voxel_mm3)


@dataclass(frozen=True, eq=False)
class PhaseGeometry:
    """One cardiac phase. Radii (N_ANGLES,) at the base in mm; lengths in mm below `base_s`."""

    base_s: float
    l_endo: float
    l_epi: float
    endo: np.ndarray
    epi: np.ndarray
    rv_height: float  # radial depth of the RV crescent at its centre, basal slice (mm)
    rv_direction: float
    rv_half_widths: tuple[float, float]
    rv_power: float
    rv_len: float
    rv_wall: float
    fat: np.ndarray  # pericardial fat thickness per angle (mm)
    papillary: tuple[tuple[float, float, float], ...]  # (angle rad, fraction of endo radius, radius mm)


def taper(x: np.ndarray, length: float) -> np.ndarray:
    """sqrt(1 - (x/L)^2) for 0 <= x < L, else 0: the half-ellipsoid radius factor."""
    x = np.asarray(x, dtype=np.float64)
    if length <= 0:
        return np.zeros_like(x)
    out = np.sqrt(np.clip(1 - (x / length) ** 2, 0.0, 1.0))
    return np.where((x >= 0) & (x < length), out, 0.0)


def lv_fields(geo: PhaseGeometry, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (mm) of the LV endocardium and epicardium; BIG where the structure is absent."""
    x = grid.s - geo.base_s
    g_endo, g_epi = taper(x, geo.l_endo), taper(x, geo.l_epi)
    d_endo = np.where(g_endo > 0, grid.r - grid.angular(geo.endo) * g_endo, BIG)
    d_epi = np.where(g_epi > 0, grid.r - grid.angular(geo.epi) * g_epi, BIG)
    return d_endo, d_epi


_ANG = np.linspace(0.0, 2.0 * np.pi, N_ANGLES, endpoint=False)


def _crescent_table(geo: PhaseGeometry, g_rv_z: np.ndarray, extra_deg: float, power: float) -> np.ndarray:
    """RV crescent profile c(theta) in [0, 1] per slice, `(Z, N_ANGLES)`; narrower towards the apex."""
    delta = (_ANG - geo.rv_direction + np.pi) % (2 * np.pi) - np.pi
    half = np.where(delta >= 0, geo.rv_half_widths[0], geo.rv_half_widths[1])
    width = half[None, :] * (0.6 + 0.4 * g_rv_z[:, None]) + math.radians(extra_deg)
    frac = np.clip(np.abs(delta)[None, :] / width, 0.0, 1.0)
    return np.cos(0.5 * np.pi * frac) ** power


def _rv_parts(geo: PhaseGeometry, grid: Grid, with_wall: bool = False):
    """(crescent c per pixel, wall profile per pixel or None, RV taper per pixel, epicardial radius per pixel)."""
    x = grid.depths - geo.base_s
    g_rv_z = taper(x, geo.rv_len)  # (Z,)
    c = grid.angular_per_slice(_crescent_table(geo, g_rv_z, 0.0, geo.rv_power))
    c_wall = grid.angular_per_slice(_crescent_table(geo, g_rv_z, 10.0, 0.3)) if with_wall else None
    epi_r = grid.angular(geo.epi) * taper(x, geo.l_epi)[grid.zi]
    return c, c_wall, g_rv_z[grid.zi], epi_r


def rv_fields(geo: PhaseGeometry, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (mm) of the RV cavity's outer boundary and of its free wall's outer boundary.

    Both are negative inside the LV too (the LV is painted over them); the RV cavity label is
    `d_rv < 0` outside the LV epicardium.
    """
    c, c_wall, g_rv, epi_r = _rv_parts(geo, grid, with_wall=True)
    present = g_rv > 0
    outer = grid.r - epi_r - geo.rv_height * g_rv * c
    d_rv = np.where(present, outer, BIG)
    d_wall = np.where(present, outer - geo.rv_wall * c_wall, BIG)
    return d_rv, d_wall


def rv_thresholds(geo: PhaseGeometry, grid: Grid) -> np.ndarray:
    """Per pixel outside the LV epicardium, the crescent height H above which it is RV cavity (inf: never)."""
    c, _, g_rv, epi_r = _rv_parts(geo, grid)
    _, d_epi = lv_fields(geo, grid)
    k = g_rv * c
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = (grid.r - epi_r) / k
    return np.where((k > 0) & (d_epi >= 0), thr, np.inf)


def heart_labels(geo: PhaseGeometry, grid: Grid) -> np.ndarray:
    """ACDC labels uint8 (grid shape): 1 RV cavity, 2 LV myocardium, 3 LV cavity (papillary muscles included)."""
    d_endo, d_epi = lv_fields(geo, grid)
    c, _, g_rv, epi_r = _rv_parts(geo, grid)
    d_rv = np.where(g_rv > 0, grid.r - epi_r - geo.rv_height * g_rv * c, BIG)
    lab = np.zeros(d_endo.shape, dtype=np.uint8)
    lab[(d_rv < 0) & (d_epi >= 0)] = 1
    lab[d_epi < 0] = 2
    lab[d_endo < 0] = 3
    return lab


def papillary_field(geo: PhaseGeometry, grid: Grid, d_endo: np.ndarray) -> np.ndarray:
    """Signed distance of the papillary muscles (inside the cavity, mid-ventricular slices only)."""
    x = grid.s - geo.base_s
    rel = x / geo.l_endo
    g = taper(x, geo.l_endo)
    out = np.full(d_endo.shape, BIG)
    for ang, frac, rad in geo.papillary:
        k = int(round(ang / (2 * np.pi) * N_ANGLES)) % N_ANGLES
        rc = frac * geo.endo[k] * g
        d = np.hypot(grid.du - rc * math.cos(ang), grid.dv - rc * math.sin(ang)) - rad
        out = np.minimum(out, np.where((rel > 0.2) & (rel < 0.75), d, BIG))
    return np.maximum(out, d_endo)


# ---------------------------------------------------------------- building and volume matching


def _threshold_for_volume(values: np.ndarray, target_ml: float, voxel_mm3: float) -> float:
    """A threshold t such that count(values < t) * voxel = target (to one voxel)."""
    v = np.sort(values[np.isfinite(values)].ravel())
    if v.size < 2:
        raise RuntimeError("phantom: the heart grid holds no candidate voxels")
    n = int(round(target_ml * 1000.0 / voxel_mm3))
    n = min(max(n, 1), v.size - 1)
    return float(0.5 * (v[n - 1] + v[n]))


def lv_lengths(phys: Physiology) -> tuple[float, float, float]:
    """(basal radius estimate, endocardial long axis, epicardial long axis) in mm for the LV EDV target.

    Half-ellipsoid: V = 2/3 pi R^2 L with L = length_ratio * R; the apical wall is 0.9 x the mean wall.
    """
    r0 = (3 * phys.lv_edv * 1000 / (2 * math.pi * phys.length_ratio)) ** (1 / 3)
    l_endo = phys.length_ratio * r0
    apex_wall = float(np.clip(np.mean(phys.wall_ed) * 0.9, 4.0, 12.0))
    return r0, l_endo, l_endo + apex_wall


def heart_extent_estimate(phys: Physiology) -> float:
    """Generous radius (mm) around the LV centre that holds the ED heart, before the grid exists."""
    r0, l_endo, _ = lv_lengths(phys)
    epi = r0 * 1.1 + float(phys.wall_ed.max())
    rv_len = phys.rv_length_ratio * l_endo
    # basal crescent area = int (E H c + H^2 c^2 / 2) dtheta, volume ~ area * 2/3 rv_len (both tapers ~ g^2)
    area = phys.rv_edv * 1000 / (rv_len * 2 / 3)
    ic, ic2 = sum(phys.rv_half_widths) * 0.75, sum(phys.rv_half_widths) * 0.6
    height = (-epi * ic + math.sqrt((epi * ic) ** 2 + 2 * ic2 * area)) / ic2
    return 1.1 * (epi + height) + phys.rv_wall_mm + 8.0


def build_ed(phys: Physiology, grid: Grid, *, rng: np.random.Generator) -> PhaseGeometry:
    """ED geometry whose LV and RV cavity volumes on `grid` equal the targets (to one voxel)."""
    _, l_endo, l_epi = lv_lengths(phys)
    g = taper(grid.s, l_endo)
    with np.errstate(divide="ignore"):
        q = np.where(g > 0, grid.r / (grid.angular(phys.shape) * np.where(g > 0, g, 1.0)), np.inf)
    radius = _threshold_for_volume(q, phys.lv_edv, grid.voxel_mm3)
    geo = PhaseGeometry(
        base_s=0.0,
        l_endo=l_endo,
        l_epi=l_epi,
        endo=radius * phys.shape,
        epi=radius * phys.shape + phys.wall_ed,
        rv_height=10.0,
        rv_direction=phys.rv_direction,
        rv_half_widths=phys.rv_half_widths,
        rv_power=phys.rv_power,
        rv_len=phys.rv_length_ratio * l_endo,
        rv_wall=phys.rv_wall_mm,
        fat=_fat_profile(rng, phys.rv_direction),
        papillary=(
            (math.radians(rng.uniform(-60, -20)), float(rng.uniform(0.55, 0.7)), float(rng.uniform(2.5, 4.0))),
            (math.radians(rng.uniform(-150, -110)), float(rng.uniform(0.55, 0.7)), float(rng.uniform(2.5, 4.0))),
        ),
    )
    height = _threshold_for_volume(rv_thresholds(geo, grid), phys.rv_edv, grid.voxel_mm3)
    return replace(geo, rv_height=height)


def _fat_profile(rng: np.random.Generator, rv_direction: float) -> np.ndarray:
    """Pericardial fat thickness per angle: a thin layer, thicker in the atrioventricular grooves."""
    ang = np.linspace(0, 2 * np.pi, N_ANGLES, endpoint=False)

    def bump(centre: float) -> np.ndarray:
        return np.exp(-0.5 * (((ang - centre + np.pi) % (2 * np.pi) - np.pi) / 0.35) ** 2)

    return (rng.uniform(0.0, 1.2) + rng.uniform(2.0, 6.0) * bump(rv_direction - 1.3)
            + rng.uniform(1.0, 4.0) * bump(rv_direction + 1.3))


def interpolate_phase(ed: PhaseGeometry, es: PhaseGeometry, f: float) -> PhaseGeometry:
    """Geometry a fraction `f` (0 = ED, 1 = ES) of the way from ED to ES: base position, long axes and radii
    linear in f, so the LV cavity shrinks monotonically with f; papillary muscles thicken likewise."""
    lerp = lambda a, b: a + f * (b - a)  # noqa: E731
    papillary = tuple((a, fr, lerp(r0, r1)) for (a, fr, r0), (_, _, r1) in zip(ed.papillary, es.papillary))
    return replace(ed, base_s=lerp(ed.base_s, es.base_s), l_endo=lerp(ed.l_endo, es.l_endo),
                   l_epi=lerp(ed.l_epi, es.l_epi), endo=lerp(ed.endo, es.endo), epi=lerp(ed.epi, es.epi),
                   rv_height=lerp(ed.rv_height, es.rv_height), rv_len=lerp(ed.rv_len, es.rv_len), papillary=papillary)


# Share of the LV stroke volume from the descent of the base (about 60 % in healthy hearts: Carlsson et al.,
# Am J Physiol Heart Circ Physiol 2007)
LONG_AXIS_SHARE = 0.6


def build_es(phys: Physiology, ed: PhaseGeometry, grid: Grid) -> PhaseGeometry:
    """ES geometry: base descent, radial contraction by bisection to the target LVEF, RV matched to RVEF.

    Wall thickening follows from conserving the myocardial annulus area per angle (scaled by the long-axis
    shortening); in akinetic sectors (kinesis 0) neither the endocardium moves nor the wall thickens.
    """
    lv_esv = phys.lv_edv * (1 - phys.lvef / 100)
    rv_esv = phys.rv_edv * (1 - phys.rvef / 100)
    kin = phys.kinesis
    kin_n = np.clip(kin, 0.0, 1.0)
    myo_area = ed.epi**2 - ed.endo**2
    # only pixels that can be cavity at ES matter for the bisections
    near = grid.subset(grid.r < 1.2 * float(ed.endo.max()))

    def geometry(c: float, ls: float) -> PhaseGeometry:
        d = ls * ed.l_endo
        endo = ed.endo * np.clip(1 - c * kin, 0.12, None)
        epi_cons = np.sqrt(endo**2 + myo_area / (1 - ls))
        wall = kin_n * (epi_cons - endo) + (1 - kin_n) * (ed.epi - ed.endo)
        return replace(ed, base_s=d, l_endo=ed.l_endo - d, l_epi=ed.l_epi - d, endo=endo, epi=endo + wall,
                       rv_len=ed.rv_len - d)

    def esv(geo: PhaseGeometry) -> float:
        return np.count_nonzero(lv_fields(geo, near)[0] < 0) * grid.voxel_mm3 / 1000.0

    ls = min(phys.long_shortening, 0.4 * min(phys.lvef, phys.rvef) / 100)
    # Base descent ejects at most LONG_AXIS_SHARE of the stroke volume, the rest is radial (as in real hearts,
    # failing ones too): were it all, the mid-ventricular cavity would not move and the LV volume curve would
    # be a step where a basal slice leaves the stack, its ED and ES frames undefined.
    edv = esv(geometry(0.0, 0.0))  # the ED cavity, counted as the ES ones are
    most_by_base = edv - LONG_AXIS_SHARE * (edv - lv_esv)
    if esv(geometry(0.0, ls)) < most_by_base:
        lo_ls, hi_ls = 0.0, ls
        for _ in range(20):
            mid = 0.5 * (lo_ls + hi_ls)
            lo_ls, hi_ls = (mid, hi_ls) if esv(geometry(0.0, mid)) >= most_by_base else (lo_ls, mid)
        ls = lo_ls
    lo, hi = 0.0, 0.88 / float(kin.max())
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if esv(geometry(mid, ls)) > lv_esv else (lo, mid)
    es = geometry(0.5 * (lo + hi), ls)
    es = replace(es, papillary=tuple((a, f, r * 1.25) for a, f, r in ed.papillary))
    height = _threshold_for_volume(rv_thresholds(es, grid), rv_esv, grid.voxel_mm3)
    return replace(es, rv_height=height)
