"""Cross-validation of the segmenter: patient-level stratified folds, held-out Dice/Hausdorff per fold.

Each fold trains with `train_segmenter` on the other folds (which split off their own validation
patients for early stopping), predicts its held-out patients (post-processed) and scores them with
`qc.evaluate_prepared`. Folds that finished (their `metrics.csv` exists) are not redone, so a killed
cross-validation resumes; a fold killed mid-training resumes from its checkpoint. One fold can be trained on its
own (`only_fold`), so that a long cross-validation is made in pieces that each fit a session.

Run folder: `fold_<k>/` (training run, `metrics.csv`, `test_patients.json`), `cv_metrics.csv` (all
held-out rows), `cv_summary.csv` (mean and 95% t-interval per metric and phase).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.data.prepared import PreparedCohort
from cmrprior.data.splits import stratified_kfold
from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation import qc
from cmrprior.segmentation.predict import segment_prepared
from cmrprior.segmentation.config import RUN_SETTINGS
from cmrprior.segmentation.train import MODEL_FILE, SegTrainConfig, train_segmenter
from cmrprior.utils import atomic
from cmrprior.utils.training import check_config_change

log = logging.getLogger(__name__)

FOLD_SPLIT_FILE = "test_patients.json"  # per fold: {"train": ids, "test": ids}


@dataclass(frozen=True)
class FoldSplit:
    """One fold's patients: those its model trained on (validation included) and those it held out."""

    train: tuple[str, ...]
    test: tuple[str, ...]

    def same_patients(self, other: FoldSplit) -> bool:
        return sorted(self.train) == sorted(other.train) and sorted(self.test) == sorted(other.test)

    def write(self, path: Path) -> Path:
        return atomic.write_json(path, {"train": list(self.train), "test": list(self.test)})


