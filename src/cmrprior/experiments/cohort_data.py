"""The study's data stage: open a cohort, prepare it, get heart masks, and build the full and segmented
slice-pair sets at the classifier's input size.

Masks (`masks.source`):
- "segmenter" (the user's path): the records lose their mask paths before anything is read; the segmenter
  (`cmrprior.segmentation.predict.segmenter_for`: `masks.model` or the shipped one) finds the heart on the
  raw frames (`cmrprior.segmentation.volumes.locate_cohort`), and preparation crops, picks slices and
  masks with that one pass, so a cohort with or without `_gt` files gives the same arrays. Expert masks,
  when present, are read only afterwards, for the segmenter's QC (`qc/segmentation_dice.md`) on the same
  grid. A segmenter failure is an error (never a fall-back to expert masks).
- "ground_truth": the oracle: expert masks locate the heart and make the segmented images; every table
  says "oracle masks".
Slices left out because a phase's mask is empty there are listed in `qc/empty_mask_slices.csv`.

Every patient of both cohorts needs a label (`open_input` refuses an unlabelled cohort, e.g. an ACDC
testing folder without Group, before anything is trained): a `--test` cohort is scored, so its labels are
needed; to predict on unlabelled patients use the trained models directly.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.classify.inputs import build_slice_set
from cmrprior.data.prepare import prepare_cohort
from cmrprior.data.prepared import HeartLocation, PreparedCohort
from cmrprior.errors import DataError
from cmrprior.experiments.config import StudyConfig
from cmrprior.io.cohort import open_cohort
from cmrprior.io.records import Cohort
from cmrprior.segmentation.phases import resolve_cohort_phases
from cmrprior.segmentation.volumes import locate_cohort
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
    """The cohort at `data` (opened, not loaded) and the fingerprint of its files.

    Raises:
        DataError: unreadable, or patients without a label (named).
    """
    cohort = open_cohort(Path(data))
    unlabelled = [p.patient_id for p in cohort.patients if p.label is None]
    if unlabelled:
        raise DataError(Path(data), f"patients without a label: {unlabelled[:5]} ({len(unlabelled)} in all); the "
                                    "study trains and scores on labelled cohorts only")
    return cohort, input_fingerprint(data)


def images_only(cohort: Cohort) -> Cohort:
    """The cohort with every record's mask paths removed (so no expert mask can be read)."""
    return dataclasses.replace(cohort, patients=tuple(dataclasses.replace(r, ed_mask=None, es_mask=None)
                                                      for r in cohort.patients))


def prepare_data(data: str | Path, config: StudyConfig, *, cache_dir: Path, qc_dir: Path | None = None) -> PreparedCohort:
    """Open (`cmrprior.io.cohort.open_cohort`), find missing ED/ES frames of cines
    (`cmrprior.segmentation.phases.resolve_cohort_phases`, recorded in `qc_dir/phases.csv`), locate the heart
    and prepare (`cmrprior.data.prepare.prepare_cohort`) a cohort with the masks of `masks.source` (module
    docstring); segmenter QC and the list of left-out slices go into `qc_dir`.

    Raises:
        DataError: unreadable data or segmenter weights; oracle masks asked of a cohort without them.
        WeightsUnavailableError: no segmenter given and none shipped.
    """
    cohort, detections = resolve_cohort_phases(open_cohort(Path(data)), model_path=config.masks.model)
    if detections and qc_dir is not None:
        write_phases_csv([d.as_row() for d in detections], qc_dir / "phases.csv")
    if config.masks.source == "ground_truth":
        lacking = [r.patient_id for r in cohort.patients if not r.has_masks]
        if lacking:
            raise DataError(Path(data), f"masks.source = ground_truth (oracle) but patients {lacking[:5]} have no "
                                        "expert masks")
        prepared = prepare_cohort(cohort, config.prepare, cache_dir)
    else:
        blind = images_only(cohort)
        locations = locate_cohort(blind, model=config.masks.model)
        prepared = prepare_cohort(blind, config.prepare, cache_dir, locations=locations)
        if qc_dir is not None and any(r.has_masks for r in cohort.patients):
            truth = expert_masks_on_grid(cohort, config, locations, prepared)
            write_segmentation_qc(prepared.select_patients(truth.patient_ids), truth, qc_dir)
    if qc_dir is not None:
        write_dropped_slices(prepared, qc_dir / "empty_mask_slices.csv")
    return prepared


def expert_masks_on_grid(cohort: Cohort, config: StudyConfig, locations: dict[str, HeartLocation],
                         prepared: PreparedCohort) -> PreparedCohort:
    """The expert masks of the patients that have them, prepared on the crops of the segmenter's locations
    and the slices of `prepared` (for QC only: same grid, same slices as the segmenter's masks)."""
    from cmrprior.io.load import as_mask, read_image

    with_masks = tuple(r for r in cohort.patients if r.has_masks)
    pos = {pid: i for i, pid in enumerate(prepared.patient_ids)}
    truth_locs = {}
    for r in with_masks:
        ed, es = read_image(r.ed_image, frame=r.ed_frame), read_image(r.es_image, frame=r.es_frame)
        truth_locs[r.patient_id] = dataclasses.replace(
            locations[r.patient_id], ed_labels=as_mask(read_image(r.ed_mask), ed).array,
            es_labels=as_mask(read_image(r.es_mask), es).array, model=None, model_sha256=None, keep_empty=True,
            slices=tuple(int(z) for z in prepared.slice_index[prepared.patient_index == pos[r.patient_id]]))
    return prepare_cohort(images_only(dataclasses.replace(cohort, patients=with_masks)), config.prepare,
                          locations=truth_locs)


def write_dropped_slices(prepared: PreparedCohort, path: Path) -> Path:
    """The slices left out because the mask of one phase is empty there (patient, z, reason)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["patient_id", "slice_index", "reason"])
    writer.writerows(prepared.dropped_slices)
    return atomic.write_text(path, buf.getvalue())


def write_phases_csv(rows: list[dict], path: Path) -> Path:
    """The ED/ES frames found per patient and their LV volume curve (units in the column names)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return atomic.write_text(path, buf.getvalue())


def masks_of(config: StudyConfig) -> tuple[str, str]:
    """(masks source, note) of the masks a prepared cohort carries under `config`."""
    if config.masks.source == "ground_truth":
        return "ground_truth", "oracle masks: expert masks locate the heart and make the segmented images"
    return "segmenter", ""


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
        prepared = prepare_data(data, config, cache_dir=cache_dir, qc_dir=prepared_dir.parent / "qc")
        if prepared.ed_mask is None or prepared.es_mask is None:
            raise DataError(Path(data), "the prepared cohort has no heart masks")
        source, note = masks_of(config)
        prepared.save(prepared_dir)
        atomic.write_json(meta_path, {"masks_source": source, "masks_note": note, "data": str(data),
                                      "masks_models": {pid: None if m is None else {"path": m[0], "sha256": m[1]}
                                                       for pid, m in prepared.masks_models.items()}})
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
