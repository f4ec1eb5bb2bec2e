"""`cmrprior measure`: per-patient cardiac measures of a cohort into `OUT/measures.csv`, with QC flags.

Masks (`masks`):
- "segmenter" (default, the user's path): the records lose their mask paths before anything is read; each
  patient is segmented by a model that never saw its images when the set has one
  (`cmrprior.segmentation.folds.choose_segmenters`: `model` None = the shipped set, a set folder, or one
  weights file whose training patients are unknown), on its raw ED/ES frames in their own geometry
  (`cmrprior.segmentation.volumes.locate_cohort`, which also corrects the pair's basal slices:
  `cmrprior.segmentation.basal`). Cine-only records get their ED/ES frames first
  (`resolve_cohort_phases`).
- "given": the masks the cohort names (ACDC `_gt` files or the manifest's `ed_mask`/`es_mask`); every row
  then says `masks_source = given`.

The measures are `cmrprior.anatomy.measure.measure_patient`'s (definitions there), spacing from the image
header (`pixdim`). CSV (one row per patient, cohort order), columns:

    patient_id, label, masks_source (segmenter | given), segmenter (model name: full, fold_k, or the weights'
    stem), segmenter_weights (file name), out_of_sample (True | False | empty: unknown or given masks),
    spacing_z_mm, spacing_y_mm, spacing_x_mm, height_cm, weight_kg,
    every measure under `CSV_COLUMNS` (unit in the name; indexed values empty without height and weight),
    bsa_note (why indexed values are empty), empty_structures ("ED:RV ES:LV": a structure absent from a whole
    phase), missing_slices ("ED:4,5": slices inside the LV cavity's span without LV cavity or myocardium),
    mask_flags (`cmrprior.segmentation.qc.mask_flags` flags set, per phase), implausible (measures outside
    `PlausibleRanges`), qc_ok (True when the four QC columns are empty).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.anatomy.measure import CSV_COLUMNS, LV_LABEL, MYO_LABEL, AnatomyMeasures, measure_patient
from cmrprior.errors import ConfigError, DataError
from cmrprior.io.cohort import open_cohort
from cmrprior.io.load import load_patient
from cmrprior.io.records import Cohort, PatientRecord
from cmrprior.segmentation import qc
from cmrprior.segmentation.folds import SHIPPED_SET, SegmenterChoice, choose_segmenters, fingerprint_cohort
from cmrprior.segmentation.inference import SegInference
from cmrprior.segmentation.measure_rows import keep_row, kept_row, row_keys
from cmrprior.segmentation.phases import resolve_cohort_phases
from cmrprior.segmentation.volumes import locate_cohort
from cmrprior.utils.progress import track
from cmrprior.utils.runfolder_checks import check_out_dir

log = logging.getLogger(__name__)

MASK_CHOICES: tuple[str, ...] = ("segmenter", "given")
MEASURES_CSV = "measures.csv"
RESUME_CHUNK = 8  # patients segmented and measured between two saves of their rows
QC_COLUMNS: tuple[str, ...] = ("empty_structures", "missing_slices", "mask_flags", "implausible")
COLUMNS: tuple[str, ...] = (
    "patient_id", "label", "masks_source", "segmenter", "segmenter_weights", "out_of_sample",
    "spacing_z_mm", "spacing_y_mm", "spacing_x_mm", "height_cm", "weight_kg", *CSV_COLUMNS.values(),
    "bsa_note", *QC_COLUMNS, "qc_ok",
)


@dataclass(frozen=True)
class PlausibleRanges:
    """Adult ranges (inclusive) outside which a measure is flagged `implausible` (a segmentation failure is
    the likelier cause than physiology). Keys are `AnatomyMeasures` fields."""

    lvef: tuple[float, float] = (5.0, 90.0)
    rvef: tuple[float, float] = (5.0, 90.0)
    lv_edv_ml: tuple[float, float] = (20.0, 600.0)
    rv_edv_ml: tuple[float, float] = (20.0, 600.0)
    myo_mass_g: tuple[float, float] = (20.0, 500.0)
    max_wall_thickness_mm: tuple[float, float] = (2.0, 40.0)


@dataclass(frozen=True, eq=False)
class PatientMasks:
    """One patient's ED/ES label stacks `(Z, H, W)`, spacing `(z, y, x)` mm, and where the masks came from."""

    record: PatientRecord
    ed: np.ndarray
    es: np.ndarray
    spacing_zyx: tuple[float, float, float]
    source: str
    choice: SegmenterChoice | None = None


