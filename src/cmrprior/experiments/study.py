"""The whole study as one function: `run_study(data, out, config, test_data=None)`.

Steps (Nakashima et al., sec. 5.1; run folder layout in `experiments/README.md`, owned by `cmrprior.runs`):

1. prepare the cohort, get heart masks (segmenter by default), build the slice pairs of every kind of images;
2. patient-level stratified outer splits as `protocol` says (`cmrprior.data.splits.protocol_splits`: repeated
   70/30 holdout by default, or repeated k-fold);
3. per split, per backbone: SimCLR pre-training on the images of every SSCL init (full, segmented) of the
   split's training patients only (early stopping on the inner validation part of the training patients),
   one run per pre-training batch size of the grid; the Seg-teacher init's encoder learns to draw the heart
   masks of the same training patients instead (`cmrprior.ssl.teacher`);
4. per split, per backbone x initialisation x training images: the ED/ES diagnosis model
   (`cmrprior.experiments.cell.run_cell`); hyperparameters by k-fold CV inside the training part;
5. tables 1-3 (mean, corrected resampled t interval across splits, clipped to [0, 1]), paired
   comparisons (Holm-adjusted), Figure 1;
6. saliency of every finished cell (`cmrprior.saliency.run.run_saliency`), then the report, which only
   renders what is on disk.

With `test_data`: every configuration is also trained on the whole cohort (pre-training included) and
scored on the separate cohort (`RUN/holdout/`, `tables/holdout_*`).

Every finished piece writes its marker atomically and last (`done.json`, `result.json`); a rerun with the
same config skips finished pieces. What each stage saw is recorded and checked against the test ids.
"""

from __future__ import annotations

import logging
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cmrprior
from cmrprior.classify.data import SliceSet
from cmrprior.data.splits import assert_disjoint, inner_split, protocol_splits
from cmrprior.errors import CmrPriorError, ConfigError, DataError
from cmrprior.evaluate.curves import write_figure1
from cmrprior.evaluate.tables import TableSetup, write_tables
from cmrprior.evaluate.anatomy_table import write_anatomy_table, write_robustness
from cmrprior.experiments.anatomy_stage import AnatomyInputs, run_anatomy_split
from cmrprior.experiments.hybrid_stage import run_hybrid_split
from cmrprior.experiments.cell import CellJob, run_cell
from cmrprior.experiments import cohort_data
from cmrprior.experiments.cohort_data import CohortData, load_cohort_data, merge_slice_sets, needed_images
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.export_stage import export_models
from cmrprior.experiments.pretraining import pretrain_piece, teacher_piece
from cmrprior.experiments.progress import StudyProgress
from cmrprior.report import build_report
from cmrprior.runs import HOLDOUT, LAYOUT_VERSION, CellKey, CellResult, PretrainRecord, RunFolder, RunInfo, SplitSpec
from cmrprior.saliency.run import run_saliency
from cmrprior.segmentation.qc import write_mask_flags
from cmrprior.utils import atomic, timing
from cmrprior.utils.runfolder_checks import check_out_dir
from cmrprior.utils.runlock import run_lock
from cmrprior.utils.seeding import derive_seed
from cmrprior.vocab import INITS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    run_dir: Path
    tables: dict[str, Path]  # {"table1": Path(md), ...}
    figure: Path | None
    report: Path | None
    n_cells: int
    wall_s: float
    n_failed: int = 0  # cells that raised (retried on a rerun); "unavailable" cells (no weights) are not failures
    n_ok: int = 0  # cells trained and scored

    def problem(self) -> str | None:
        """One line when the study did not give what it was asked for (every cell failed or was unavailable,
        or some failed), else None; the CLI exits non-zero with it."""
        if self.n_cells and not self.n_ok:
            return f"no cell of the study was trained ({self.n_failed} failed, {self.n_cells - self.n_failed} " \
                   f"unavailable): see {self.run_dir / 'log.txt'} and the cells' result.json"
        if self.n_failed:
            return f"{self.n_failed} of {self.n_cells} cells failed (see {self.run_dir / 'log.txt'}); the tables " \
                   "leave them out; re-run the same command to retry them"
        return None


