"""The whole study as one function: `run_study(data, out, config, test_data=None)`.

Steps (Nakashima et al., sec. 5.1; run folder layout in `experiments/README.md`, owned by `cmrprior.runs`):

1. prepare the cohort, get heart masks (segmenter by default), build the slice pairs of every kind of images;
2. patient-level stratified outer splits as `protocol` says (`cmrprior.data.splits.protocol_splits`: repeated
   70/30 holdout by default, or repeated k-fold);
3. per split, per backbone: pre-training of every init of the grid that a registered pretext pre-trains
   (`cmrprior.vocab.pretexts`): SimCLR on the images of the SSCL inits (full, segmented), VICReg likewise,
   on the split's training patients only (early stopping on the inner validation part of the training
   patients), one run per pre-training batch size of the method's grid; the Seg-teacher init's encoder
   learns to draw the heart masks of the same training patients instead (`cmrprior.ssl.teacher`);
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

import contextlib
import logging
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cmrprior
from cmrprior.classify.data import SliceSet
from cmrprior.data.splits import assert_disjoint, inner_split, protocol_splits
from cmrprior.errors import CmrPriorError, ConfigError
from cmrprior.evaluate.curves import write_figure1
from cmrprior.evaluate.tables import TableSetup, write_tables
from cmrprior.evaluate.anatomy_table import write_anatomy_table, write_robustness
from cmrprior.experiments.anatomy_stage import AnatomyInputs, run_anatomy_split
from cmrprior.experiments.hybrid_stage import run_hybrid_split
from cmrprior.experiments.cell import CellJob, run_cell
from cmrprior.experiments import cohort_data
from cmrprior.experiments.cohort_data import CohortData, load_cohort_data, needed_images
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.export_stage import export_models
from cmrprior.experiments.pretraining import PretrainJob
from cmrprior.experiments.study_inputs import check_inputs, holdout_inputs, pretrain_runs
from cmrprior.experiments.progress import StudyProgress
from cmrprior.report import build_report
from cmrprior.runs import (HOLDOUT, LAYOUT_VERSION, CellKey, CellResult, MasksOrigin, PretrainRecord, RunFolder, RunInfo,
                           SplitSpec)
from cmrprior.saliency.run import run_saliency
from cmrprior.segmentation.qc import write_mask_flags
from cmrprior.utils import atomic, timing, tracking
from cmrprior.utils.runfolder_checks import check_out_dir
from cmrprior.utils.runlock import run_lock

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
                  inner: tuple[tuple[str, ...], tuple[str, ...]], progress: StudyProgress | None = None,
                  select: Callable[[Path], bool] | None = None) -> dict[str, tuple[PretrainRecord, ...]]:
    """Pre-training runs of one split and backbone, for every init of the grid that a registered pretext
    pre-trains (`cmrprior.vocab.pretexts`, `study_inputs.pretrain_runs`): init name -> one record per batch
    size of the pretext's grid, or its one record. With `select`, only the runs whose folder it accepts are
    trained; the others' records are read when finished, else left out."""
    out = {}
    for name, runs in pretrain_runs(run, split.name, backbone, config).items():
        records = []
        for r in runs:
            reused = run.read_pretrain(r.folder) is not None
            if select is not None and not select(r.folder):
                records += [run.read_pretrain(r.folder)] if reused else []
                continue
            images_kind = r.init.pretrain_images
            phase = f"{r.pretext.folder}[{backbone},{images_kind}" + ("" if r.batch_size is None else f",bs{r.batch_size}")
            with timing.phase(phase + "]"):
                records.append(r.pretext.train_function()(PretrainJob(
                    run=run, folder=r.folder, data=images[images_kind], images=images_kind, backbone=backbone,
                    batch_size=r.batch_size, split_seed=split.seed, train_ids=inner[0], val_ids=inner[1],
                    test_ids=split.test, settings=config.pretext_settings(r.pretext.name), study=config)))
            if progress is not None:
                progress.pretrain_done(split.name, backbone, r.pretext, images_kind, r.batch_size, reused=reused)
        out[name] = tuple(records)
    return out


