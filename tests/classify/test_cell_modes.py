"""One study cell in each training mode (`cmrprior.experiments.cell.run_cell`): the mode comes from the
initialisation, both modes record a CV search inside the training part, the saved model reproduces the scores."""

import numpy as np
import pytest
from test_train import toy_set

from cmrprior.classify.config import ClassifierConfig
from cmrprior.classify.model import load_classifier
from cmrprior.classify.train import predict_proba
from cmrprior.evaluate.metrics import patient_probabilities
from cmrprior.experiments.cell import CellJob, run_cell
from cmrprior.runs import CellKey, MasksOrigin, RunFolder


@pytest.mark.parametrize("modes,expected", [({}, "finetune"), ({"none": "linear"}, "linear")])
def test_none_cell_trains_in_its_mode(tmp_path, modes, expected):
    data = toy_set(n_patients=15, slices=2, size=16)
    ids = data.patient_ids
    job = CellJob(key=CellKey("0", "tiny", "none", "full"), split_seed=4, train_ids=ids[:12], test_ids=ids[12:],
                  pretrained=(), classes=("a", "b", "c"), masks=MasksOrigin("ground_truth"), image_mode="full",
                  cv_folds=2)
    c = ClassifierConfig(backbones=("tiny",), modes=modes, input_size=16, lrs=(1e-3, 3e-2), max_epochs=4,
                         finetune_lrs=(1e-3, 3e-2), finetune_max_epochs=4, batch_size=8, patience=2)
    run = RunFolder(tmp_path)
    res = run_cell(run, job, data, c)
    assert res.ok and res.mode == expected
    assert res.history_source.startswith("mean over CV folds") and len(res.history) == 4
    assert res.search["n_folds"] == 2 and res.hyperparameters["lr"] in (1e-3, 3e-2)
    assert 1 <= res.hyperparameters["epochs"] <= 4
    assert res.history[res.hyperparameters["epochs"] - 1].val_auc == pytest.approx(res.search["cv_auc"])
    assert set(res.seen_patient_ids) >= {"search", "train"}
    for seen in res.seen_patient_ids.values():
        assert not set(seen) & set(job.test_ids)
    model, _ = load_classifier(run.model_path(job.key))
    test = data.subset_patients(list(job.test_ids))
    probs = patient_probabilities(predict_proba(model, test), test.patient_index, test.n_patients)
    np.testing.assert_allclose(probs, np.array(res.test.probabilities), atol=1e-6)
    # out-of-fold probabilities: every training patient once, no test patient, labels as given, rows sum to 1
    oof = run.read_cell(job.key).train_oof  # as read back from result.json
    assert sorted(oof.patient_ids) == sorted(job.train_ids)
    label_of = dict(zip(data.patient_ids, data.patient_labels.tolist()))
    assert oof.labels == [label_of[p] for p in oof.patient_ids]
    np.testing.assert_allclose(np.array(oof.probabilities).sum(axis=1), 1.0, atol=1e-6)
    assert sorted(set(oof.folds)) == [0, 1] and len(oof.folds) == len(oof.patient_ids)


def test_linear_cell_standardises_inside_each_inner_fold(tmp_path, monkeypatch):
    """Each CV fold's output layer sees features standardised with its own inner-training slices (mean 0, sd 1
    there), never with statistics that include its inner-validation patients; the final fit with all training
    patients'."""
    import cmrprior.classify.search as search
    import cmrprior.experiments.cell as cell

    seen = []

    def record(fit):
        def wrapped(head, x, y, **kw):
            seen.append((np.asarray(x, np.float64), None if kw.get("val") is None else np.asarray(kw["val"][0])))
            return fit(head, x, y, **kw)
        return wrapped

    monkeypatch.setattr(search, "fit_head", record(search.fit_head))
    monkeypatch.setattr(cell, "fit_head", record(cell.fit_head))
    data = toy_set(n_patients=15, slices=2, size=16)
    ids = data.patient_ids
    job = CellJob(key=CellKey("0", "tiny", "none", "full"), split_seed=4, train_ids=ids[:12], test_ids=ids[12:],
                  pretrained=(), classes=("a", "b", "c"), masks=MasksOrigin("ground_truth"), image_mode="full",
                  cv_folds=2)
    c = ClassifierConfig(backbones=("tiny",), modes={"none": "linear"}, input_size=16, lrs=(1e-3,), max_epochs=2,
                         batch_size=8)
    assert c.standardize and run_cell(RunFolder(tmp_path), job, data, c).ok
    folds, final = [s for s in seen if s[1] is not None], [s for s in seen if s[1] is None]
    assert len(folds) == 2 and len(final) == 1
    for x, _ in folds + final:
        varying = x.std(0) > 1e-3
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(x.std(0)[varying], 1.0, atol=1e-3)
