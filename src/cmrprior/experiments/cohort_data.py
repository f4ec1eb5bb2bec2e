"""The study's data stage: open a cohort, prepare it, get heart masks, and build the full and segmented
slice-pair sets at the classifier's input size.

Masks (`masks.source`):
- "segmenter" (the user's path): the records lose their mask paths before anything is read; the segmenter
  (`cmrprior.segmentation.folds.choose_segmenters`: for each patient a model never trained on its images
  when the set has one; `masks.model` or the shipped set) finds the heart on the
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

from cmrprior.anatomy.measures_csv import MeasuresRow, read_measures_csv
from cmrprior.classify.data import SliceSet
from cmrprior.classify.inputs import build_slice_set
from cmrprior.data.prepare import prepare_cohort
from cmrprior.data.prepared import HeartLocation, PreparedCohort
from cmrprior.errors import DataError, LeakageError
from cmrprior.experiments.anatomy_data import expert_masks, segmenter_masks, write_cohort_measures
from cmrprior.experiments.config import StudyConfig
from cmrprior.io.cohort import open_cohort
from cmrprior.io.fingerprint import referenced_files
from cmrprior.io.records import Cohort
from cmrprior.runs import PHASES_CSV, MasksOrigin
from cmrprior.segmentation.folds import (
    all_out_of_sample,
    choose_segmenters,
    duplicate_images,
    fingerprint_cohort,
    in_sample,
    masks_statement,
)
from cmrprior.segmentation.phases import resolve_cohort_phases
from cmrprior.segmentation.qc import evaluate_prepared, summarise, write_csv
from cmrprior.segmentation.volumes import locate_cohort
from cmrprior.utils import atomic, timing
from cmrprior.utils.runfolder_checks import input_fingerprint
from cmrprior.vocab import IMAGES, get_init

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CohortData:
    prepared: PreparedCohort  # with the masks used for segmented images
    images: dict[str, SliceSet]  # images ("full" | "segmented") -> slice pairs at the classifier's input size
    masks: MasksOrigin  # where the masks come from (tables, report)
    # patient id -> (ED, ES) image fingerprints of the prepared patients (empty for folders prepared before they
    # were recorded); (kept id, left-out id) of the scans that repeat an earlier patient's
    fingerprints: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    duplicates: tuple[tuple[str, str], ...] = ()
    # anatomy measures from the same masks (empty when not measured), plain and perturbed
    measures: tuple[MeasuresRow, ...] = ()
    perturbed: tuple[MeasuresRow, ...] = ()

    @property
    def patient_ids(self) -> list[str]:
        return self.prepared.patient_ids

    @property
    def patient_labels(self) -> np.ndarray:
        return self.prepared.patient_labels


def open_input(data: str | Path, *, hash_cache: Path | None = None) -> tuple[Cohort, str]:
    """The cohort at `data` (opened, not loaded) and the fingerprint of its files and of every file its
    records point to, whole (`hash_cache`: where hashes already computed are kept, in the run folder).

    Raises:
        DataError: unreadable, or patients without a label (named).
    """
    cohort = open_cohort(Path(data))
    unlabelled = [p.patient_id for p in cohort.patients if p.label is None]
    if unlabelled:
        raise DataError(Path(data), f"patients without a label: {unlabelled[:5]} ({len(unlabelled)} in all); the "
                                    "study trains and scores on labelled cohorts only")
    return cohort, input_fingerprint(data, referenced=referenced_files(cohort), cache=hash_cache)


def images_only(cohort: Cohort) -> Cohort:
    """The cohort with every record's mask paths removed (so no expert mask can be read)."""
    return dataclasses.replace(cohort, patients=tuple(dataclasses.replace(r, ed_mask=None, es_mask=None)
                                                      for r in cohort.patients))


@dataclass(frozen=True)
class PreparedOrigin:
    """What `prepare_data` knows of a prepared cohort besides its arrays: where its masks come from, and the
    images they were drawn on: the (ED, ES) fingerprints of the patients kept, and the scans left out as
    repeats of an earlier patient's (kept id, left-out id)."""

    masks: MasksOrigin
    fingerprints: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    duplicates: tuple[tuple[str, str], ...] = ()


