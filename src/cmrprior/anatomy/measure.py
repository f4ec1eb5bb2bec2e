"""Clinical anatomy measurements from ACDC-labelled short-axis masks (ED and ES).

Masks are uint8 `(Z, H, W)` with ACDC labels (0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity),
spacing `(z, y, x)` in mm where z is the distance between slice centres (from the image header's `pixdim`,
see `cmrprior.io.nifti`; ACDC's sform is unit-scale and is not used for spacing). Every volume is a voxel
count times the voxel volume (Simpson's method of discs, as used for the ACDC reference values), in ml.

Definitions
-----------
* EDV / ESV: cavity volume at end-diastole / end-systole (ml); SV = EDV - ESV; EF = 100 * SV / EDV (%),
  NaN when EDV is 0.
* Myocardial mass: ED myocardium volume x 1.05 g/ml.
* Wall thickness (mm): on every slice that holds an LV cavity and myocardium, 360 rays are cast from the
  cavity centroid (in mm, so anisotropic pixels are handled); along each ray the first contiguous run of
  myocardium is measured (nearest-neighbour sampling every 1/8 pixel, all rays of a slice at once). The
  thickness profile over angle is median-filtered over 9 degrees (circular) to remove single-ray pixel
  artefacts. This is the radial (centreline-free) chord method: accurate to about one pixel for walls
  roughly perpendicular to the ray, as in the short axis. Slices with myocardium but no cavity (the apical
  cap) are not measured. Per slice: max = the largest filtered ray, mean = the mean of the filtered rays
  that cross myocardium.
  - max_wall_thickness_mm: the largest per-slice max at ED (0.0 when no slice is measurable).
  - mean_wall_thickness_mm / mean_wall_thickness_es_mm: mean of the per-slice means at ED / ES.
  - max_wall_thickness_sd_mm: SD (population, ddof 0) over ED slices of the per-slice max.
  - wall_thickness_{basal,mid,apical}_mm: the ED measured slices ordered base to apex
    (`cmrprior.anatomy.thickness.base_to_apex`: stack order, reversed when the first third's cavity is
    smaller than the last third's) and split into thirds (`numpy.array_split`, the extra slices go basal
    first); each is the mean of its slices' means; NaN for an empty third (fewer than 3 slices).
  - systolic_thickening_percent: 100 * (ES mean - ED mean) / ED mean (%), NaN without measurable slices.
* Segments (AHA-style, `cmrprior.anatomy.sectors`): the slices measured at both ED and ES (paired by stack
  index, so ED and ES stacks must hold the same slices), ordered base to apex as above and split into thirds
  (`numpy.array_split`); basal and mid thirds in 6 sectors of 60 degrees, the apical third in 4 of 90 degrees:
  segments 1-6, 7-12, 13-16. Sectors are anchored on the direction from the LV cavity centroid to the RV
  centroid (in-plane, over the whole ED stack; the interventricular septum): sector 1 of each level starts at
  that direction and the others follow in the order of the array's angles (the readers' canonical in-plane
  frame, `cmrprior.io.orientation`: one numbering for every storage order of a scan; angle 0 without an RV). A segment's thickness is the mean over its level's slices of the
  mean of the slice's filtered rays that fall in the sector and cross myocardium (NaN without one).
  - seg01..seg16 _wall_ed_mm / _wall_es_mm: segment thickness at ED / ES; _thickening_percent:
    100 * (ES - ED) / ED of those (%).
  - sector_thickening_sd_percent / _min_percent / _max_percent: SD (ddof 0), min and max over the segments
    of their thickening (%).
  - sectors_hypokinetic_count: segments thickening less than half the patient's median segment thickening
    (the median taken as 0 when negative); sectors_akinetic_count: segments thickening less than 10 %.
  - sector_wall_ed_cv_ratio / sector_wall_es_cv_ratio: coefficient of variation (SD / mean) of the segment
    thicknesses at ED / ES; sector_wall_ed_min_ratio: thinnest segment / median segment at ED (unitless).
  Summaries use the segments that have a value; NaN when none has.
  Why: an infarct loses thickening (and thins) in the segments of its artery while the rest still thickens;
  dilated cardiomyopathy thins and stops thickening everywhere.
* rv_lv_edv_ratio / rv_lv_esv_ratio: RV EDV / LV EDV, RV ESV / LV ESV; myo_lv_volume_ratio_ed / _es:
  myocardium volume / LV cavity volume at ED / ES (unitless). NaN when the denominator is 0.
  rvef_minus_lvef_percent: RVEF - LVEF (percentage points; NaN when either is).
* rv_lv_area_mid_ed_ratio / rv_lv_area_mid_es_ratio: RV cavity area / LV cavity area summed over the middle
  third of the slices that hold LV cavity at ED (stack indices from the first third's end to the last third's
  start, `n // 3` slices left out at each end; all of them below 3 slices), at ED and at ES on the same stack
  indices (unitless; NaN without LV cavity there). Why: mid-ventricular slices are where a segmenter is surest,
  so the ratio keeps the RV's size relative to the LV where whole-stack volumes and RVEF carry the basal slices'
  errors (at ES the base descends and atrium or outflow tract is taken for ventricle).
* Definition measures, each how far a value lies past a threshold of the ACDC class definitions (0 inside;
  NaN or None where the value is): lvef_below_40_percent = max(0, 40 - LVEF), rvef_below_40_percent =
  max(0, 40 - RVEF) (percentage points); lv_edv_index_above_100_ml_m2 = max(0, LV EDV index - 100),
  rv_edv_index_above_110_ml_m2 = max(0, RV EDV index - 110), myo_mass_index_above_110_g_m2 = max(0, mass index
  - 110) (None without BSA); max_wall_thickness_above_15_mm = max(0, max wall thickness - 15). Why: a linear
  model over the raw values cannot follow a threshold; these let it weigh only what lies past one.
* BSA: Mosteller, sqrt(height_cm * weight_kg / 3600) m^2. Indexed values (ml/m^2, g/m^2) only when both
  height and weight are given, else None (`CSV_COLUMNS` maps each field to a column name with its unit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cmrprior.anatomy.sectors import N_SEGMENTS, rv_anchor_angle, segmental_spread, segmental_wall
from cmrprior.anatomy.thickness import (
    max_wall_thickness_mm,
    slice_thicknesses,
    slice_wall_thickness_profile,
    summarise_thickness,
    thickening_pct,
)
from cmrprior.errors import DataError, InputError
from cmrprior.io.checks import body_size_problem
from cmrprior.io.records import PatientVolumes
from cmrprior.vocab import LV_LABEL, MYO_LABEL, RV_LABEL

__all__ = ["AnatomyMeasures", "CSV_COLUMNS", "column_name", "ejection_fraction", "label_volume_ml", "max_wall_thickness_mm",
           "measure_cohort", "measure_patient", "mosteller_bsa", "slice_wall_thickness_profile"]

MYOCARDIAL_DENSITY_G_PER_ML = 1.05
_NAN = float("nan")


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
    # defaults keep older constructors working; measure_patient always fills them
    mean_wall_thickness_mm: float = _NAN
    max_wall_thickness_sd_mm: float = _NAN
    wall_thickness_basal_mm: float = _NAN
    wall_thickness_mid_mm: float = _NAN
    wall_thickness_apical_mm: float = _NAN
    mean_wall_thickness_es_mm: float = _NAN
    systolic_thickening_percent: float = _NAN
    rv_lv_edv_ratio: float = _NAN
    myo_lv_volume_ratio_ed: float = _NAN
    myo_lv_volume_ratio_es: float = _NAN
    rv_lv_esv_ratio: float = _NAN
    rvef_minus_lvef_percent: float = _NAN
    sector_thickening_sd_percent: float = _NAN
    sector_thickening_min_percent: float = _NAN
    sector_thickening_max_percent: float = _NAN
    sectors_hypokinetic_count: float = _NAN
    sectors_akinetic_count: float = _NAN
    sector_wall_ed_cv_ratio: float = _NAN
    sector_wall_ed_min_ratio: float = _NAN
    sector_wall_es_cv_ratio: float = _NAN
    # AHA segments 1-6 basal, 7-12 mid, 13-16 apical (module docstring)
    seg01_wall_ed_mm: float = _NAN
    seg01_wall_es_mm: float = _NAN
    seg01_thickening_percent: float = _NAN
    seg02_wall_ed_mm: float = _NAN
    seg02_wall_es_mm: float = _NAN
    seg02_thickening_percent: float = _NAN
    seg03_wall_ed_mm: float = _NAN
    seg03_wall_es_mm: float = _NAN
    seg03_thickening_percent: float = _NAN
    seg04_wall_ed_mm: float = _NAN
    seg04_wall_es_mm: float = _NAN
    seg04_thickening_percent: float = _NAN
    seg05_wall_ed_mm: float = _NAN
    seg05_wall_es_mm: float = _NAN
    seg05_thickening_percent: float = _NAN
    seg06_wall_ed_mm: float = _NAN
    seg06_wall_es_mm: float = _NAN
    seg06_thickening_percent: float = _NAN
    seg07_wall_ed_mm: float = _NAN
    seg07_wall_es_mm: float = _NAN
    seg07_thickening_percent: float = _NAN
    seg08_wall_ed_mm: float = _NAN
    seg08_wall_es_mm: float = _NAN
    seg08_thickening_percent: float = _NAN
    seg09_wall_ed_mm: float = _NAN
    seg09_wall_es_mm: float = _NAN
    seg09_thickening_percent: float = _NAN
    seg10_wall_ed_mm: float = _NAN
    seg10_wall_es_mm: float = _NAN
    seg10_thickening_percent: float = _NAN
    seg11_wall_ed_mm: float = _NAN
    seg11_wall_es_mm: float = _NAN
    seg11_thickening_percent: float = _NAN
    seg12_wall_ed_mm: float = _NAN
    seg12_wall_es_mm: float = _NAN
    seg12_thickening_percent: float = _NAN
    seg13_wall_ed_mm: float = _NAN
    seg13_wall_es_mm: float = _NAN
    seg13_thickening_percent: float = _NAN
    seg14_wall_ed_mm: float = _NAN
    seg14_wall_es_mm: float = _NAN
    seg14_thickening_percent: float = _NAN
    seg15_wall_ed_mm: float = _NAN
    seg15_wall_es_mm: float = _NAN
    seg15_thickening_percent: float = _NAN
    seg16_wall_ed_mm: float = _NAN
    seg16_wall_es_mm: float = _NAN
    seg16_thickening_percent: float = _NAN
    rv_lv_area_mid_ed_ratio: float = _NAN
    rv_lv_area_mid_es_ratio: float = _NAN
    lvef_below_40_percent: float = _NAN
    rvef_below_40_percent: float = _NAN
    lv_edv_index_above_100_ml_m2: float | None = None
    rv_edv_index_above_110_ml_m2: float | None = None
    myo_mass_index_above_110_g_m2: float | None = None
    max_wall_thickness_above_15_mm: float = _NAN

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


_PERCENT_FIELDS = ("lvef", "rvef")


def column_name(field: str) -> str:
    """CSV column of a measure: its field name, with the unit added where the name lacks one (`lvef` ->
    `lvef_percent`); every CSV that cmrprior writes names measures this way."""
    return field + "_percent" if field in _PERCENT_FIELDS else field


# CSV column of every AnatomyMeasures field
CSV_COLUMNS: dict[str, str] = {name: column_name(name) for name in AnatomyMeasures.__dataclass_fields__}


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    """Body surface area (m^2) by Mosteller's formula.

    Raises:
        InputError: non-positive inputs, or a height or weight outside the plausible ranges of
            `cmrprior.io.checks` (a height in metres would give a BSA ten times too small).
    """
    if not (height_cm > 0 and weight_kg > 0):
        raise InputError(f"height and weight must be positive, got {height_cm} cm, {weight_kg} kg")
    problem = body_size_problem(height_cm, weight_kg)
    if problem is not None:
        raise InputError(problem)
    return math.sqrt(height_cm * weight_kg / 3600.0)


def ejection_fraction(edv: float, esv: float) -> float:
    """100 * (EDV - ESV) / EDV in percent; NaN when EDV is 0."""
    return float("nan") if edv <= 0 else 100.0 * (edv - esv) / edv


def label_volume_ml(mask: np.ndarray, label: int, spacing_zyx: tuple[float, float, float]) -> float:
    """Volume (ml) of one label in a `(Z, H, W)` mask: voxel count x voxel volume (mm^3) / 1000."""
    voxel_mm3 = float(np.prod(np.asarray(spacing_zyx, dtype=np.float64)))
    return int(np.count_nonzero(mask == label)) * voxel_mm3 / 1000.0


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
    """Measure LV/RV volumes, EF, myocardial mass, wall thickness and ratios from ED/ES masks (module doc).

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
    myo_ed = label_volume_ml(ed_mask, MYO_LABEL, spacing)
    myo_es = label_volume_ml(es_mask, MYO_LABEL, spacing)
    mass = myo_ed * MYOCARDIAL_DENSITY_G_PER_ML
    ed_slices, es_slices = slice_thicknesses(ed_mask, spacing), slice_thicknesses(es_mask, spacing)
    wall_ed, wall_es = summarise_thickness(ed_slices), summarise_thickness(es_slices)
    bsa = None
    if height_cm is not None and weight_kg is not None and height_cm > 0 and weight_kg > 0:
        bsa = mosteller_bsa(float(height_cm), float(weight_kg))

    def idx(v: float) -> float | None:
        return None if bsa is None else v / bsa

    def index_past(v: float, limit: float) -> float | None:
        indexed = idx(v)
        return None if indexed is None else _past(indexed - limit)

    lvef, rvef = ejection_fraction(lv_edv, lv_esv), ejection_fraction(rv_edv, rv_esv)
    return AnatomyMeasures(
        lv_edv_ml=lv_edv,
        lv_esv_ml=lv_esv,
        lv_sv_ml=lv_edv - lv_esv,
        lvef=lvef,
        rv_edv_ml=rv_edv,
        rv_esv_ml=rv_esv,
        rv_sv_ml=rv_edv - rv_esv,
        rvef=rvef,
        myo_mass_g=mass,
        max_wall_thickness_mm=wall_ed.max_mm,
        bsa_m2=bsa,
        lv_edv_ml_m2=idx(lv_edv),
        lv_esv_ml_m2=idx(lv_esv),
        rv_edv_ml_m2=idx(rv_edv),
        rv_esv_ml_m2=idx(rv_esv),
        myo_mass_g_m2=idx(mass),
        mean_wall_thickness_mm=wall_ed.mean_mm,
        max_wall_thickness_sd_mm=wall_ed.max_sd_mm,
        wall_thickness_basal_mm=wall_ed.basal_mm,
        wall_thickness_mid_mm=wall_ed.mid_mm,
        wall_thickness_apical_mm=wall_ed.apical_mm,
        mean_wall_thickness_es_mm=wall_es.mean_mm,
        systolic_thickening_percent=thickening_pct(wall_ed.mean_mm, wall_es.mean_mm),
        rv_lv_edv_ratio=_ratio(rv_edv, lv_edv),
        myo_lv_volume_ratio_ed=_ratio(myo_ed, lv_edv),
        myo_lv_volume_ratio_es=_ratio(myo_es, lv_esv),
        rv_lv_esv_ratio=_ratio(rv_esv, lv_esv),
        rvef_minus_lvef_percent=rvef - lvef,
        **_segment_fields(ed_slices, es_slices, rv_anchor_angle(ed_mask, spacing[1:])),
        **_mid_ratios(ed_mask, es_mask),
        lvef_below_40_percent=_past(40.0 - lvef),
        rvef_below_40_percent=_past(40.0 - rvef),
        lv_edv_index_above_100_ml_m2=index_past(lv_edv, 100.0),
        rv_edv_index_above_110_ml_m2=index_past(rv_edv, 110.0),
        myo_mass_index_above_110_g_m2=index_past(mass, 110.0),
        max_wall_thickness_above_15_mm=_past(wall_ed.max_mm - 15.0),
    )


