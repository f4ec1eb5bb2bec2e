"""Cross-validated hyperparameter choice on cached features."""

import numpy as np
import pytest

from cmrprior.classify.search import cv_search_linear
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