def run_split(run: RunFolder, split: SplitSpec, images: dict[str, SliceSet], config: StudyConfig, *,
              classes: tuple[str, ...], masks: MasksOrigin,
              progress: StudyProgress | None = None, select: Callable[[Path], bool] | None = None
              ) -> list[CellResult]:
    """Pre-train and train every cell of one split; returns the cell results (finished ones are reused).
    `select` (`experiments.pieces`): train only the runs and cells whose folder it accepts; read the others."""
    label_of = dict(zip(images[next(iter(images))].patient_ids, images[next(iter(images))].patient_labels.tolist()))
    inner = inner_split(split.train, [label_of[p] for p in split.train], val_fraction=config.protocol.val_fraction,
                        split_seed=split.seed)
    inner_ids = (tuple(inner.train), tuple(inner.test))
    assert_disjoint("inner validation", inner_ids[0] + inner_ids[1], split.test)
    c = config.classifier
    results = []
    for backbone in c.backbones:
        pretrained = _pretrain_all(run, split, images, backbone, config, inner_ids, progress, select)
        for init in c.inits:
            for kind in c.images:
                job = CellJob(key=CellKey(split.name, backbone, init, kind), split_seed=split.seed,
                              train_ids=split.train, test_ids=split.test,
                              pretrained=pretrained.get(init, ()), classes=classes,
                              masks=masks,
                              image_mode=config.image_spec(kind).mode, cv_folds=config.protocol.cv_folds,
                              trackers=config.tracking.sinks)
                old = run.read_cell(job.key)
                if select is not None and not select(run.cell_dir(job.key)):
                    results += [] if old is None else [old]
                    continue
                with timing.phase(f"cell[{backbone},{init},{kind},{c.mode_of(init)}]"):
                    results.append(run_cell(run, job, images[kind], c))
                if progress is not None:
                    progress.cell_done(results[-1], reused=old is not None and old.ok)
    return results


def _holdout(run: RunFolder, test_data: Path, config: StudyConfig, data: CohortData,
             select: Callable[[Path], bool] | None = None) -> tuple[list[CellResult], CohortData]:
    """Train on the whole cohort, score on the separate cohort `test_data`; returns the cells and that cohort."""
    images, split, hold = holdout_inputs(run, test_data, config, data)
    with timing.phase("grid"):
        return run_split(run, split, images, config, classes=data.prepared.classes,
                         masks=cohort_data.holdout_masks(data, hold), progress=StudyProgress.for_grid(config, 1, prefix="held-out "),
                         select=select), hold


def masks_line(masks: MasksOrigin) -> str:
    """Where the masks come from, for tables ("oracle masks ..." in the oracle setting)."""
    if masks.source == "ground_truth" and masks.note.startswith("oracle masks"):
        return masks.note
    return ("oracle masks (expert ground truth)" if masks.source == "ground_truth" else masks.source) + (
        f" ({masks.note})" if masks.note else "")


def table_setup(config: StudyConfig, classes: tuple[str, ...], masks_origin: MasksOrigin) -> TableSetup:
    c = config.classifier
    fov = config.prepare.full_fov_mm
    masks = masks_line(masks_origin)
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
    lock: bool = True,
    select: Callable[[Path], bool] | None = None,
) -> StudyResult:
    """Run (or resume) the study; see the module docstring. Returns where the outputs are.

    `report`: compute saliency and write the HTML report at the end. One process at a time works in a run
    folder (`cmrprior.utils.runlock`): a second one is refused with a ConfigError naming the folder.
    `lock=False`: the caller holds it (`cmrprior.experiments.executors`); `select`: see `run_split`.
    """
    run = RunFolder(check_out_dir(out, [data, test_data]))
    with run_lock(run.root) if lock else contextlib.nullcontext():
        return _run_study(run, data, config, test_data=test_data, report=report, select=select)


def check_study_inputs(run: RunFolder, data: str | Path, test_data: str | Path | None, config: StudyConfig) -> None:
    """Inputs and config checked against the run folder (recorded there when new), and the trackers' packages
    installed; ConfigError, DataError."""
    tracking.require(config.tracking.sinks)
    check_inputs(run, data, test_data, config)
    _check_run_config(run, config)


def study_cohort(run: RunFolder, data: str | Path, config: StudyConfig, *, workers: int = 1) -> CohortData:
    """The study cohort, prepared into the run folder (masks chosen, measures written; by `workers` processes)
    or read from it."""
    return load_cohort_data(data, config, prepared_dir=run.prepared(), cache_dir=run.cache,
                            measures_at=run.anatomy_measures_csvs(), workers=workers)