def prepare_data(data: str | Path, config: StudyConfig, *, cache_dir: Path, qc_dir: Path | None = None,
                 measures_to: tuple[Path, Path] | None = None, cohort: Cohort | None = None,
                 skip_bad: bool = False, workers: int = 1) -> tuple[PreparedCohort, PreparedOrigin]:
    """Open (`cmrprior.io.cohort.open_cohort`), find missing ED/ES frames of cines
    (`cmrprior.segmentation.phases.resolve_cohort_phases`, recorded in `qc_dir/phases.csv`), leave out
    patients whose images repeat an earlier patient's (`qc_dir/duplicate_images.csv`), choose each patient's
    segmenter (`cmrprior.segmentation.folds.choose_segmenters`, `qc_dir/segmenters.csv`), locate the heart
    and prepare (`cmrprior.data.prepare.prepare_cohort`) with the masks of `masks.source` (module
    docstring); segmenter QC and the list of left-out slices go into `qc_dir`; with `measures_to` (and
    `anatomy.enabled`), the anatomy measures of the prepared patients from the same masks, plain and
    perturbed (`cmrprior.experiments.anatomy_data`), go into those two CSVs. Returns the prepared cohort
    and where its masks come from. `cohort`: `data` already opened (`cmrprior prepare` opens it with its
    label and skip-bad options); `skip_bad`: as `prepare_cohort`; `workers`: processes that locate the heart
    (`locate_cohort`) and prepare the patients (`prepare_cohort`); the results are the same for any number.

    Raises:
        DataError: unreadable data or segmenter weights; oracle masks asked of a cohort without them.
        LeakageError: a patient would be segmented by a model trained on it and `masks.require_out_of_sample`.
        WeightsUnavailableError: no segmenter given and none shipped.
    """
    cohort, detections = resolve_cohort_phases(open_cohort(Path(data)) if cohort is None else cohort,
                                               model_path=config.masks.model,
                                               inference=config.masks.inference)
    if detections and qc_dir is not None:
        write_csv([d.as_row() for d in detections], qc_dir / PHASES_CSV)
    prints = fingerprint_cohort(cohort)
    dupes = tuple(duplicate_images(prints))
    cohort = _without_duplicates(cohort, dupes, qc_dir)
    kept = {r.patient_id: prints[r.patient_id] for r in cohort.patients}
    if config.masks.source == "ground_truth":
        lacking = [r.patient_id for r in cohort.patients if not r.has_masks]
        if lacking:
            raise DataError(Path(data), f"masks.source = ground_truth (oracle) but patients {lacking[:5]} have no "
                                        "expert masks")
        with timing.phase("prepare", items=len(cohort.patients)):
            prepared = prepare_cohort(cohort, config.prepare, cache_dir, skip_bad=skip_bad, workers=workers)
        origin = PreparedOrigin(MasksOrigin(config.masks.source, "oracle masks: expert masks locate the heart and make "
                                            "the segmented images", None), kept, dupes)
        masks, measured = expert_masks, cohort
    else:
        choices = choose_segmenters({r.patient_id: prints[r.patient_id] for r in cohort.patients}, config.masks.model)
        if qc_dir is not None:
            write_csv([c.as_row() for c in choices.values()], qc_dir / "segmenters.csv")
        inside = in_sample(choices)
        if inside and config.masks.require_out_of_sample:
            raise LeakageError(
                f"{data}: the segmenter was trained on patients {inside[:5]} ({len(inside)} in all) and no fold model "
                "that left them out is available: their masks would be in-sample. Give masks.model: a segmenter set "
                "made with `cmrprior segment train --folds K` and `cmrprior segment index-folds`, or set "
                "masks.require_out_of_sample: false to run with in-sample masks (every table then says so)")
        blind = images_only(cohort)
        with timing.phase("segment+locate", items=len(blind.patients)):
            locations = locate_cohort(blind, models={pid: c.model.weights for pid, c in choices.items()},
                                      inference=config.masks.inference, workers=workers)
        with timing.phase("prepare", items=len(blind.patients)):
            prepared = prepare_cohort(blind, config.prepare, cache_dir, locations=locations, skip_bad=skip_bad,
                                      workers=workers)
        if qc_dir is not None and any(r.has_masks for r in cohort.patients):
            with timing.phase("segmentation QC"):
                truth = expert_masks_on_grid(cohort, config, locations, prepared)
                write_segmentation_qc(prepared.select_patients(truth.patient_ids), truth, qc_dir)
        origin = PreparedOrigin(MasksOrigin(config.masks.source, masks_statement(choices), all_out_of_sample(choices)),
                                kept, dupes)
        masks, measured = segmenter_masks(locations), blind
    if measures_to is not None and config.anatomy.enabled:
        with timing.phase("measures", items=len(prepared.patient_ids)):
            write_cohort_measures(measured, prepared.patient_ids, masks, config.anatomy.perturb, measures_to,
                                  config.anatomy.workers)
    if qc_dir is not None:
        write_dropped_slices(prepared, qc_dir / "empty_mask_slices.csv")
    return prepared, origin