def _past(excess: float) -> float:
    """How far a value lies past its threshold: `excess` when positive, 0 inside, NaN for NaN."""
    return excess if math.isnan(excess) else max(0.0, excess)


def _mid_ratios(ed_mask: np.ndarray, es_mask: np.ndarray) -> dict[str, float]:
    lv_slices = np.flatnonzero((ed_mask == LV_LABEL).any(axis=(1, 2)))
    if lv_slices.size == 0:
        return {}
    first, last = int(lv_slices.min()), int(lv_slices.max())
    cut = (last - first + 1) // 3
    mid = np.arange(first + cut, last - cut + 1)

    def ratio(mask: np.ndarray) -> float:
        part = mask[mid[mid < mask.shape[0]]]
        return _ratio(float(np.count_nonzero(part == RV_LABEL)), float(np.count_nonzero(part == LV_LABEL)))

    return {"rv_lv_area_mid_ed_ratio": ratio(ed_mask), "rv_lv_area_mid_es_ratio": ratio(es_mask)}


def _segment_fields(ed_slices, es_slices, anchor: float | None) -> dict[str, float]:
    wall = segmental_wall(ed_slices, es_slices, anchor)
    spread = segmental_spread(wall)
    out = {
        "sector_thickening_sd_percent": spread.thickening_sd_pct,
        "sector_thickening_min_percent": spread.thickening_min_pct,
        "sector_thickening_max_percent": spread.thickening_max_pct,
        "sectors_hypokinetic_count": spread.n_hypokinetic,
        "sectors_akinetic_count": spread.n_akinetic,
        "sector_wall_ed_cv_ratio": spread.ed_thickness_cv,
        "sector_wall_ed_min_ratio": spread.ed_thickness_min_ratio,
        "sector_wall_es_cv_ratio": spread.es_thickness_cv,
    }
    for k in range(N_SEGMENTS):
        out[f"seg{k + 1:02d}_wall_ed_mm"] = float(wall.ed_mm[k])
        out[f"seg{k + 1:02d}_wall_es_mm"] = float(wall.es_mm[k])
        out[f"seg{k + 1:02d}_thickening_percent"] = float(wall.thickening_pct[k])
    return out


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else _NAN


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
