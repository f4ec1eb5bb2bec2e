"""An anatomy bundle trained on a whole labelled cohort, with an honest estimate: `cmrprior bundle train-anatomy`.

This is how the shipped ACDC bundle is made (`src/cmrprior/weights/MODEL_CARD.md`), and how a user turns their
own labelled cohort into a model that `cmrprior diagnose` applies.

1. Measures from the study's own data path (`cmrprior.experiments.cohort_data.prepare_data`): images only,
   each patient segmented by a model of the segmenter set that never saw it, duplicate scans kept once.
2. The estimate: repeated stratified k-fold over the cohort, nested: in every outer training part,
   `fit_anatomy` makes its own choice of family and hyperparameters by CV on that part only, and the fitted
   model scores the outer held-out part. Macro AUC and accuracy per outer fold, their mean and the corrected
   resampled t interval over the `repeats x k` folds (Bouckaert & Frank 2004); the out-of-fold predictions of
   every repeat in `RUN/cv_predictions.csv`, the figures in `RUN/estimate.json`.
3. The bundle: the same recipe fitted on every patient (`RUN/bundle/`), its card holding the estimate.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cmrprior.bundle.export import export_anatomy_bundle
from cmrprior.classify.anatomy import fit_anatomy
from cmrprior.data.splits import stratified_kfold
from cmrprior.errors import ConfigError, DataError
from cmrprior.utils.intervals import t_interval
from cmrprior.evaluate.metrics import macro_auc
from cmrprior.experiments.anatomy_stage import AnatomyInputs
from cmrprior.experiments.cohort_data import prepare_data
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.export_stage import fit_final_anatomy, training_scans
from cmrprior.io.cohort import open_cohort
from cmrprior.anatomy.measures_csv import has_current_measures, read_measures_csv
from cmrprior.utils import atomic
from cmrprior.utils.runfolder_checks import check_out_dir, input_fingerprint
from cmrprior.utils.seeding import derive_seed

log = logging.getLogger(__name__)


def nested_cv_estimate(values: Sequence[Mapping[str, float | None]], labels: Sequence[str], ids: Sequence[str],
                       classes: Sequence[str], config: StudyConfig, *, repeats: int, folds: int, seed: int,
                       level: float = 0.95) -> tuple[dict, list[dict]]:
    """(figures, out-of-fold rows) of the anatomy recipe by nested repeated k-fold CV (module docstring)."""
    lut = {c: i for i, c in enumerate(classes)}
    y = np.array([lut[x] for x in labels])
    pos = {p: i for i, p in enumerate(ids)}
    aucs, accs, rows = [], [], []
    for r in range(repeats):
        for k, split in enumerate(stratified_kfold(list(ids), y.tolist(), k=folds, seed=derive_seed(seed, "nested", r))):
            tr, te = [pos[p] for p in split.train], [pos[p] for p in split.test]
            model = fit_anatomy([values[i] for i in tr], y[tr].tolist(), n_classes=len(classes), config=config.anatomy,
                                cv_folds=config.protocol.cv_folds, seed=derive_seed(seed, "anatomy", r, k),
                                train_ids=[ids[i] for i in tr], class_names=list(classes))
            p = model.predict_proba([values[i] for i in te])
            aucs.append(macro_auc(y[te], p))
            accs.append(float(np.mean(p.argmax(1) == y[te])))
            rows += [{"repeat": r, "fold": k, "patient_id": ids[i], "label": labels[i],
                      "predicted": classes[int(p[j].argmax())], "model": model.chosen.describe(),
                      **{f"prob_{c}": f"{p[j, c_i]:.6f}" for c_i, c in enumerate(classes)}} for j, i in enumerate(te)]
            log.info("nested CV: repeat %d fold %d: %s, macro AUC %.3f, accuracy %.3f", r, k, model.chosen.describe(),
                     aucs[-1], accs[-1])
    ratio = 1.0 / (folds - 1)
    auc, auc_lo, auc_hi = t_interval(aucs, ratio, level)
    acc, acc_lo, acc_hi = t_interval(accs, ratio, level)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for row in rows:
        confusion[lut[row["label"]], lut[row["predicted"]]] += 1
    figures = {"macro_auc": auc, "macro_auc_interval": [max(0.0, auc_lo), min(1.0, auc_hi)],
               "accuracy": acc, "accuracy_interval": [max(0.0, acc_lo), min(1.0, acc_hi)],
               "protocol": f"nested CV: {repeats} x stratified {folds}-fold over {len(ids)} patients (seed {seed}); "
                           f"the recipe's own choice by {config.protocol.cv_folds}-fold CV inside every outer training "
                           f"part; {100 * level:.0f}% corrected resampled t intervals over the {len(aucs)} outer folds",
               "confusion_rows_true_columns_predicted": {"classes": list(classes), "counts": confusion.tolist()}}
    return figures, rows


def _bind(out: Path, data: str | Path, config: StudyConfig) -> None:
    """Tie the run folder to its input and config: a rerun with others is refused (its measures would be stale)."""
    bound = {"data_fingerprint": input_fingerprint(data), "config_digest": config.digest()}
    path = out / "inputs.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != bound:
            raise ConfigError(f"{out}: this run folder was made from other data or another config ({path}); "
                              "use a new --out")
    else:
        atomic.write_json(path, bound)


def train_anatomy_bundle(data: str | Path, out: str | Path, config: StudyConfig, *, repeats: int = 5, folds: int = 5,
                         seed: int = 0) -> Path:
    """Measure the cohort at `data`, estimate the recipe by nested CV, fit it on everyone and write the bundle
    to `out/bundle`; returns that folder. A rerun reuses the measures of `out/measures.csv` when they are this
    version's (`has_current_measures`), else it measures again.

    Raises:
        DataError: unreadable cohort, patients without a label. LeakageError: see `prepare_data`.
    """
    t0 = time.time()
    out = check_out_dir(out, [data])
    _bind(out, data, config)
    measures_csv = out / "measures.csv"
    if measures_csv.exists() and not has_current_measures(measures_csv):
        log.info("%s holds the measures of another cmrprior version: measuring again", measures_csv)
    if not has_current_measures(measures_csv):
        prepare_data(data, config, cache_dir=out / "cache", qc_dir=out / "qc",
                     measures_to=(out / ".measures.csv", out / "perturbed_measures.csv"))
        (out / ".measures.csv").replace(measures_csv)
    rows = read_measures_csv(measures_csv)
    unlabelled = [r.patient_id for r in rows if not r.label]
    if unlabelled:
        raise DataError(Path(data), f"patients without a label: {unlabelled[:5]}")
    ids = [r.patient_id for r in rows]
    labels = [r.label for r in rows]
    classes = tuple(sorted(set(labels)))
    inputs = AnatomyInputs.from_rows(tuple(rows), ())
    values = [r.values for r in rows]
    figures, oof = nested_cv_estimate(values, labels, ids, classes, config, repeats=repeats, folds=folds, seed=seed,
                                      level=config.evaluation.level)
    atomic.write_json(out / "estimate.json", figures)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(oof[0]))
    writer.writeheader()
    writer.writerows(oof)
    atomic.write_text(out / "cv_predictions.csv", buf.getvalue())
    model = fit_final_anatomy(ids, inputs, classes, config)
    recs = {r.patient_id: r for r in open_cohort(Path(data)).patients}
    acquisitions, prints = training_scans([recs[p] for p in ids])
    bundle = export_anatomy_bundle(
        out / "bundle", model, name=out.name, classes=classes, train_values=values, train_labels=labels,
        acquisitions=acquisitions, segmenter=config.masks.model, estimate=figures, training_fingerprints=prints,
        made_by=f"cmrprior anatomy-bundle --data {Path(data).name} --out {out.name} --config {config.name} "
                f"--repeats {repeats} --folds {folds} --seed {seed}")
    log.info("anatomy bundle %s: nested CV macro AUC %.3f [%.3f, %.3f], accuracy %.3f (%.0f s)", bundle,
             figures["macro_auc"], *figures["macro_auc_interval"], figures["accuracy"], time.time() - t0)
    return bundle