def holdout_masks(study: CohortData, test: CohortData) -> MasksOrigin:
    """The masks of the model trained on the study cohort and scored on the test cohort: each cohort's note (the
    study cohort's masks may come from fold models, the test cohort's from the full segmenter)."""
    return study.masks.with_test(test.masks)


def check_new_patients(study: CohortData, test: CohortData, test_data: str | Path) -> None:
    """Refuse a test cohort that holds a study patient's scan under another id, by the fingerprints of the
    prepared patients of both: this also covers cine records, whose ED/ES frames are only known after the
    segmenter found them (`shared_images` leaves those out before any work). Cohorts prepared before the
    fingerprints were recorded are not compared here (logged).

    Raises:
        DataError: naming the test cohort and the pairs (test id = study id).
    """
    if not study.fingerprints or not test.fingerprints:
        log.warning("%s: image fingerprints of a prepared cohort not recorded (a folder prepared before they were): the "
                    "test cohort was compared with the study cohort before preparation only", test_data)
        return
    owner = {fp: pid for pid, fps in study.fingerprints.items() for fp in fps}
    same = list(dict.fromkeys((owner[fp], pid) for pid, fps in test.fingerprints.items() for fp in fps if fp in owner))
    if same:
        pairs = ", ".join(f"{t} = study patient {s}" for s, t in same[:5])
        raise DataError(Path(test_data), f"{len(same)} patient(s) of the test cohort have images of the study cohort "
                                         f"under another id ({pairs}): a held-out patient must be a new patient")


def shared_images(study: Cohort, test: Cohort) -> list[tuple[str, str]]:
    """(study id, test id), once per pair, of every test-cohort patient whose ED or ES image has the pixels of a
    study patient's
    (`cmrprior.io.fingerprint`: content, not ids or paths; masks not read): the same scan in both cohorts.

    Cine-only records whose ED/ES frames are not known yet (found later by the segmenter) cannot be
    fingerprinted before that and are left out of this comparison. Raises DataError for an unreadable image.
    """
    def prints(cohort: Cohort) -> dict[str, tuple[str, str]]:
        known = [r for r in cohort.patients if r.cine is None or (r.ed_frame is not None and r.es_frame is not None)]
        return fingerprint_cohort(dataclasses.replace(cohort, patients=tuple(known)))

    owner = {fp: pid for pid, fps in prints(study).items() for fp in fps}
    return list(dict.fromkeys((owner[fp], pid) for pid, fps in prints(test).items() for fp in fps if fp in owner))


