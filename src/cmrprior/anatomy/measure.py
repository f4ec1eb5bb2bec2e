"""Clinical anatomy measurements from ACDC-labelled short-axis masks (ED and ES).

Masks are uint8 `(Z, H, W)` with ACDC labels (0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity),
spacing `(z, y, x)` in mm where z is the distance between slice centres. Every volume is a voxel count
times the voxel volume (Simpson's method of discs, as used for the ACDC reference values), in ml.

Definitions
-----------
* EDV / ESV: cavity volume at end-diastole / end-systole (ml); SV = EDV - ESV; EF = 100 * SV / EDV (%),
  NaN when EDV is 0.
* Myocardial mass: ED myocardium volume x 1.05 g/ml.
* Maximal wall thickness (mm, ED): on every slice that holds an LV cavity, 360 rays are cast from the
  cavity centroid (in mm, so anisotropic pixels are handled); along each ray the first contiguous run of
  myocardium is measured (nearest-neighbour sampling every 1/8 pixel). The thickness profile over angle is
  median-filtered over 9 degrees (circular) to remove single-ray pixel artefacts; the result is the maximum
  over angles and slices. This is the radial (centreline-free) chord method: accurate to about one pixel
  for walls roughly perpendicular to the ray, as in the short axis. Slices with myocardium but no cavity
  (the apical cap) are not measured.
* BSA: Mosteller, sqrt(height_cm * weight_kg / 3600) m^2. Indexed values (ml/m^2, g/m^2) only when both
  height and weight are given, else None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from cmrprior.errors import DataError, InputError
from cmrprior.io.records import PatientVolumes

RV_LABEL, MYO_LABEL, LV_LABEL = 1, 2, 3
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
_N_ANGLES = 360
_MEDIAN_DEGREES = 9
_SAMPLES_PER_PIXEL = 8


@dataclass(frozen=True)
class AnatomyMeasures:
    """Per-patient measurements. Volumes in ml, EF in percent, mass in g, thickness in mm, BSA in m^2."""

    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lvef: float
    rv_edv_ml: float
    rv_esv_ml: float
    rv_sv_ml: float
    rvef: float
    myo_mass_g: float
    max_wall_thickness_mm: float
    bsa_m2: float | None = None
    lv_edv_ml_m2: float | None = None
    lv_esv_ml_m2: float | None = None
    rv_edv_ml_m2: float | None = None
    rv_esv_ml_m2: float | None = None
    myo_mass_g_m2: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    """Body surface area (m^2) by Mosteller's formula; raises InputError for non-positive inputs."""
    if not (height_cm > 0 and weight_kg > 0):
        raise InputError(f"height and weight must be positive, got {height_cm} cm, {weight_kg} kg")
    return math.sqrt(height_cm * weight_kg / 3600.0)


def ejection_fraction(edv: float, esv: float) -> float:
    """100 * (EDV - ESV) / EDV in percent; NaN when EDV is 0."""
    return float("nan") if edv <= 0 else 100.0 * (edv - esv) / edv


def label_volume_ml(mask: np.ndarray, label: int, spacing_zyx: tuple[float, float, float]) -> float:
    """Volume (ml) of one label in a `(Z, H, W)` mask: voxel count x voxel volume (mm^3) / 1000."""
    voxel_mm3 = float(np.prod(np.asarray(spacing_zyx, dtype=np.float64)))
    return int(np.count_nonzero(mask == label)) * voxel_mm3 / 1000.0


def slice_wall_thickness_profile(
    mask2d: np.ndarray, pixel_spacing_yx: tuple[float, float], *, n_angles: int = _N_ANGLES
) -> np.ndarray | None:
    """Radial myocardial thickness (mm) per angle on one slice `(H, W)`, unfiltered; None without cavity.

    Rays start at the LV cavity centroid; the thickness along a ray is the length of its first contiguous
    run of myocardium (label 2).
    """
    cavity = mask2d == LV_LABEL
    myo = mask2d == MYO_LABEL
    if not cavity.any() or not myo.any():
        return None
    sy, sx = float(pixel_spacing_yx[0]), float(pixel_spacing_yx[1])
    cy, cx = ndimage.center_of_mass(cavity)
    h, w = mask2d.shape
    step = min(sy, sx) / _SAMPLES_PER_PIXEL
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