def read_fold_split(path: Path) -> FoldSplit:
    """The `FOLD_SPLIT_FILE` at `path`; DataError naming it when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
        return FoldSplit(tuple(data["train"]), tuple(data["test"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(path, f"unreadable fold split ({type(exc).__name__}: {exc})") from exc


def make_folds(prepared: PreparedCohort, k: int, seed: int, duplicates: Sequence[tuple[str, str]] = ()
               ) -> list[tuple[list[str], list[str]]]:
    """`k` patient-level folds, stratified by class when possible: (train ids, held-out ids) per fold.

    `duplicates`: (kept id, duplicate id) pairs of patients with the same images
    (`segmentation.folds.duplicate_images`). A duplicate is held out in its kept patient's fold, so that some
    fold model never saw that scan: split apart, every fold model would have trained on one of the two, and
    neither could get out-of-sample masks. Training ids keep the cohort's order.
    """
    ids = prepared.patient_ids
    labels = [p.label for p in prepared.patients]
    try:
        tests = [list(s.test) for s in stratified_kfold(ids, labels, k=k, seed=seed)]
    except ConfigError:
        if k < 2 or k > len(ids):
            raise
        from sklearn.model_selection import KFold  # scikit-learn takes ~2 s to import: only on this fallback

        kf = KFold(n_splits=k, shuffle=True, random_state=seed % (2**32))
        tests = [[ids[i] for i in te] for _, te in kf.split(np.zeros(len(ids)))]
    fold_of = {pid: f for f, test in enumerate(tests) for pid in test}
    for kept, dup in duplicates:
        if kept in fold_of and dup in fold_of and fold_of[kept] != fold_of[dup]:
            tests[fold_of[dup]].remove(dup)
            tests[fold_of[kept]].append(dup)
            fold_of[dup] = fold_of[kept]
    return [([p for p in ids if fold_of[p] != f], test) for f, test in enumerate(tests)]


def _check_fold_split(path: Path, split: FoldSplit) -> None:
    """A fold folder made with other patients (another seed, cohort or grouping) must not be resumed."""
    if path.exists() and not read_fold_split(path).same_patients(split):
        raise DataError(path, "this fold was made with other patients than the folds computed now (another "
                              "cohort, seed or duplicate grouping); resuming it would mix two splits. Use a new "
                              "run folder")


def _read_csv(path: Path) -> list[dict]:
    def conv(v: str):
        if v in ("True", "False"):
            return v == "True"
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as fh:
        return [{k: conv(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def init_weights(init_cv: Path, k: int, split: FoldSplit) -> Path:
    """Fold `k`'s initial weights from an earlier cross-validation folder `init_cv`: its fold `k` model, which
    must have held out exactly this fold's patients (any other fold model saw some of them, and starting from it
    would leak their masks into the held-out Dice).

    Raises:
        DataError: that fold's model or split is missing, or its patients differ.
    """
    fold_dir = Path(init_cv) / f"fold_{k}"
    if not read_fold_split(fold_dir / FOLD_SPLIT_FILE).same_patients(split):
        raise DataError(fold_dir / FOLD_SPLIT_FILE, f"fold {k} of the initial cross-validation held out other "
                                                    "patients than this run's fold; its model saw some of them")
    weights = fold_dir / MODEL_FILE
    if not weights.is_file():
        raise DataError(weights, f"fold {k} of the initial cross-validation has no finished model")
    return weights


def _check_finished_fold(fold_dir: Path, config: SegTrainConfig, per_fold_init: bool) -> None:
    """A finished fold is reused only when it was trained under this run's recipe: fold folders copied in from
    other runs (one fold per session, `only_fold`) must not mix recipes in one summary. `per_fold_init`: each fold
    started from its own weights (`init_weights`), so the initial weights are not compared."""
    meta_path = (fold_dir / MODEL_FILE).with_suffix(".json")
    try:
        stored = json.loads(meta_path.read_text())["config"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(meta_path, f"finished fold without a readable training config ({type(exc).__name__}: "
                                   f"{exc})") from exc
    may_differ = RUN_SETTINGS | ({"init", "init_sha256"} if per_fold_init else set())
    as_stored = lambda c: json.loads(json.dumps(c.to_json()))  # noqa: E731  tuples become lists
    # read back through the dataclass, so that a setting added since the fold was trained takes its default
    check_config_change(as_stored(SegTrainConfig.from_json(stored)), as_stored(config), may_differ, meta_path,
                        "segmenter fold")


def cross_validate(prepared: PreparedCohort, config: SegTrainConfig, out_dir: str | Path, *, folds: int = 2,
                   duplicates: Sequence[tuple[str, str]] = (), init_cv: str | Path | None = None,
                   only_fold: int | None = None) -> list[dict]:
    """Run (or resume) `folds`-fold cross-validation (`duplicates`: see `make_folds`); returns the held-out QC
    rows (with a `fold` key) of the folds finished so far. With `init_cv` (the folder of an earlier
    cross-validation of the same folds), each fold starts from that run's model of the same fold (`init_weights`).

    `only_fold`: train only that fold (its patients are those of the same fold of a full run: the folds are
    computed from the whole cohort either way); the other folds are left as they are. Folds can so be trained in
    separate runs, in any order, in this folder or in others whose `fold_k/` folders are copied in later; the
    summaries (`cv_metrics.csv`, `cv_summary.csv`, `cv.json`) are written, identical to a full run's, by the run
    that finds every fold finished. A finished fold trained under another recipe is refused.

    Raises:
        DataError: a fold folder of `out_dir` was made with other patients than this cohort's folds; an
            `init_cv` fold that does not match. ConfigError: `only_fold` out of range; a finished fold trained
            with another config.
    """
    if only_fold is not None and not 0 <= only_fold < folds:
        raise ConfigError(f"only_fold must be one of 0..{folds - 1} (a {folds}-fold cross-validation), got {only_fold}")
    out_dir = Path(out_dir)
    all_rows: list[dict] = []
    unfinished: list[int] = []
    for k, (train_ids, test_ids) in enumerate(make_folds(prepared, folds, config.seed, duplicates)):
        fold_dir = out_dir / f"fold_{k}"
        metrics_path = fold_dir / "metrics.csv"
        split = FoldSplit(tuple(train_ids), tuple(test_ids))
        _check_fold_split(fold_dir / FOLD_SPLIT_FILE, split)
        if metrics_path.exists():
            _check_finished_fold(fold_dir, config, per_fold_init=init_cv is not None)
        elif only_fold is not None and k != only_fold:
            unfinished.append(k)
            continue
        else:
            split.write(fold_dir / FOLD_SPLIT_FILE)
            log.info("fold %d/%d: %d train, %d held-out patients", k + 1, folds, len(train_ids), len(test_ids))
            fold_config = config.with_init(init_weights(Path(init_cv), k, split)) if init_cv else config
            model = train_segmenter(prepared.select_patients(train_ids), fold_config, fold_dir)
            if model.name != MODEL_FILE:  # stopped by max_steps: not finished
                return all_rows
            test = prepared.select_patients(test_ids)
            pred = segment_prepared(test, model)
            rows = qc.evaluate_prepared(pred, test)
            for r in rows:
                r["fold"] = k
            qc.write_csv(rows, metrics_path)
        all_rows.extend(_read_csv(metrics_path))
    if unfinished:
        log.info("folds %s not finished yet: the cross-validation summary waits for them", unfinished)
        return all_rows
    qc.write_csv(all_rows, out_dir / "cv_metrics.csv")
    qc.write_csv(qc.summarise(all_rows), out_dir / "cv_summary.csv")
    atomic.write_json(out_dir / "cv.json", {"folds": folds, "seed": config.seed, "config": config.to_json(),
                                            "n_patients": len(prepared.patients),
                                            "init_cv": str(init_cv) if init_cv else None})
    return all_rows
