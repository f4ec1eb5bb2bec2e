"""The "Hybrid" models of the study: each finished image cell of a split combined with the split's anatomy
model (`cmrprior.classify.hybrid.fit_hybrid`: late fusion or stacking, chosen by CV on the training part).

Inputs per image cell: its training patients' out-of-fold probabilities (`CellResult.train_oof`, recorded by
the cell's own CV search) and test probabilities; the anatomy model's out-of-fold probabilities of the same
patients on the SAME folds (`cmrprior.classify.anatomy.refit_out_of_fold`: its chosen candidate refitted
without each of the image cell's folds, so that in every fold of the hybrid's CV neither part was trained on
that fold's patients) and its test probabilities; the measures themselves. Nothing here sees a test patient's label. The result is written as a
`CellResult` under the image cell's key with `vocab.hybrid_images` as its images
(`RUN/splits/split_i/hybrid/...`, outside `cells/`).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from cmrprior.classify.anatomy import AnatomyModel, refit_out_of_fold, signed_log
from cmrprior.classify.hybrid import HybridFit, fit_hybrid
from cmrprior.data.splits import assert_disjoint
from cmrprior.evaluate.metrics import classification_metrics, none_if_nan
from cmrprior.experiments.anatomy_stage import AnatomyInputs
from cmrprior.runs import CellResult, RunFolder, SplitSpec, TestMetrics, TestOutputs
from cmrprior.utils.seeding import derive_seed
from cmrprior.vocab import hybrid_images

log = logging.getLogger(__name__)


def run_hybrid_split(run: RunFolder, split: SplitSpec, model: AnatomyModel, inputs: AnatomyInputs,
                     image_results: list[CellResult]) -> list[CellResult]:
    """A hybrid for every finished image cell of `split` that recorded out-of-fold probabilities; written
    and returned. Cells without them (older runs) are skipped with a log line."""
    out = []
    for cell in image_results:
        if cell.key.split != split.name or not cell.ok:
            continue
        if cell.train_oof is None:
            log.warning("cell %s has no out-of-fold probabilities (an older run): no hybrid", run.cell_dir(cell.key))
            continue
        out.append(_hybrid(run, split, model, inputs, cell))
    return out


def fit_cell_hybrid(split: SplitSpec, model: AnatomyModel, inputs: AnatomyInputs, cell: CellResult) -> HybridFit:
    """The hybrid of one finished image cell of `split` with the split's anatomy model (module docstring); the
    study's fit, and the model bundle's (`cmrprior.experiments.export_stage`), which fits it again."""
    oof, test = cell.train_oof, cell.test
    assert_disjoint("hybrid training", oof.patient_ids, test.patient_ids)
    assert_disjoint("hybrid training", split.train, split.test)
    seed = derive_seed(split.seed, "hybrid", *cell.key.config)
    train_values = [inputs.measures[p].values for p in oof.patient_ids]
    test_values = [inputs.measures[p].values for p in test.patient_ids]
    folds = np.asarray(oof.folds)
    fold_rows = [np.flatnonzero(folds == f) for f in np.unique(folds)]
    return fit_hybrid(
        np.asarray(oof.labels), np.asarray(oof.probabilities),
        refit_out_of_fold(model, train_values, oof.labels, fold_rows, derive_seed(seed, "anatomy")),
        signed_log(model.matrix(train_values)), fold_rows,
        np.asarray(test.probabilities), model.predict_proba(test_values), signed_log(model.matrix(test_values)),
        seed=seed)


def _hybrid(run: RunFolder, split: SplitSpec, model: AnatomyModel, inputs: AnatomyInputs, cell: CellResult
            ) -> CellResult:
    t0 = time.time()
    test = cell.test
    fit = fit_cell_hybrid(split, model, inputs, cell)
    y = np.asarray(test.labels)
    probs = fit.test_probabilities
    key = dataclasses.replace(cell.key, images=hybrid_images(cell.key.images))
    result = dataclasses.replace(
        cell, key=key, mode=fit.choice, reason=None, traceback=None, history=(), history_source=None,
        final_train_loss=None, checkpoint=None, train_oof=None, wall_s=time.time() - t0,
        hyperparameters={"fusion": fit.choice, "anatomy_model": model.chosen.describe()},
        search={"cv_auc": fit.cv_auc,
                "fold_auc": {k: [none_if_nan(a) for a in v] for k, v in fit.fold_auc.items()},
                "image_cell": str(run.cell_dir(cell.key).relative_to(run.root))},
        test=TestOutputs(list(test.patient_ids), y.tolist(), probs.tolist(),
                         TestMetrics(**classification_metrics(y, probs, cell.classes))),
        seen_patient_ids={**cell.seen_patient_ids, "hybrid": sorted(cell.train_oof.patient_ids)})
    run.write_cell(result)
    return result