def measure_data(data: str | Path, out: str | Path, *, masks: str = "segmenter", model: str | Path | None = None,
                 ranges: PlausibleRanges = PlausibleRanges()) -> Path:
    """Measure every patient of the cohort at `data` (ACDC folder or manifest CSV); write `out/measures.csv`
    atomically (module docstring). Returns the CSV's path. Resumable: each finished row is kept in `out` and
    reused by a rerun with the same inputs (`cmrprior.segmentation.measure_rows`).

    Raises:
        ConfigError: unknown `masks`, a `model` with given masks, `out` inside `data` or not writable.
        DataError: unreadable input or weights; given masks missing for a patient (named).
        WeightsUnavailableError: segmenter masks, no model given and none shipped.
    """
    check_mask_args(masks, model)
    data, out = Path(data), Path(out)
    check_out_dir(out, [data])
    cohort = open_cohort(data)
    if masks == "given":
        _check_given(cohort)
    keys = row_keys(out, cohort, masks=masks, model=model, model_default=SHIPPED_SET, ranges=ranges)
    rows = {r.patient_id: row for r in cohort.patients if (row := kept_row(out, r, keys[r.patient_id])) is not None}
    todo = [r for r in cohort.patients if r.patient_id not in rows]
    if rows:
        log.info("measure: %d of %d patients' rows reused from an earlier run in %s", len(rows), len(cohort.patients),
                 out)
    for start in range(0, len(todo), RESUME_CHUNK):  # a killed run loses at most one chunk's work
        part = dataclasses.replace(cohort, patients=tuple(todo[start:start + RESUME_CHUNK]))
        for p in given_masks(part) if masks == "given" else segmenter_masks(part, model):
            rows[p.record.patient_id] = measure_row(p, ranges)
            keep_row(out, p.record, keys[p.record.patient_id], rows[p.record.patient_id])
    ordered = [rows[r.patient_id] for r in cohort.patients]
    path = out / MEASURES_CSV
    qc.write_csv(ordered, path, COLUMNS)
    flagged = sum(not r["qc_ok"] for r in ordered)
    log.info("measure: %d patients, %d with QC flags -> %s", len(ordered), flagged, path)
    return path


def check_mask_args(masks: str, model: str | Path | None) -> None:
    """ConfigError for an unknown `masks` or a `model` with given masks."""
    if masks not in MASK_CHOICES:
        raise ConfigError(f"--masks must be one of {', '.join(MASK_CHOICES)}, got {masks!r}")
    if masks == "given" and model is not None:
        raise ConfigError("--model chooses the segmenter; it has no use with --masks given")


def _check_given(cohort: Cohort) -> None:
    lacking = [r.patient_id for r in cohort.patients if not r.has_masks]
    if lacking:
        raise DataError(cohort.source, f"--masks given but patients {lacking[:5]} ({len(lacking)} in all) have no "
                                       "ED/ES mask files; use --masks segmenter")


def given_masks(cohort: Cohort) -> list[PatientMasks]:
    """The cohort's own mask files, checked against their images (`load_patient`)."""
    _check_given(cohort)
    out = []
    for rec in track(cohort.patients, "measure (given masks)", len(cohort.patients), log, unit="patients"):
        pv = load_patient(rec)
        out.append(PatientMasks(rec, pv.ed_mask.array, pv.es_mask.array, _spacing(pv.ed_mask.spacing), "given"))
    return out