def make_splits(ids: list[str], labels: np.ndarray, config: StudyConfig) -> list[SplitSpec]:
    splits = protocol_splits(ids, [int(x) for x in labels], config.protocol)
    return [SplitSpec(str(i), int(s.seed), tuple(s.train), tuple(s.test)) for i, s in enumerate(splits)]


def _check_run_config(run: RunFolder, config: StudyConfig) -> None:
    if run.config_yaml.exists():
        old = StudyConfig.from_yaml(run.config_yaml)
        if old.digest() != config.digest():
            raise ConfigError(f"{run.root}: this run folder was made with another config ({run.config_yaml}); "
                              "use a new --out or the same config")
    else:
        atomic.write_text(run.config_yaml, config.to_yaml())


def _load_or_make_splits(run: RunFolder, data: CohortData, config: StudyConfig) -> list[SplitSpec]:
    splits = run.splits()
    if splits is not None:
        return splits
    splits = make_splits(data.patient_ids, data.patient_labels, config)
    for s in splits:
        assert_disjoint("split", s.train, s.test)
    run.write_splits(splits)
    return splits


def _pretrain_all(run: RunFolder, split: SplitSpec, images: dict[str, SliceSet], backbone: str, config: StudyConfig,
                  inner: tuple[tuple[str, ...], tuple[str, ...]], progress: StudyProgress | None = None
                  ) -> dict[str, tuple[PretrainRecord, ...]]:
    """Pre-training runs of one split and backbone: init name -> one record per pre-training batch size
    (SimCLR), or the one Seg-teacher record."""
    out = {}
    for init in INITS:
        if init.pretrain_images is None or init.name not in config.classifier.inits:
            continue
        if init.pretext == "masks":
            folder = run.teacher_dir(split.name, init.pretrain_images, backbone)
            reused = run.read_pretrain(folder) is not None
            with timing.phase(f"teacher[{backbone},{init.pretrain_images}]"):
                out[init.name] = (teacher_piece(
                    run, folder, images[init.pretrain_images], images=init.pretrain_images, backbone=backbone,
                    seed=derive_seed(split.seed, "teacher", init.pretrain_images, backbone), train_ids=inner[0],
                    val_ids=inner[1], test_ids=split.test, config=config.teacher),)
            if progress is not None:
                progress.teacher_done(split.name, backbone, init.pretrain_images, reused=reused)
            continue
        records = []
        for bs in config.pretrain.batch_sizes:
            data = images[init.pretrain_images]
            cfg = config.pretrain.for_run(backbone=backbone, batch_size=bs, image_size=int(data.ed.shape[-1]),
                                          seed=derive_seed(split.seed, "pretrain", init.pretrain_images, backbone, bs))
            folder = run.pretrain_dir(split.name, init.pretrain_images, backbone, bs)
            reused = run.read_pretrain(folder) is not None
            with timing.phase(f"simclr[{backbone},{init.pretrain_images},bs{bs}]"):
                records.append(pretrain_piece(run, folder, data, images=init.pretrain_images, train_ids=inner[0],
                                              val_ids=inner[1], test_ids=split.test, config=cfg))
            if progress is not None:
                progress.pretrain_done(split.name, backbone, init.pretrain_images, bs, reused=reused)
        out[init.name] = tuple(records)
    return out


def run_split(run: RunFolder, split: SplitSpec, images: dict[str, SliceSet], config: StudyConfig, *,
              classes: tuple[str, ...], masks_source: str, masks_note: str,
              progress: StudyProgress | None = None) -> list[CellResult]:
    """Pre-train and train every cell of one split; returns the cell results (finished ones are reused)."""
    label_of = dict(zip(images[next(iter(images))].patient_ids, images[next(iter(images))].patient_labels.tolist()))
    inner = inner_split(split.train, [label_of[p] for p in split.train], val_fraction=config.protocol.val_fraction,
                        split_seed=split.seed)
    inner_ids = (tuple(inner.train), tuple(inner.test))
    assert_disjoint("inner validation", inner_ids[0] + inner_ids[1], split.test)
    c = config.classifier
    results = []
    for backbone in c.backbones:
        pretrained = _pretrain_all(run, split, images, backbone, config, inner_ids, progress)
        for init in c.inits:
            for kind in c.images:
                job = CellJob(key=CellKey(split.name, backbone, init, kind), split_seed=split.seed,
                              train_ids=split.train, test_ids=split.test,
                              pretrained=pretrained.get(init, ()), classes=classes,
                              masks_source=masks_source, masks_note=masks_note,
                              image_mode=config.image_spec(kind).mode, cv_folds=config.protocol.cv_folds)
                old = run.read_cell(job.key)
                with timing.phase(f"cell[{backbone},{init},{kind},{c.mode_of(init)}]"):
                    results.append(run_cell(run, job, images[kind], c))
                if progress is not None:
                    progress.cell_done(results[-1], reused=old is not None and old.ok)
    return results


