"""The whole study as one function: `run_study(data, out, config, test_data=None)`.

Steps (Nakashima et al., sec. 5.1; run folder layout in `experiments/README.md`, a stable contract):

1. prepare the cohort, get heart masks (segmenter by default), build full and segmented slice pairs;
2. repeated patient-level stratified 70/30 splits (`cmrprior.data.splits.repeated_splits`);
3. per split, per backbone: SimCLR pre-training on FULL and on SEGMENTED images of the split's training
   patients only (early stopping on an inner validation part of the training patients), one run per
   pre-training batch size of the grid;
4. per split, per backbone x initialisation x training images: the ED/ES diagnosis model
   (`cmrprior.experiments.cell.run_cell`); hyperparameters by k-fold CV inside the training part;
5. tables 1-3 (mean, t-interval across splits, patient-bootstrap interval), paired comparisons, Figure 1.

With `test_data`: every configuration is also trained on the whole cohort (pre-training included) and
scored on the separate cohort (`RUN/holdout/`, `tables/holdout_*`).

Every finished piece writes its marker atomically and last (`done.json`, `result.json`); a rerun with the
same config skips finished pieces. What each stage saw is recorded and checked against the test ids.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.errors import ConfigError
from cmrprior.experiments.cell import assert_disjoint, run_cell
from cmrprior.experiments.cohort_data import CohortData, build_slice_sets, load_cohort_data, merge_slice_sets
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.pretraining import pretrain_piece
from cmrprior.utils import atomic
from cmrprior.utils.seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSpec:
    """One evaluation unit: train on `train` ids, score on `test` ids (`name`: "0", "1", ..., "holdout")."""

    name: str
    seed: int
    train: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class StudyResult:
    run_dir: Path
    tables: dict  # {"table1": Path(md), ...}
    figure: Path | None
    report: Path | None
    n_cells: int
    wall_s: float


def make_splits(ids: list[str], labels: np.ndarray, config: StudyConfig) -> list[SplitSpec]:
    from cmrprior.data.splits import repeated_splits

    p = config.protocol
    splits = repeated_splits(ids, [int(x) for x in labels], p.n_splits, p.test_fraction, p.seed)
    return [SplitSpec(str(i), int(s.seed), tuple(s.train), tuple(s.test)) for i, s in enumerate(splits)]


def _check_run_config(out: Path, config: StudyConfig) -> None:
    saved = out / "config.yaml"
    if saved.exists():
        old = StudyConfig.from_yaml(saved)
        if old.digest() != config.digest():
            raise ConfigError(
                f"{out}: this run folder was made with another config ({saved}); use a new --out or the same config"
            )
    else:
        atomic.write_text(saved, config.to_yaml())


def _load_or_make_splits(out: Path, data: CohortData, config: StudyConfig) -> list[SplitSpec]:
    path = out / "splits.json"
    if path.exists():
        rows = json.loads(path.read_text())
        return [SplitSpec(str(r["index"]), int(r["seed"]), tuple(r["train"]), tuple(r["test"])) for r in rows]
    splits = make_splits(data.patient_ids, data.patient_labels, config)
    for s in splits:
        assert_disjoint("split", s.train, s.test)
    atomic.write_json(path, [{"index": int(s.name), "seed": s.seed, "train": list(s.train), "test": list(s.test)} for s in splits])
    return splits


def run_split(
    split: SplitSpec,
    images: dict[str, SliceSet],
    folder: Path,
    config: StudyConfig,
    *,
    classes: tuple[str, ...],
    masks_source: str,
    masks_note: str,
) -> list[dict]:
    """Pre-train and train every cell of one split; returns the cell results (finished ones are reused)."""
    from cmrprior.data.splits import stratified_split

    c = config.classifier
    any_set = next(iter(images.values()))
    label_of = dict(zip(any_set.patient_ids, any_set.patient_labels.tolist()))
    # Inner validation part of the training patients: early stopping of pre-training (and finetune).
    inner = stratified_split(list(split.train), [label_of[p] for p in split.train], config.protocol.val_fraction,
                             derive_seed(split.seed, "inner"))
    inner_train, inner_val = tuple(inner.train), tuple(inner.test)
    assert_disjoint("inner validation", inner_train + inner_val, split.test)
    results = []
    for backbone in c.backbones:
        checkpoints: dict[str, list[dict]] = {}
        for kind, init in (("full", "full_sscl"), ("segmented", "segmented_sscl")):
            if init not in c.inits:
                continue
            checkpoints[init] = []
            for bs in config.pretrain.batch_sizes:
                done = pretrain_piece(
                    folder / "pretrain" / kind / backbone / f"bs{bs}",
                    images[kind],
                    train_ids=inner_train,
                    val_ids=inner_val,
                    test_ids=split.test,
                    backbone=backbone,
                    batch_size=bs,
                    settings=config.pretrain,
                    seed=derive_seed(split.seed, "pretrain", kind, backbone, bs),
                    image_kind=kind,
                )
                checkpoints[init].append(done)
        for init in c.inits:
            for kind in c.images:
                results.append(
                    run_cell(
                        folder / "cells" / backbone / f"{init}__{kind}",
                        images[kind],
                        split_name=split.name,
                        split_seed=split.seed,
                        train_ids=split.train,
                        test_ids=split.test,
                        inner_train=inner_train,
                        inner_val=inner_val,
                        backbone=backbone,
                        init=init,
                        images=kind,
                        pretrained=checkpoints.get(init, []),
                        config=config,
                        classes=classes,
                        masks_source=masks_source,
                        masks_note=masks_note,
                    )
                )
    return results


def _holdout(test_data: Path, out: Path, config: StudyConfig, data: CohortData) -> list[dict]:
    """Train on the whole cohort, score on the separate cohort `test_data`."""
    hold = load_cohort_data(test_data, config, prepared_dir=out / "holdout" / "prepared", cache_dir=out / "cache")
    classes = data.prepared.classes
    missing = sorted(set(hold.prepared.classes) - set(classes))
    lut = {c: i for i, c in enumerate(classes)}
    if missing:
        raise ConfigError(f"{test_data}: classes {missing} are not in the study cohort's classes {list(classes)}")
    images = {}
    for kind, s in hold.images.items():
        remapped = np.array([lut[hold.prepared.classes[k]] for k in s.labels], dtype=np.int64)
        s = SliceSet(ed=s.ed, es=s.es, labels=remapped, patient_index=s.patient_index, patient_ids=s.patient_ids)
        images[kind] = merge_slice_sets(data.images[kind], s)
    split = SplitSpec("holdout", config.protocol.seed, tuple(data.patient_ids), tuple(hold.patient_ids))
    note = data.masks_note or hold.masks_note
    return run_split(split, images, out / "holdout", config, classes=classes, masks_source=hold.masks_source, masks_note=note)


def run_study(
    data: str | Path,
    out: str | Path,
    config: StudyConfig,
    *,
    test_data: str | Path | None = None,
    report: bool = True,
) -> StudyResult:
    """Run (or resume) the study; see the module docstring. Returns where the outputs are.

    `report`: build engineer F's HTML report (`cmrprior.report.build_report(run_dir)`) at the end when
    that module is installed.
    """
    from cmrprior.evaluate.curves import write_figure1
    from cmrprior.evaluate.tables import write_tables

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_config(out, config)
    data_obj = load_cohort_data(data, config, prepared_dir=out / "prepared", cache_dir=out / "cache")
    classes = data_obj.prepared.classes
    splits = _load_or_make_splits(out, data_obj, config)
    log.info("study %s: %d patients, %d slices, classes %s, %d splits, masks %s",
             out, len(data_obj.patient_ids), len(data_obj.prepared), classes, len(splits), data_obj.masks_source)
    results = []
    for split in splits:
        log.info("split %s: %d train / %d test patients", split.name, len(split.train), len(split.test))
        results += run_split(split, data_obj.images, out / "splits" / f"split_{split.name}", config, classes=classes,
                             masks_source=data_obj.masks_source, masks_note=data_obj.masks_note)
    tables = write_tables(results, out / "tables", classes=classes, config=config, prefix="")
    holdout = []
    if test_data is not None:
        holdout = _holdout(Path(test_data), out, config, data_obj)
        tables.update(write_tables(holdout, out / "tables", classes=classes, config=config, prefix="holdout_"))
    figure = write_figure1(results, out / "figures" / "figure1.png")
    meta = {
        "data": str(data), "test_data": None if test_data is None else str(test_data),
        "classes": list(classes), "n_patients": len(data_obj.patient_ids), "n_slices": len(data_obj.prepared),
        "masks_source": data_obj.masks_source, "masks_note": data_obj.masks_note,
        "n_splits": len(splits), "n_results": len(results), "n_holdout_results": len(holdout),
        "config_digest": config.digest(), "versions": _versions(),
    }

    def write_meta(report_path=None) -> float:
        wall = time.time() - t0
        atomic.write_json(out / "study.json", {
            **meta, "wall_s_this_invocation": wall, "report": None if report_path is None else str(report_path),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        return wall

    write_meta()  # the report reads it
    report_path = None
    build_report = None
    if report:
        try:
            from cmrprior.report import build_report  # engineer F's module, when present
        except ImportError:
            log.info("no report module installed; skipping the HTML report")
    if build_report is not None:
        try:
            report_path = build_report(out)
        except Exception as exc:  # the report must not lose a finished study
            log.error("report failed: %s", exc)
    wall = write_meta(report_path)
    return StudyResult(out, tables, figure, None if report_path is None else Path(report_path), len(results) + len(holdout), wall)


def _versions() -> dict:
    import platform

    import torch

    import cmrprior

    return {"cmrprior": cmrprior.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__}


def load_cell_inputs(run_dir: str | Path, split: str | int, backbone: str, init: str, images: str):
    """For saliency: (model, test SliceSet it was scored on, classes, result dict) of one finished cell.

    `split` is the split index or "holdout".
    """
    from cmrprior.classify.model import load_classifier
    from cmrprior.data.prepared import PreparedCohort

    run_dir = Path(run_dir)
    config = StudyConfig.from_yaml(run_dir / "config.yaml")
    base = run_dir / "holdout" if str(split) == "holdout" else run_dir / "splits" / f"split_{split}"
    cell = base / "cells" / backbone / f"{init}__{images}"
    result = json.loads((cell / "result.json").read_text())
    model, _ = load_classifier(cell / "model.pt")
    prep_dir = run_dir / "holdout" / "prepared" if str(split) == "holdout" else run_dir / "prepared"
    prepared = PreparedCohort.load(prep_dir)
    test = build_slice_sets(prepared, config)[images].subset_patients(result["test"]["patient_ids"])
    lut = {c: i for i, c in enumerate(result["classes"])}
    labels = np.array([lut[prepared.classes[k]] for k in test.labels], dtype=np.int64)  # study's class order
    test = SliceSet(ed=test.ed, es=test.es, labels=labels, patient_index=test.patient_index, patient_ids=test.patient_ids)
    return model, test, tuple(result["classes"]), result