def segmenter_masks(cohort: Cohort, model: str | Path | None = None, inference: SegInference | None = None
                    ) -> list[PatientMasks]:
    """Masks from the segmenter, out-of-sample where the set allows (module docstring), run as `inference`
    says (default: eager PyTorch, one pass); expert masks unread."""
    blind = dataclasses.replace(cohort, patients=tuple(dataclasses.replace(r, ed_mask=None, es_mask=None)
                                                       for r in cohort.patients))
    blind, _ = resolve_cohort_phases(blind, model_path=model, inference=inference)
    choices = choose_segmenters(fingerprint_cohort(blind), model)
    for note in sorted({c.set_note for c in choices.values() if c.set_note}):
        log.warning("measure: %s", note)  # the CSV's rows name each model; the set being mixed is said here
    locations = locate_cohort(blind, models={pid: c.model.weights for pid, c in choices.items()}, inference=inference)
    out = []
    for rec in blind.patients:
        loc = locations[rec.patient_id]
        spacing = _spacing(load_patient(rec).ed.spacing)
        out.append(PatientMasks(rec, loc.ed_labels, loc.es_labels, spacing, "segmenter", choices[rec.patient_id]))
    return out


def _spacing(s) -> tuple[float, float, float]:
    return (float(s[0]), float(s[1]), float(s[2]))


def measure_row(p: PatientMasks, ranges: PlausibleRanges = PlausibleRanges()) -> dict[str, object]:
    """One CSV row (columns `COLUMNS`) for one patient."""
    rec = p.record
    m = measure_patient(p.ed, p.es, p.spacing_zyx, rec.height_cm, rec.weight_kg)
    c = p.choice
    row: dict[str, object] = {
        "patient_id": rec.patient_id, "label": rec.label or "", "masks_source": p.source,
        "segmenter": c.model.name if c else "", "segmenter_weights": c.model.weights.name if c else "",
        "out_of_sample": "" if c is None or c.out_of_sample is None else c.out_of_sample,
        "spacing_z_mm": p.spacing_zyx[0], "spacing_y_mm": p.spacing_zyx[1], "spacing_x_mm": p.spacing_zyx[2],
        "height_cm": rec.height_cm, "weight_kg": rec.weight_kg,
    }
    row.update({CSV_COLUMNS[k]: v for k, v in m.as_dict().items()})
    row["bsa_note"] = "" if m.bsa_m2 is not None else "height or weight not given: BSA-indexed values empty"
    row["empty_structures"] = empty_structures(p.ed, p.es)
    row["missing_slices"] = " ".join(f"{ph}:{','.join(map(str, z))}" for ph, arr in (("ED", p.ed), ("ES", p.es))
                                     if (z := missing_slices(arr)))
    row["mask_flags"] = " ".join(f"{ph}:{name}" for ph, arr in (("ED", p.ed), ("ES", p.es))
                                 for name, on in qc.mask_flags(arr).items() if name in qc.MASK_FLAGS and on)
    row["implausible"] = implausible(m, ranges)
    row["qc_ok"] = not any(row[k] for k in QC_COLUMNS)
    return row


def empty_structures(ed: np.ndarray, es: np.ndarray) -> str:
    """"ED:RV ES:LV" for each structure absent from a whole phase ("" when all are present)."""
    return " ".join(f"{ph}:{name}" for ph, arr in (("ED", ed), ("ES", es))
                    for value, name in qc.STRUCTURES.items() if not (arr == value).any())


def missing_slices(labels: np.ndarray) -> list[int]:
    """Slices between the first and last slice with LV cavity that lack LV cavity or myocardium (a gap in
    the ventricle that its volume and thickness then miss)."""
    lv = (labels == LV_LABEL).any(axis=(1, 2))
    myo = (labels == MYO_LABEL).any(axis=(1, 2))
    z = np.flatnonzero(lv)
    if z.size == 0:
        return []
    return [int(k) for k in range(z[0], z[-1] + 1) if not (lv[k] and myo[k])]


def implausible(m: AnatomyMeasures, ranges: PlausibleRanges = PlausibleRanges()) -> str:
    """Measures outside `ranges` (or not finite), and ESV above EDV, as "lvef_percent 95.1 outside 5-90; ..."."""
    out = []
    for field in dataclasses.fields(ranges):
        lo, hi = getattr(ranges, field.name)
        v = getattr(m, field.name)
        if not (math.isfinite(v) and lo <= v <= hi):
            out.append(f"{CSV_COLUMNS[field.name]} {v:.1f} outside {lo:g}-{hi:g}")
    for side in ("lv", "rv"):
        if getattr(m, f"{side}_esv_ml") > getattr(m, f"{side}_edv_ml"):
            out.append(f"{side}_esv_ml above {side}_edv_ml")
    return "; ".join(out)
