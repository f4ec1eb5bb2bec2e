"""Cross-validated hyperparameter choice on cached features."""

import numpy as np
import pytest

from test_train import toy_set

from cmrprior.classify.model import build_model
from cmrprior.classify.search import cv_search_finetune, cv_search_linear
from cmrprior.classify.train import fit_end_to_end
from cmrprior.errors import ConfigError, InputError


def feats(n_patients=24, slices=2, k=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_patients) % k, slices)
    pidx = np.repeat(np.arange(n_patients), slices)
    x = rng.normal(scale=noise, size=(len(y), 8)).astype(np.float32)
    x[np.arange(len(y)), y] += 2.0
    return x, y, pidx, [f"p{i}" for i in range(n_patients)]


def folds_of(ids, k=3):
    return [([p for j, p in enumerate(ids) if (j // 3) % k != f], [p for j, p in enumerate(ids) if (j // 3) % k == f]) for f in range(k)]


def test_search_picks_working_lr_and_reports_curves():
    x, y, pidx, ids = feats()
    res = cv_search_linear(x, y, pidx, ids, folds_of(ids), n_classes=3, lrs=[1e-7, 5e-2], max_epochs=15, batch_size=8)
    assert res.lr == 5e-2  # a learning rate of 1e-7 cannot learn in 15 epochs
    assert 1 <= res.epochs <= 15 and res.cv_auc > 0.9
    assert len(res.curves["val_auc"]) == 15 and len(res.grid) == 2
    assert res.curves["val_auc"][res.epochs - 1] == pytest.approx(res.cv_auc)
    assert res.cv_auc == pytest.approx(max(v for v in res.curves["val_auc"] if v is not None))


def test_search_rejects_foreign_or_overlapping_folds():
    x, y, pidx, ids = feats()
    with pytest.raises(InputError, match="training part"):
        cv_search_linear(x, y, pidx, ids, [(ids[:10], ["stranger"])], n_classes=3, lrs=[1e-2], max_epochs=2)
    with pytest.raises(InputError, match="both sides"):
        cv_search_linear(x, y, pidx, ids, [(ids[:10], ids[5:12])], n_classes=3, lrs=[1e-2], max_epochs=2)
    with pytest.raises(ConfigError, match="at least one fold"):
        cv_search_linear(x, y, pidx, ids, [], n_classes=3, lrs=[1e-2], max_epochs=2)


def test_finetune_search_equals_a_hand_run_of_the_folds():
    """Reference: the folds trained one by one with fit_end_to_end; (lr, epochs) = argmax of the mean fold AUC
    over the epochs every fold reached."""

    data = toy_set(n_patients=12, slices=2, size=16)
    folds = [([p for j, p in enumerate(data.patient_ids) if j // 6 != f], [p for j, p in enumerate(data.patient_ids) if j // 6 == f])
             for f in range(2)]
    kw = dict(encoder_lr_ratio=0.5, max_epochs=6, patience=1, batch_size=8, weight_decay=1e-4, seed=5)
    make = lambda: build_model("tiny", "none", 3, seed=1)  # noqa: E731
    res = cv_search_finetune(make, data, folds, lrs=[1e-6, 3e-2], **kw)
    best = None
    for li, lr in enumerate([1e-6, 3e-2]):
        runs = [fit_end_to_end(make(), data.subset_patients(tr), mode="finetune", lr=lr, encoder_lr=lr * 0.5,
                               weight_decay=1e-4, epochs=6, batch_size=8, seed=5 + fi, val=data.subset_patients(va),
                               patience=1).history for fi, (tr, va) in enumerate(folds)]
        reached = min(len(h) for h in runs)
        means = [np.mean([h[e]["val_auc"] for h in runs]) for e in range(reached)]
        e = int(np.argmax(means))
        if best is None or means[e] > best[2]:
            best = (lr, e + 1, means[e])
    assert (res.lr, res.epochs) == best[:2] and res.cv_auc == pytest.approx(best[2])
    assert res.grid[0]["epochs_all_folds"] < 6  # the lr that cannot learn stops early
    assert len(res.curves["val_auc"]) == 6 and res.curves["val_auc"][res.epochs - 1] == pytest.approx(res.cv_auc)
    with pytest.raises(InputError, match="training part"):
        cv_search_finetune(make, data, [(list(data.patient_ids[:4]), ["stranger"])], lrs=[1e-2], **kw)


def test_out_of_fold_probabilities_equal_each_fold_retrained_to_the_chosen_epoch():
    """Reference: for each fold a head trained from the same start for exactly the chosen number of epochs,
    without validation, then scored on that fold's validation patients (mean slice probability)."""
    import torch
    from torch import nn

    from cmrprior.classify.train import fit_head, head_proba
    from cmrprior.evaluate.metrics import patient_probabilities

    x, y, pidx, ids = feats(noise=2.0)
    folds = folds_of(ids)
    seed = 11
    res = cv_search_linear(x, y, pidx, ids, folds, n_classes=3, lrs=[5e-2], max_epochs=8, batch_size=8, seed=seed)
    assert sorted(res.oof_patient_ids) == sorted(ids)  # every training patient once
    got = dict(zip(res.oof_patient_ids, res.oof_probabilities))
    fold_of = dict(zip(res.oof_patient_ids, res.oof_folds))
    assert all(fold_of[p] == fi for fi, (_, va) in enumerate(folds) for p in va)
    pos = {p: i for i, p in enumerate(ids)}
    for fi, (tr, va) in enumerate(folds):
        tr_rows = np.flatnonzero(np.isin(pidx, [pos[p] for p in tr]))
        torch.manual_seed(seed + 7919 * fi)
        head = nn.Linear(x.shape[1], 3)
        fit_head(head, x[tr_rows], y[tr_rows], lr=5e-2, weight_decay=1e-4, epochs=res.epochs, batch_size=8,
                 seed=seed + fi)
        for p in va:
            rows = np.flatnonzero(pidx == pos[p])
            want = patient_probabilities(head_proba(head, x[rows]), np.zeros(len(rows), np.int64), 1)[0]
            np.testing.assert_allclose(got[p], want, rtol=1e-5, atol=1e-6)
