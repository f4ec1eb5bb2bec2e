"""Confidence intervals against hand values and a slow reference."""

import math

import numpy as np
import pytest
from scipy import stats

from cmrprior.evaluate.ci import bootstrap_ci, stratified_resample, t_interval
from cmrprior.evaluate.metrics import macro_auc


def test_t_interval_hand_value():
    v = [0.8, 0.9, 0.85, 0.75, 0.95]
    mean, lo, hi = t_interval(v)
    sd = math.sqrt(sum((x - 0.85) ** 2 for x in v) / 4)  # 0.0790569
    half = 2.7764451 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert mean == pytest.approx(0.85)
    assert lo == pytest.approx(0.85 - half, abs=1e-6) and hi == pytest.approx(0.85 + half, abs=1e-6)


def test_t_interval_single_value_has_no_interval():
    m, lo, hi = t_interval([0.7])
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)


def test_stratified_resample_keeps_class_counts():
    y = np.array([0, 0, 0, 1, 1, 2])
    idx = stratified_resample(y, np.random.default_rng(0))
    assert np.array_equal(np.bincount(y[idx]), [3, 2, 1])


def test_bootstrap_ci_matches_slow_reference_and_covers_point():
    rng = np.random.default_rng(0)
    per_split = []
    for _ in range(2):
        y = np.repeat(np.arange(3), 8)
        p = rng.random((24, 3)) + np.eye(3)[y]
        per_split.append((y, p / p.sum(1, keepdims=True)))
    point, lo, hi = bootstrap_ci(per_split, macro_auc, n_boot=200, seed=7)
    # slow reference: the same resampling written out by hand
    ref_rng = np.random.default_rng(7)
    draws = []
    for _ in range(200):
        vals = []
        for y, p in per_split:
            idx = np.concatenate([ref_rng.choice(np.flatnonzero(y == k), size=(y == k).sum(), replace=True) for k in np.unique(y)])
            vals.append(macro_auc(y[idx], p[idx]))
        draws.append(np.mean(vals))
    assert point == pytest.approx(np.mean([macro_auc(y, p) for y, p in per_split]))
    assert lo == pytest.approx(np.quantile(draws, 0.025)) and hi == pytest.approx(np.quantile(draws, 0.975))
    assert lo < point < hi


def test_bootstrap_interval_shrinks_with_more_patients():
    rng = np.random.default_rng(1)

    def data(n):
        y = np.repeat([0, 1], n)
        s = rng.normal(size=2 * n) + y
        return [(y, np.stack([1 - s, s], 1))]

    _, lo1, hi1 = bootstrap_ci(data(15), macro_auc, n_boot=300, seed=0)
    _, lo2, hi2 = bootstrap_ci(data(400), macro_auc, n_boot=300, seed=0)
    assert (hi2 - lo2) < 0.5 * (hi1 - lo1)
