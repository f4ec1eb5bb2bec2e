"""The study's data stage: open a cohort, prepare it, get heart masks, and build the full and segmented
slice-pair sets at the classifier's input size.

Masks: `masks.source = "segmenter"` runs `cmrprior.segmentation.predict.segment_prepared` (the shipped
segmenter unless `masks.model` names one). When the segmentation module is not installed, or its model is
missing, the study falls back to the cohort's ground-truth masks and says so (`masks_note`, recorded in
every result and in the tables). `masks.source = "ground_truth"` uses the cohort's own masks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet, resize_stack
from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import CmrPriorError, ConfigError, DataError
from cmrprior.experiments.config import StudyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CohortData:
    prepared: PreparedCohort  # with the masks used for segmented images
    images: dict  # {"full": SliceSet, "segmented": SliceSet}, at the input size
    masks_source: str  # "segmenter" | "ground_truth"
    masks_note: str  # empty, or why the masks are not the configured ones

    @property
    def patient_ids(self) -> list[str]:
        return self.prepared.patient_ids

    @property
    def patient_labels(self) -> np.ndarray:
        return self.prepared.patient_labels


def prepare_data(data: str | Path, config: StudyConfig, *, cache_dir: Path) -> PreparedCohort:
    """Open (`cmrprior.io.cohort.open_cohort`) and prepare (`cmrprior.data.prepare.prepare_cohort`) a cohort."""
    from cmrprior.data.prepare import PrepareConfig, prepare_cohort
    from cmrprior.io.cohort import open_cohort

    cohort = open_cohort(Path(data))
    try:
        pconfig = PrepareConfig(**config.prepare)
    except TypeError as exc:
        raise ConfigError(f"prepare: {exc}") from exc
    return prepare_cohort(cohort, pconfig, cache_dir)


def choose_masks(prepared: PreparedCohort, config: StudyConfig) -> tuple[PreparedCohort, str, str]:
    """(cohort with the masks to use, masks source, note). Raises DataError when no masks can be had."""
    if config.masks.source == "segmenter":
        try:
            from cmrprior.segmentation.predict import segment_prepared
        except ImportError as exc:
            note = f"segmenter not available ({exc}); ground-truth masks used instead"
        else:
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


def build_slice_sets(prepared: PreparedCohort, config: StudyConfig) -> dict[str, SliceSet]:
    """Full and segmented slice-pair sets at `classifier.input_size` (labels must all be known)."""
    labels = prepared.slice_labels
    if (prepared.patient_labels < 0).any():
        bad = [p.patient_id for p, lab in zip(prepared.patients, prepared.patient_labels) if lab < 0][:5]
        raise DataError(None, f"patients without a known label: {bad}")
    size = config.classifier.input_size
    ids = tuple(prepared.patient_ids)
    out = {}
    needed = set(config.classifier.images) | _pretrain_image_kinds(config)
    for kind in sorted(needed):
        if kind == "full":
            ed, es = prepared.ed, prepared.es
        else:
            from cmrprior.anatomy.heart import apply_image_mode

            kw = dict(
                mode=config.images.segmented_mode,
                margin_mm=config.images.margin_mm,
                pixel_spacing_mm=prepared.pixel_spacing_mm,
                groups=prepared.patient_index,
            )
            ed = apply_image_mode(prepared.ed, prepared.ed_mask, **kw)
            es = apply_image_mode(prepared.es, prepared.es_mask, **kw)
        out[kind] = SliceSet(
            ed=np.ascontiguousarray(resize_stack(ed.astype(np.float32), size)),
            es=np.ascontiguousarray(resize_stack(es.astype(np.float32), size)),
            labels=labels.astype(np.int64),
            patient_index=prepared.patient_index.astype(np.int64),
            patient_ids=ids,
        )
    return out


def _pretrain_image_kinds(config: StudyConfig) -> set[str]:
    kinds = set()
    if "full_sscl" in config.classifier.inits:
        kinds.add("full")
    if "segmented_sscl" in config.classifier.inits:
        kinds.add("segmented")
    return kinds


def load_cohort_data(data: str | Path, config: StudyConfig, *, prepared_dir: Path, cache_dir: Path) -> CohortData:
    """Prepared cohort with chosen masks, saved in `prepared_dir` (reused on a rerun), plus slice sets."""
    meta_path = prepared_dir / "masks.json"
    if (prepared_dir / "cohort.json").exists() and meta_path.exists():
        import json

        prepared = PreparedCohort.load(prepared_dir)
        meta = json.loads(meta_path.read_text())
        source, note = meta["masks_source"], meta["masks_note"]
    else:
        from cmrprior.utils import atomic

        raw = prepare_data(data, config, cache_dir=cache_dir)
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
    from cmrprior.segmentation.qc import evaluate_prepared, summarise, write_csv
    from cmrprior.utils import atomic

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