def _without_duplicates(cohort: Cohort, dupes: tuple[tuple[str, str], ...], qc_dir: Path | None) -> Cohort:
    """The cohort without the patients `dupes` leaves out (`duplicate_images`: ED or ES pixels that repeat an
    earlier patient's; the same scan twice would sit on both sides of a split); each one is logged and listed."""
    if not dupes:
        return cohort
    for kept, dropped in dupes:
        log.warning("patient %s has the same images as %s: left out (one scan, one patient)", dropped, kept)
    if qc_dir is not None:
        write_csv([{"kept_patient": k, "left_out_patient": d, "reason": "identical image pixels"}
                        for k, d in dupes], qc_dir / "duplicate_images.csv")
    gone = {d for _, d in dupes}
    return dataclasses.replace(cohort, patients=tuple(r for r in cohort.patients if r.patient_id not in gone))


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


def needed_images(config: StudyConfig) -> tuple[str, ...]:
    """The kinds of images the grid trains or pre-trains on, in vocabulary order."""
    wanted = set(config.classifier.images) | {get_init(i).pretrain_images for i in config.classifier.inits}
    return tuple(i for i in IMAGES if i in wanted)


def build_slice_sets(prepared: PreparedCohort, config: StudyConfig) -> dict[str, SliceSet]:
    """Slice-pair sets of every kind of images the grid needs, at `classifier.input_size` (labels must be known)."""
    return {images: build_slice_set(prepared, config.image_spec(images), config.classifier.input_size)
            for images in needed_images(config)}


def is_prepared(prepared_dir: Path) -> bool:
    """Whether `prepared_dir` holds a finished prepared cohort (`load_cohort_data` writes `masks.json` last)."""
    return (prepared_dir / "cohort.json").exists() and (prepared_dir / "masks.json").exists()


def load_cohort_data(data: str | Path, config: StudyConfig, *, prepared_dir: Path, cache_dir: Path,
                     measures_at: tuple[Path, Path] | None = None, workers: int = 1) -> CohortData:
    """Prepared cohort with chosen masks, saved in `prepared_dir` (reused on a rerun), plus slice sets, plus
    the anatomy measures written at `measures_at` (measures CSV, perturbed measures CSV) when asked. `workers`:
    processes that locate and prepare the patients (`prepare_data`) when the cohort is not prepared yet."""
    meta_path = prepared_dir / "masks.json"
    if is_prepared(prepared_dir):
        prepared = PreparedCohort.load(prepared_dir)
        meta = json.loads(meta_path.read_text())
        masks = MasksOrigin.from_keys(meta)
        prints = {pid: tuple(fps) for pid, fps in (meta.get("image_fingerprints") or {}).items()}
        dupes = tuple(tuple(d) for d in meta.get("duplicate_scans") or ())
    else:
        prepared, origin = prepare_data(data, config, cache_dir=cache_dir, qc_dir=prepared_dir.parent / "qc",
                                        measures_to=measures_at, workers=workers)
        masks, prints, dupes = origin.masks, origin.fingerprints, origin.duplicates
        if prepared.ed_mask is None or prepared.es_mask is None:
            raise DataError(Path(data), "the prepared cohort has no heart masks")
        prepared.save(prepared_dir)
        atomic.write_json(meta_path, {**masks.to_keys(), "data": str(data),
                                      "image_fingerprints": {pid: list(fps) for pid, fps in prints.items()},
                                      "duplicate_scans": [list(d) for d in dupes],
                                      "masks_models": {pid: None if m is None else {"path": m[0], "sha256": m[1]}
                                                       for pid, m in prepared.masks_models.items()}})
    measured = [read_measures_csv(p) if p.exists() else [] for p in (measures_at or ())]
    return CohortData(prepared=prepared, images=build_slice_sets(prepared, config), masks=masks,
                      fingerprints=prints, duplicates=dupes, measures=tuple(measured[0]) if measured else (),
                      perturbed=tuple(measured[1]) if measured else ())


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
        ed_mask=_cat_optional(a.ed_mask, b.ed_mask),
        es_mask=_cat_optional(a.es_mask, b.es_mask),
        positions=_cat_optional(a.positions, b.positions),
    )


def _cat_optional(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Both cohorts' per-slice arrays (masks, positions), or None when either has none."""
    return None if a is None or b is None else np.concatenate([a, b])