def _holdout(run: RunFolder, test_data: Path, config: StudyConfig, data: CohortData
             ) -> tuple[list[CellResult], CohortData]:
    """Train on the whole cohort, score on the separate cohort `test_data`; returns the cells and that cohort."""
    hold = load_cohort_data(test_data, config, prepared_dir=run.prepared(HOLDOUT), cache_dir=run.cache,
                            measures_at=run.anatomy_measures_csvs(HOLDOUT))
    classes = data.prepared.classes
    missing = sorted(set(hold.prepared.classes) - set(classes))
    lut = {c: i for i, c in enumerate(classes)}
    if missing:
        raise ConfigError(f"{test_data}: classes {missing} are not in the study cohort's classes {list(classes)}")
    images = {}
    for kind, s in hold.images.items():
        remapped = np.array([lut[hold.prepared.classes[k]] for k in s.labels], dtype=np.int64)
        images[kind] = merge_slice_sets(data.images[kind], s.with_labels(remapped))
    split = SplitSpec(HOLDOUT, config.protocol.seed, tuple(data.patient_ids), tuple(hold.patient_ids))
    note = data.masks_note or hold.masks_note
    with timing.phase("grid"):
        return run_split(run, split, images, config, classes=classes, masks_source=hold.masks_source,
                         masks_note=note, progress=StudyProgress.for_grid(config, 1, prefix="held-out ")), hold


def _check_inputs(run: RunFolder, data: str | Path, test_data: str | Path | None, config: StudyConfig) -> None:
    """Everything about the inputs that can be checked before the first long step: both cohorts open, labels
    are known, the cohort can be split as the protocol asks, the --test cohort's classes fit and its patients
    are new (ids, and images compared by content), and the run folder was made from these same inputs (or is
    new)."""
    cohort, fingerprint = cohort_data.open_input(data, hash_cache=run.input_hashes)
    labels = [p.label for p in cohort.patients]
    if any(lab is None for lab in labels):
        missing = [p.patient_id for p in cohort.patients if p.label is None][:5]
        raise DataError(Path(data), f"patients without a label: {missing}")
    ids = [q.patient_id for q in cohort.patients]
    label_of = dict(zip(ids, labels))
    for split in protocol_splits(ids, labels, config.protocol):  # can it split, and each training part again?
        try:
            inner_split(split.train, [label_of[p] for p in split.train], val_fraction=config.protocol.val_fraction,
                        split_seed=split.seed)
        except ConfigError as exc:
            raise ConfigError(f"{data}: the training part of a split cannot give the inner validation part "
                              f"(protocol.val_fraction={config.protocol.val_fraction}): {exc}") from exc
    if test_data is not None:
        hold, test_fingerprint = cohort_data.open_input(test_data, hash_cache=run.input_hashes)
        extra = sorted({p.label for p in hold.patients if p.label is not None} - set(cohort.classes))
        if extra:
            raise ConfigError(f"{test_data}: classes {extra} are not in the study cohort's classes {list(cohort.classes)}")
        shared = sorted({p.patient_id for p in hold.patients} & {p.patient_id for p in cohort.patients})
        if shared:
            raise DataError(Path(test_data), f"patient ids also in the study cohort {data}: {shared[:5]}")
        same = cohort_data.shared_images(cohort, hold)
        if same:
            pairs = ", ".join(f"{t} = study patient {s}" for s, t in same[:5])
            raise DataError(Path(test_data), f"{len(same)} patient(s) of the test cohort have images of the study "
                                             f"cohort {data} under another id ({pairs}): a held-out patient must be a new patient")
    run.bind_inputs({"data": (str(data), fingerprint),
                     "test_data": None if test_data is None else (str(test_data), test_fingerprint)})


