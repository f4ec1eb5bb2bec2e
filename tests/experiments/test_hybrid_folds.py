"""The hybrid's CV runs on the image cell's folds, and so do both of its parts: the anatomy model's out-of-fold
probabilities are refitted without each image fold (its own CV folds split the same patients otherwise)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import cmrprior.experiments.hybrid_stage as hybrid_stage
from cmrprior.anatomy.measures_csv import MeasuresRow
from cmrprior.classify.anatomy import fit_anatomy, signed_log
from cmrprior.classify.config import AnatomyConfig
from cmrprior.evaluate.metrics import classification_metrics
from cmrprior.experiments.anatomy_stage import AnatomyInputs
from cmrprior.runs import CellResult, RunFolder, SplitSpec

CLASSES = ["A", "B", "C"]


def test_anatomy_out_of_fold_probabilities_follow_the_image_cells_folds(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ids = [f"p{i:02d}" for i in range(30)]
    labels = [i % 3 for i in range(30)]
    rows = {p: MeasuresRow(p, CLASSES[y], {"lv_edv_ml": 100 + 30 * y + rng.normal(0, 20),
                                           "lvef": 55 - 10 * y + rng.normal(0, 8), "mass": 90 + rng.normal(0, 15)})
            for p, y in zip(ids, labels)}
    train, test = ids[:24], ids[24:]
    model = fit_anatomy([rows[p].values for p in train], labels[:24], n_classes=3,
                        config=AnatomyConfig(families=("logistic",), cs=(1.0,)), cv_folds=3, seed=5, train_ids=train)
    image_folds = [(i // 3) % 3 for i in range(24)]  # the image cell's folds (every class in each): not the anatomy CV's
    probs = rng.dirichlet(np.ones(3), size=24)
    test_probs = rng.dirichlet(np.ones(3), size=6)
    y_test = np.array(labels[24:])
    cell = CellResult.from_json({
        "backbone": "tiny", "init": "none", "images": "full", "split": "0", "classes": CLASSES, "seed": 0,
        "masks_source": "segmenter", "masks_note": "", "image_mode": "full", "input_size": 32, "mode": "linear",
        "status": "ok", "train_oof": {"patient_ids": train, "labels": labels[:24], "probabilities": probs.tolist(),
                                      "folds": image_folds},
        "test": {"patient_ids": test, "labels": y_test.tolist(), "probabilities": test_probs.tolist(),
                 "metrics": classification_metrics(y_test, test_probs, CLASSES)}})
    captured = {}
    real = hybrid_stage.fit_hybrid

    def spy(labels_, image_oof, anatomy_oof, measures, folds, *rest, **kw):
        captured.update(anatomy_oof=anatomy_oof, folds=folds)
        return real(labels_, image_oof, anatomy_oof, measures, folds, *rest, **kw)

    monkeypatch.setattr(hybrid_stage, "fit_hybrid", spy)
    (result,) = hybrid_stage.run_hybrid_split(RunFolder(tmp_path), SplitSpec("0", 3, tuple(train), tuple(test)), model,
                                              AnatomyInputs.from_rows(tuple(rows.values()), ()), [cell])
    fold_rows = [np.flatnonzero(np.array(image_folds) == f) for f in range(3)]
    assert result.ok and [f.tolist() for f in captured["folds"]] == [f.tolist() for f in fold_rows]
    x = model.matrix([rows[p].values for p in train])
    y = np.array(labels[:24])
    expected = np.zeros((24, 3))
    for f in range(3):  # an independent reference: the chosen logistic model refitted without each image fold
        va = fold_rows[f]
        tr = np.setdiff1d(np.arange(24), va)
        ref = make_pipeline(FunctionTransformer(signed_log), StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        expected[va] = ref.fit(x[tr], y[tr]).predict_proba(x[va])
    np.testing.assert_allclose(captured["anatomy_oof"], expected, atol=1e-8)
    assert not np.allclose(model.out_of_fold(train), expected, atol=1e-3)  # the anatomy CV's own folds differ
