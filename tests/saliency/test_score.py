"""In-heart score against hand-computed values; the summary's intervals against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cmrprior.errors import ConfigError
from cmrprior.saliency.score import (
    heart_area_fraction,
    in_heart_share,
    patient_scores,
    summarize_scores,
)


def test_in_heart_share_by_hand():
    sal = np.zeros((3, 2, 2))
    sal[0] = [[3.0, 1.0], [-5.0, 0.0]]  # positive mass 4, inside (top-left) 3 -> 0.75
    sal[1] = [[0.0, 2.0], [2.0, 0.0]]  # inside none -> 0.0
    sal[2] = [[-1.0, 0.0], [0.0, -2.0]]  # no positive saliency -> NaN
    heart = np.zeros((3, 2, 2), bool)
    heart[:, 0, 0] = True
    share = in_heart_share(sal, heart)
    assert share[0] == pytest.approx(0.75)
    assert share[1] == 0.0
    assert math.isnan(share[2])
    assert heart_area_fraction(heart).tolist() == [0.25, 0.25, 0.25]
    uniform = in_heart_share(np.ones((3, 2, 2)), heart)
    np.testing.assert_allclose(uniform, heart_area_fraction(heart))
    with pytest.raises(ConfigError):
        in_heart_share(np.zeros((2, 2)), np.zeros((2, 2), bool))


def test_patient_scores_mean_of_images_both_branches():
    ed = np.array([0.5, 1.0, np.nan, 0.2])
    es = np.array([0.0, np.nan, np.nan, 0.4])
    ids = ["a", "a", "b", "c"]
    out = patient_scores(ed, es, ids)
    assert list(out) == ["a", "b", "c"]
    assert out["a"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert math.isnan(out["b"])
    assert out["c"] == pytest.approx(0.3)


def test_summary_mean_and_the_tables_interval():
    by_split = {
        0: {"a": 0.2, "b": 0.4, "c": float("nan")},
        1: {"a": 0.6, "d": 0.8},
        2: {"b": 0.5, "d": 0.7},
    }
    s = summarize_scores(by_split, test_train_ratio=0.5, n_boot=500, seed=3)
    means = np.array([0.3, 0.7, 0.6])
    assert s.split_means == pytest.approx(tuple(means))
    assert s.mean == pytest.approx(means.mean())
    # corrected resampled t across splits (as the study tables), variance (1/J + n_test/n_train) s^2
    half = stats.t.ppf(0.975, 2) * np.sqrt((1 / 3 + 0.5) * means.var(ddof=1))
    assert s.ci_splits == pytest.approx((max(means.mean() - half, 0.0), min(means.mean() + half, 1.0)))
    assert s.ci_splits[0] == 0.0  # clipped: a share is never negative
    assert s.n_splits == 3 and s.n_patients == 3  # "c" has no finite score
    assert all(math.isnan(x) for x in s.ci_boot)  # several splits: the tables' interval only


def test_bootstrap_matches_slow_reference_single_split():
    rng = np.random.default_rng(0)
    vals = rng.uniform(size=12)
    ids = [f"p{i:02d}" for i in range(12)]
    s = summarize_scores({0: dict(zip(ids, vals))}, test_train_ratio=0.0, n_boot=4000, seed=1)
    # slow reference: plain percentile bootstrap of the mean over patients (one split: one model)
    r = np.random.default_rng(11)
    ref = [vals[r.integers(0, 12, 12)].mean() for _ in range(4000)]
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert s.ci_boot[0] == pytest.approx(lo, abs=0.02)
    assert s.ci_boot[1] == pytest.approx(hi, abs=0.02)
    assert math.isnan(s.ci_splits[0])  # one split: no interval across splits
    with pytest.raises(ConfigError):
        summarize_scores({0: {"a": float("nan")}}, test_train_ratio=0.0)