def masks_line(masks_source: str, masks_note: str) -> str:
    """Where the masks come from, for tables ("oracle masks ..." in the oracle setting)."""
    if masks_source == "ground_truth" and masks_note.startswith("oracle masks"):
        return masks_note
    return ("oracle masks (expert ground truth)" if masks_source == "ground_truth" else masks_source) + (
        f" ({masks_note})" if masks_note else "")


def table_setup(config: StudyConfig, classes: tuple[str, ...], masks_source: str, masks_note: str) -> TableSetup:
    c = config.classifier
    fov = config.prepare.full_fov_mm
    masks = masks_line(masks_source, masks_note)
    notes = (
        f"Masks for segmented images: {masks}"
        + f"; segmented mode: {config.images.segmented_mode}, margin {config.images.margin_mm} mm.",
        "Full images: " + ("the whole acquired field of view, padded to a square" if fov is None else
                           f"a {fov:g} mm field of view around the image centre")
        + f", {config.prepare.size} px; segmented images: a {config.prepare.size} px crop at"
        f" {config.prepare.pixel_spacing_mm:g} mm around the heart.",
        f"Classifier modes: {c.modes_note()}; input {c.input_size} px; pre-training {config.pretrain.simclr.epochs} epoch(s) max.",
    )
    return TableSetup(classes=classes, backbones=c.backbones, inits=c.inits, images=c.images,
                      evaluation=config.evaluation, seed=config.protocol.seed, run_notes=notes,
                      protocol=config.protocol)


def run_study(
    data: str | Path,
    out: str | Path,
    config: StudyConfig,
    *,
    test_data: str | Path | None = None,
    report: bool = True,
) -> StudyResult:
    """Run (or resume) the study; see the module docstring. Returns where the outputs are.

    `report`: compute saliency and write the HTML report at the end. One process at a time works in a run
    folder (`cmrprior.utils.runlock`): a second one is refused with a ConfigError naming the folder.
    """
    run = RunFolder(check_out_dir(out, [data, test_data]))
    with run_lock(run.root):
        return _run_study(run, data, config, test_data=test_data, report=report)


