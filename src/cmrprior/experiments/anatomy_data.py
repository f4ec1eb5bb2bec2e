"""Anatomy measures of a cohort from exactly the masks the study uses, for the "Anatomy" model.

Segmenter path: the segmenter's labels of each patient (`HeartLocation.ed_labels`/`es_labels`, source
geometry, from a model that never saw that patient when the set has one), with the voxel spacing of the
patient's own ED image; expert masks are not read. Oracle path (`masks.source: ground_truth`): the expert
masks. Every patient is measured as is and under each mask perturbation of `anatomy.perturb`
(`cmrprior.anatomy.perturb`); the study scores perturbed measures of test patients only. A patient's measures
depend only on its own images and masks, so measuring the whole cohort at once leaks nothing across a split.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cmrprior.anatomy.measure import measure_patient
from cmrprior.anatomy.measures_csv import MeasuresRow, write_measures_csv
from cmrprior.anatomy.perturb import PERTURBATIONS, perturb_masks
from cmrprior.data.prepared import HeartLocation
from cmrprior.errors import DataError
from cmrprior.io.load import load_patient
from cmrprior.io.records import Cohort, PatientRecord
from cmrprior.utils.processes import map_in_processes

log = logging.getLogger(__name__)

MaskSource = Callable[[PatientRecord], tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]


def segmenter_masks(locations: dict[str, HeartLocation]) -> MaskSource:
    """ED/ES labels and spacing (z, y, x) mm of a patient from the segmenter's locations (images only)."""
    def get(rec: PatientRecord):
        loc = locations[rec.patient_id]
        volumes = load_patient(dataclasses.replace(rec, ed_mask=None, es_mask=None))
        return loc.ed_labels, loc.es_labels, volumes.ed.spacing
    return get


def expert_masks(rec: PatientRecord):
    """ED/ES expert masks and spacing of a patient (the oracle setting only)."""
    volumes = load_patient(rec)
    if volumes.ed_mask is None or volumes.es_mask is None:
        raise DataError(rec.source or rec.ed_image, f"patient {rec.patient_id} has no expert masks to measure")
    return volumes.ed_mask.array, volumes.es_mask.array, volumes.ed_mask.spacing


def _measure(rec: PatientRecord, ed: np.ndarray, es: np.ndarray, spacing, kind: str = "none", size: int = 0
             ) -> MeasuresRow:
    m = measure_patient(np.rint(ed).astype(np.int16), np.rint(es).astype(np.int16), spacing,
                        height_cm=rec.height_cm, weight_kg=rec.weight_kg)
    return MeasuresRow(rec.patient_id, rec.label, m.as_dict(), kind, int(size))


def _measure_all(job: tuple[PatientRecord, np.ndarray, np.ndarray, object, Sequence[int]]
                 ) -> tuple[MeasuresRow, list[MeasuresRow]]:
    """One patient's plain and perturbed measures from (record, ED mask, ES mask, spacing, perturbation
    sizes); runs in a worker process when the cohort is large."""
    rec, ed, es, spacing, sizes = job
    try:
        plain = _measure(rec, ed, es, spacing)
        perturbed = [_measure(rec, *perturb_masks(ed, es, kind, n), spacing, kind, n)
                     for kind in (PERTURBATIONS if sizes else ()) for n in sizes]
    except DataError as exc:
        raise DataError(rec.source or rec.ed_image, f"patient {rec.patient_id}: {exc.problem}") from exc
    return plain, perturbed


def measure_cohort_masks(cohort: Cohort, patient_ids: Sequence[str], masks: MaskSource, sizes: Sequence[int],
                         workers: int = 1) -> tuple[list[MeasuresRow], list[MeasuresRow]]:
    """(measures, perturbed measures) of the patients `patient_ids` of `cohort`, masks from `masks`, in
    cohort order; `workers` processes measure (the rows are identical for any number).

    Raises:
        DataError: bad masks (names the patient).
    """
    wanted = set(patient_ids)
    recs = [r for r in cohort.patients if r.patient_id in wanted]
    jobs = ((rec, *masks(rec), tuple(sizes)) for rec in recs)
    done = list(map_in_processes(_measure_all, jobs, workers, min_jobs=8))
    plain = [d[0] for d in done]
    perturbed = [row for d in done for row in d[1]]
    log.info("anatomy: measured %d patients (%d perturbed mask pairs)", len(plain), len(perturbed))
    return plain, perturbed


def write_cohort_measures(cohort: Cohort, patient_ids: Sequence[str], masks: MaskSource, sizes: Sequence[int],
                          to: tuple[Path, Path], workers: int = 1) -> None:
    """`measure_cohort_masks`, written to `to` = (measures CSV, perturbed measures CSV)."""
    plain, perturbed = measure_cohort_masks(cohort, patient_ids, masks, sizes, workers)
    write_measures_csv(plain, to[0])
    write_measures_csv(perturbed, to[1])
