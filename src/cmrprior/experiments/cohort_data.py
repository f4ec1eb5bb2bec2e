"""The study's data stage: open a cohort, prepare it, get heart masks, and build the full and segmented
slice-pair sets at the classifier's input size.

Masks: `masks.source = "segmenter"` runs `cmrprior.segmentation.predict.segment_prepared` (the shipped
segmenter unless `masks.model` names one). When the segmenter fails, the study falls back to the cohort's
ground-truth masks and says so (`masks_note`, recorded in every result and in the tables).
`masks.source = "ground_truth"` uses the cohort's own masks.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.classify.inputs import build_slice_set
from cmrprior.data.prepare import prepare_cohort
from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import CmrPriorError, DataError
from cmrprior.experiments.config import StudyConfig
from cmrprior.io.cohort import open_cohort
from cmrprior.io.records import Cohort
from cmrprior.segmentation.phases import resolve_cohort_phases
from cmrprior.segmentation.predict import segment_prepared
from cmrprior.segmentation.qc import evaluate_prepared, summarise, write_csv
from cmrprior.utils import atomic
from cmrprior.utils.runfolder_checks import input_fingerprint
from cmrprior.vocab import IMAGES, get_init

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CohortData:
    prepared: PreparedCohort  # with the masks used for segmented images
    images: dict[str, SliceSet]  # images ("full" | "segmented") -> slice pairs at the classifier's input size
    masks_source: str  # "segmenter" | "ground_truth"
    masks_note: str  # empty, or why the masks are not the configured ones

    @property
    def patient_ids(self) -> list[str]:
        return self.prepared.patient_ids

    @property
    def patient_labels(self) -> np.ndarray:
        return self.prepared.patient_labels


def open_input(data: str | Path) -> tuple[Cohort, str]:
    """The cohort at `data` (opened, not loaded) and the fingerprint of its files; DataError when unreadable."""
    return open_cohort(Path(data)), input_fingerprint(data)


def prepare_data(data: str | Path, config: StudyConfig, *, cache_dir: Path, qc_dir: Path | None = None) -> PreparedCohort:
    """Open (`cmrprior.io.cohort.open_cohort`), find missing ED/ES frames of cines
    (`cmrprior.segmentation.phases.resolve_cohort_phases`, recorded in `qc_dir/phases.csv`) and prepare
    (`cmrprior.data.prepare.prepare_cohort`) a cohort."""
    cohort, detections = resolve_cohort_phases(open_cohort(Path(data)), model_path=config.masks.model)
    if detections and qc_dir is not None:
        write_phases_csv([d.as_row() for d in detections], qc_dir / "phases.csv")
    return prepare_cohort(cohort, config.prepare, cache_dir)


def write_phases_csv(rows: list[dict], path: Path) -> Path:
    """The ED/ES frames found per patient and their LV volume curve (units in the column names)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return atomic.write_text(path, buf.getvalue())


def choose_masks(prepared: PreparedCohort, config: StudyConfig) -> tuple[PreparedCohort, str, str]:
    """(cohort with the masks to use, masks source, note). Raises DataError when no masks can be had."""
    if config.masks.source == "segmenter":
        try:
            seg = segment_prepared(prepared, model_path=config.masks.model)
            return seg, "segmenter", ""
        except CmrPriorError as exc:
            note = f"segmenter failed ({exc}); ground-truth masks used instead"
        if prepared.ed_mask is None or prepared.es_mask is None:
            raise DataError(None, f"no heart masks: {note.split(';')[0]} and the cohort has no ground-truth masks")
        log.warning(note)
        return prepared, "ground_truth", note
    if prepared.ed_mask is None or prepared.es_mask is None:
        raise DataError(None, "masks.source = ground_truth but the cohort has no ground-truth masks")
    return prepared, "ground_truth", ""


def needed_images(config: StudyConfig) -> tuple[str, ...]:
    """The kinds of images the grid trains or pre-trains on, in vocabulary order."""
    wanted = set(config.classifier.images) | {get_init(i).pretrain_images for i in config.classifier.inits}
    return tuple(i for i in IMAGES if i in wanted)


def build_slice_sets(prepared: PreparedCohort, config: StudyConfig) -> dict[str, SliceSet]:
    """Slice-pair sets of every kind of images the grid needs, at `classifier.input_size` (labels must be known)."""
    return {images: build_slice_set(prepared, config.image_spec(images), config.classifier.input_size)
            for images in needed_images(config)}


def load_cohort_data(data: str | Path, config: StudyConfig, *, prepared_dir: Path, cache_dir: Path) -> CohortData:
    """Prepared cohort with chosen masks, saved in `prepared_dir` (reused on a rerun), plus slice sets."""
    meta_path = prepared_dir / "masks.json"
    if (prepared_dir / "cohort.json").exists() and meta_path.exists():
        prepared = PreparedCohort.load(prepared_dir)
        meta = json.loads(meta_path.read_text())
        source, note = meta["masks_source"], meta["masks_note"]
    else:
        raw = prepare_data(data, config, cache_dir=cache_dir, qc_dir=prepared_dir.parent / "qc")
        prepared, source, note = choose_masks(raw, config)
        prepared.save(prepared_dir)
        if source == "segmenter" and raw.ed_mask is not None and raw.es_mask is not None:
            write_segmentation_qc(prepared, raw, prepared_dir.parent / "qc")
        atomic.write_json(meta_path, {"masks_source": source, "masks_note": note, "data": str(data)})
    return CohortData(prepared=prepared, images=build_slice_sets(prepared, config), masks_source=source, masks_note=note)


def write_segmentation_qc(pred: PreparedCohort, truth: PreparedCohort, qc_dir: Path) -> Path:
    """Dice / Hausdorff of the segmenter's masks against the cohort's ground truth, into `qc_dir`.

    Writes `segmentation_dice.md` (summary per phase and structure, mean and 95% t-interval over patients)
    and `data/segmentation_{summary,per_patient}.csv`. Returns the Markdown path.
    """
    rows = evaluate_prepared(pred, truth)
    summary = summarise(rows)
    write_csv(rows, qc_dir / "data" / "segmentation_per_patient.csv")
    write_csv(summary, qc_dir / "data" / "segmentation_summary.csv")
    lines = [
        "## Segmenter masks against the ground-truth masks of this cohort",
        "",
        "| Phase | Metric | Mean | 95% CI | n |",
        "|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(f"| {r['phase']} | {r['metric']} | {r['mean']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} |")
    lines += [
        "",
        "- 3D per patient and phase on the prepared grid (Dice; HD95 and HD in mm); t-interval over patients.",
        "- If the segmenter was trained on these patients (the shipped one was trained on the 100 ACDC training",
        "  patients), these are not held-out scores: see the model card for the cross-validated ones.",
    ]
    return atomic.write_text(qc_dir / "segmentation_dice.md", "\n".join(lines) + "\n")


def merge_slice_sets(a: SliceSet, b: SliceSet) -> SliceSet:
    """Concatenate two slice sets (patient ids must be distinct)."""
    clash = set(a.patient_ids) & set(b.patient_ids)
    if clash:
        raise DataError(None, f"patient ids in both cohorts: {sorted(clash)[:5]}")
    return SliceSet(
        ed=np.concatenate([a.ed, b.ed]),
        es=np.concatenate([a.es, b.es]),
        labels=np.concatenate([a.labels, b.labels]),
        patient_index=np.concatenate([a.patient_index, b.patient_index + a.n_patients]),
        patient_ids=a.patient_ids + b.patient_ids,
    )