def _run_study(run: RunFolder, data: str | Path, config: StudyConfig, *, test_data: str | Path | None,
               report: bool) -> StudyResult:
    t0 = time.time()
    _check_inputs(run, data, test_data, config)
    _check_run_config(run, config)
    with timing.phase("data"):
        cohort = load_cohort_data(data, config, prepared_dir=run.prepared(), cache_dir=run.cache,
                                  measures_at=run.anatomy_measures_csvs())
    if not run.mask_flags_csv.exists():
        write_mask_flags(cohort.prepared, run.mask_flags_csv)  # plausibility of the masks used, for the report
    classes = cohort.prepared.classes
    run.write_info(RunInfo(layout_version=LAYOUT_VERSION, classes=tuple(classes), masks_source=cohort.masks_source,
                           masks_note=cohort.masks_note, image_specs=tuple(config.image_spec(i) for i in needed_images(config)),
                           input_size=config.classifier.input_size, pixel_spacing_mm=cohort.prepared.pixel_spacing_mm,
                           masks_out_of_sample=cohort.masks_out_of_sample))
    splits = _load_or_make_splits(run, cohort, config)
    log.info("study %s: %d patients, %d slices, classes %s, %d splits, masks %s",
             run.root, len(cohort.patient_ids), len(cohort.prepared), ", ".join(classes), len(splits), cohort.masks_source)
    results = []
    progress = StudyProgress.for_grid(config, len(splits))
    for split in splits:
        log.info("split %s: %d train / %d test patients", split.name, len(split.train), len(split.test))
        with timing.phase("grid"):
            results += run_split(run, split, cohort.images, config, classes=classes,
                                 masks_source=cohort.masks_source, masks_note=cohort.masks_note, progress=progress)
    log.info("tables: %d cell results -> tables 1-3, metrics, paired comparisons (%d bootstrap resamples)", len(results),
             config.evaluation.n_boot)
    setup = table_setup(config, classes, cohort.masks_source, cohort.masks_note)
    tables = write_tables(results, run.tables, setup=setup)
    anatomy = AnatomyInputs.from_rows(cohort.measures, cohort.perturbed)
    if config.anatomy.enabled:
        tables.update(anatomy_tables(run, splits, anatomy, results, config, setup,
                                     masks=(cohort.masks_source, cohort.masks_note)))
    holdout = []
    if test_data is not None:
        with timing.phase("holdout"):
            holdout, hold = _holdout(run, Path(test_data), config, cohort)
            hold_setup = table_setup(config, classes, holdout[0].masks_source if holdout else cohort.masks_source,
                                     holdout[0].masks_note if holdout else cohort.masks_note)
            tables.update(write_tables(holdout, run.tables, setup=hold_setup, prefix="holdout_"))
            if config.anatomy.enabled:
                split = SplitSpec(HOLDOUT, config.protocol.seed, tuple(cohort.patient_ids), tuple(hold.patient_ids))
                both = anatomy.merged(AnatomyInputs.from_rows(hold.measures, hold.perturbed))
                tables.update(anatomy_tables(run, [split], both, holdout, config, hold_setup, prefix="holdout_",
                                             masks=(hold.masks_source, cohort.masks_note or hold.masks_note)))
    with timing.phase("export"):
        models = export_models(run, data, cohort.patient_ids, classes, anatomy, run.anatomy_results(), config)
    figure = write_figure1(results, run.figures / "figure1.png")
    meta = {
        "data": str(data), "test_data": None if test_data is None else str(test_data),
        "classes": list(classes), "n_patients": len(cohort.patient_ids), "n_slices": len(cohort.prepared),
        "masks_source": cohort.masks_source, "masks_note": cohort.masks_note,
        "masks_out_of_sample": cohort.masks_out_of_sample,
        "n_splits": len(splits), "n_results": len(results), "n_holdout_results": len(holdout),
        "config_digest": config.digest(), "versions": _versions(),
        "models": {name: str(path.relative_to(run.root)) for name, path in models.items()},
    }
    _write_meta(run, meta, t0)
    report_path = _saliency_and_report(run) if report else None
    wall = _write_meta(run, meta, t0, report_path)
    every = results + holdout
    return StudyResult(run.root, tables, figure, report_path, len(every), wall,
                       n_failed=sum(r.status == "failed" for r in every), n_ok=sum(r.ok for r in every))


def anatomy_tables(run: RunFolder, splits: list[SplitSpec], inputs: AnatomyInputs, image_results: list[CellResult],
                   config: StudyConfig, setup: TableSetup, *, masks: tuple[str, str], prefix: str = "") -> dict:
    """The anatomy model on every split, Table 4 and the robustness CSV (`cmrprior.experiments.anatomy_stage`)."""
    results, robustness, hybrids = [], [], []
    for split in splits:
        with timing.phase("anatomy"):
            r, rows, model = run_anatomy_split(run, split, inputs, config.anatomy, classes=setup.classes,
                                               cv_folds=config.protocol.cv_folds, masks_source=masks[0],
                                               masks_note=masks[1])
        results.append(r)
        robustness += rows
        if model is not None and config.anatomy.hybrid:
            with timing.phase("hybrids"):
                hybrids += run_hybrid_split(run, split, model, inputs, image_results)
    md = write_anatomy_table(results, image_results, run.tables, setup=setup, masks_line=masks_line(*masks),
                             prefix=prefix, hybrids=hybrids)
    if robustness:
        write_robustness(robustness, run.tables / f"{prefix}anatomy_robustness.csv")
    return {f"{prefix}table4": md}


def _saliency_and_report(run: RunFolder) -> Path | None:
    """Saliency of every finished cell, then the report; neither may lose a finished study."""
    try:
        with timing.phase("saliency"):
            run_saliency(run.root)
    except CmrPriorError as exc:
        log.error("saliency failed: %s", exc)
    try:
        with timing.phase("report"):
            return build_report(run.root)
    except Exception as exc:  # noqa: BLE001 - the report must not lose a finished study
        log.error("report failed: %s", exc)
        return None


def _write_meta(run: RunFolder, meta: dict, t0: float, report_path: Path | None = None) -> float:
    wall = time.time() - t0
    atomic.write_json(run.study_json, {
        **meta, "wall_s_this_invocation": wall, "report": None if report_path is None else str(report_path),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return wall


def _versions() -> dict:
    return {"cmrprior": cmrprior.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__}