def prepare_study(run: RunFolder, data: str | Path, config: StudyConfig, test_data: str | Path | None, *,
                  workers: int = 1) -> tuple[CohortData, list[SplitSpec]]:
    """Check the inputs, prepare the cohort (locate, segment; per patient in `workers` processes) and the --test
    cohort, compared with it by image fingerprint again (cine records' ED/ES frames are known only now) before
    anything is trained; write run.json and splits.json (last)."""
    check_study_inputs(run, data, test_data, config)
    with timing.phase("data"):
        cohort = study_cohort(run, data, config, workers=workers)
        hold = None if test_data is None else holdout_inputs(run, test_data, config, cohort, workers=workers)[2]
    if not run.mask_flags_csv.exists():
        write_mask_flags(cohort.prepared, run.mask_flags_csv)  # plausibility of the masks used, for the report
    classes = cohort.prepared.classes
    run.write_info(RunInfo(layout_version=LAYOUT_VERSION, classes=tuple(classes), masks=cohort.masks,
                           image_specs=tuple(config.image_spec(i) for i in needed_images(config)),
                           input_size=config.classifier.input_size, pixel_spacing_mm=cohort.prepared.pixel_spacing_mm,
                           test_masks=None if hold is None else hold.masks))
    splits = _load_or_make_splits(run, cohort, config)
    log.info("study %s: %d patients, %d slices, classes %s, %d splits, masks %s",
             run.root, len(cohort.patient_ids), len(cohort.prepared), ", ".join(classes), len(splits), cohort.masks.source)
    return cohort, splits


def _run_study(run: RunFolder, data: str | Path, config: StudyConfig, *, test_data: str | Path | None,
               report: bool, select: Callable[[Path], bool] | None = None) -> StudyResult:
    t0 = time.time()
    cohort, splits = prepare_study(run, data, config, test_data)
    classes = cohort.prepared.classes
    results = []
    progress = StudyProgress.for_grid(config, len(splits))
    for split in splits:
        log.info("split %s: %d train / %d test patients", split.name, len(split.train), len(split.test))
        with timing.phase("grid"):
            results += run_split(run, split, cohort.images, config, classes=classes,
                                 masks=cohort.masks, progress=progress,
                                 select=select)
    log.info("tables: %d cell results -> tables 1-3, metrics, paired comparisons (%d bootstrap resamples)", len(results),
             config.evaluation.n_boot)
    setup = table_setup(config, classes, cohort.masks)
    tables = write_tables(results, run.tables, setup=setup)
    anatomy = AnatomyInputs.from_rows(cohort.measures, cohort.perturbed)
    if config.anatomy.enabled:
        tables.update(anatomy_tables(run, splits, anatomy, results, config, setup,
                                     masks=cohort.masks))
    holdout, hold, hold_inputs = [], None, None
    if test_data is not None:
        with timing.phase("holdout"):
            holdout, hold = _holdout(run, Path(test_data), config, cohort, select)
            hold_setup = table_setup(config, classes, holdout[0].masks if holdout else cohort.masks)
            tables.update(write_tables(holdout, run.tables, setup=hold_setup, prefix="holdout_"))
            if config.anatomy.enabled:
                split = SplitSpec(HOLDOUT, config.protocol.seed, tuple(cohort.patient_ids), tuple(hold.patient_ids))
                hold_inputs = anatomy.merged(AnatomyInputs.from_rows(hold.measures, hold.perturbed))
                tables.update(anatomy_tables(run, [split], hold_inputs, holdout, config, hold_setup, prefix="holdout_",
                                             masks=cohort_data.holdout_masks(cohort, hold)))
    with timing.phase("export"):
        models = export_models(run, data, cohort.patient_ids, classes, anatomy, run.anatomy_results(), config,
                               image_results=results, holdout_inputs=hold_inputs)
    figure = write_figure1(results, run.figures / "figure1.png")
    meta = {
        "data": str(data), "test_data": None if test_data is None else str(test_data),
        "classes": list(classes), "n_patients": len(cohort.patient_ids), "n_slices": len(cohort.prepared),
        **cohort.masks.to_keys(),
        "test_masks_note": None if hold is None else hold.masks.note,
        "test_masks_out_of_sample": None if hold is None else hold.masks.out_of_sample,
        "duplicate_scans": {"data": [list(d) for d in cohort.duplicates],
                            "test_data": None if test_data is None else [list(d) for d in hold.duplicates]},
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
                   config: StudyConfig, setup: TableSetup, *, masks: MasksOrigin, prefix: str = "") -> dict:
    """The anatomy model on every split, Table 4 and the robustness CSV (`cmrprior.experiments.anatomy_stage`)."""
    results, robustness, hybrids = [], [], []
    for split in splits:
        with timing.phase("anatomy"):
            r, rows, model = run_anatomy_split(run, split, inputs, config.anatomy, classes=setup.classes,
                                               cv_folds=config.protocol.cv_folds, masks=masks)
        results.append(r)
        robustness += rows
        if model is not None and config.anatomy.hybrid:
            with timing.phase("hybrids"):
                hybrids += run_hybrid_split(run, split, model, inputs, image_results)
    md = write_anatomy_table(results, image_results, run.tables, setup=setup, masks_line=masks_line(masks),
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
    # the thread count too: another count sums floats in another order, and trained networks carry that on
    return {"cmrprior": cmrprior.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "torch_threads": torch.get_num_threads()}