def max_wall_thickness_mm(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Maximal ED myocardial thickness (mm) over slices of a `(Z, H, W)` mask; 0.0 when none measurable.

    See the module docstring for the method (radial chords, 9-degree circular median, max).
    """
    best = 0.0
    for z in range(mask.shape[0]):
        profile = slice_wall_thickness_profile(mask[z], (spacing_zyx[1], spacing_zyx[2]))
        if profile is None:
            continue
        size = max(1, int(round(_MEDIAN_DEGREES * profile.size / 360.0)))
        smooth = ndimage.median_filter(profile, size=size, mode="wrap")
        best = max(best, float(smooth.max()))
    return best


def _check_masks(ed_mask: np.ndarray, es_mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> None:
    for name, m in (("ED mask", ed_mask), ("ES mask", es_mask)):
        if m.ndim != 3:
            raise DataError(None, f"{name} must be 3D (Z, H, W), got shape {m.shape}")
        if m.size and (m.min() < 0 or m.max() > 3):
            raise DataError(None, f"{name} has labels outside 0..3 (min {m.min()}, max {m.max()})")
    if ed_mask.shape[1:] != es_mask.shape[1:]:
        raise DataError(None, f"ED mask {ed_mask.shape} and ES mask {es_mask.shape} differ in-plane")
    if len(spacing_zyx) != 3 or not all(float(s) > 0 for s in spacing_zyx):
        raise DataError(None, f"spacing must be 3 positive values (z, y, x) in mm, got {spacing_zyx}")


def measure_patient(
    ed_mask: np.ndarray,
    es_mask: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    height_cm: float | None = None,
    weight_kg: float | None = None,
) -> AnatomyMeasures:
    """Measure LV/RV volumes, EF, myocardial mass and maximal wall thickness from ED/ES masks.

    Args:
        ed_mask, es_mask: integer `(Z, H, W)` ACDC-labelled masks (Z may differ, in-plane size must match).
        spacing_zyx: voxel size (z, y, x) in mm, z = distance between slice centres.
        height_cm, weight_kg: for BSA (Mosteller) and indexed values; both needed, else those are None.
    Raises:
        DataError: wrong dimensionality, labels outside 0..3, mismatched in-plane shapes, bad spacing.
    """
    ed_mask = np.asarray(ed_mask)
    es_mask = np.asarray(es_mask)
    _check_masks(ed_mask, es_mask, spacing_zyx)
    spacing = tuple(float(s) for s in spacing_zyx)
    lv_edv = label_volume_ml(ed_mask, LV_LABEL, spacing)
    lv_esv = label_volume_ml(es_mask, LV_LABEL, spacing)
    rv_edv = label_volume_ml(ed_mask, RV_LABEL, spacing)
    rv_esv = label_volume_ml(es_mask, RV_LABEL, spacing)
    mass = label_volume_ml(ed_mask, MYO_LABEL, spacing) * MYOCARDIAL_DENSITY_G_PER_ML
    thickness = max_wall_thickness_mm(ed_mask, spacing)
    bsa = None
    if height_cm is not None and weight_kg is not None and height_cm > 0 and weight_kg > 0:
        bsa = mosteller_bsa(float(height_cm), float(weight_kg))

    def idx(v: float) -> float | None:
        return None if bsa is None else v / bsa

    return AnatomyMeasures(
        lv_edv_ml=lv_edv,
        lv_esv_ml=lv_esv,
        lv_sv_ml=lv_edv - lv_esv,
        lvef=ejection_fraction(lv_edv, lv_esv),
        rv_edv_ml=rv_edv,
        rv_esv_ml=rv_esv,
        rv_sv_ml=rv_edv - rv_esv,
        rvef=ejection_fraction(rv_edv, rv_esv),
        myo_mass_g=mass,
        max_wall_thickness_mm=thickness,
        bsa_m2=bsa,
        lv_edv_ml_m2=idx(lv_edv),
        lv_esv_ml_m2=idx(lv_esv),
        rv_edv_ml_m2=idx(rv_edv),
        rv_esv_ml_m2=idx(rv_esv),
        myo_mass_g_m2=idx(mass),
    )


def measure_cohort(patients: Iterable[PatientVolumes]) -> list[dict[str, Any]]:
    """One row per patient: patient_id, label, then every `AnatomyMeasures` field.

    Args:
        patients: loaded patients with ED and ES masks (ground truth or predicted), e.g. from
            `cmrprior.io.load.load_patient`. Spacing is taken from the ED mask volume.
    Raises:
        DataError: a patient without masks (names the patient), or bad masks (names the mask file).
    """
    rows: list[dict[str, Any]] = []
    for pv in patients:
        rec = pv.record
        if pv.ed_mask is None or pv.es_mask is None:
            raise DataError(rec.source or rec.ed_image, f"patient {rec.patient_id} has no ED/ES masks to measure")
        try:
            m = measure_patient(
                np.rint(pv.ed_mask.array).astype(np.int16),
                np.rint(pv.es_mask.array).astype(np.int16),
                pv.ed_mask.spacing,
                height_cm=rec.height_cm,
                weight_kg=rec.weight_kg,
            )
        except DataError as exc:
            raise DataError(pv.ed_mask.path or rec.ed_mask, f"patient {rec.patient_id}: {exc.problem}") from exc
        rows.append({"patient_id": rec.patient_id, "label": rec.label, **m.as_dict()})
    return rows
