"""Paired comparisons: DeLong against a hand-computed example and a slow reference; paired bootstrap."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cmrprior.errors import InputError
from cmrprior.evaluate.compare import delong_binary, delong_test, paired_bootstrap, paired_t
from cmrprior.evaluate.metrics import macro_auc


def slow_delong(pos, a, b):
    """DeLong 1988 written from the paper's definitions with explicit loops."""
    X = [np.asarray(s)[pos] for s in (a, b)]
    Y = [np.asarray(s)[~pos] for s in (a, b)]
    m, n = len(X[0]), len(Y[0])
    psi = lambda x, y: 1.0 if x > y else (0.5 if x == y else 0.0)  # noqa: E731
    V10 = np.array([[np.mean([psi(X[r][i], Y[r][j]) for j in range(n)]) for i in range(m)] for r in range(2)])
    V01 = np.array([[np.mean([psi(X[r][i], Y[r][j]) for i in range(m)]) for j in range(n)] for r in range(2)])
    A = V10.mean(1)
    S10 = np.array([[np.sum((V10[r] - A[r]) * (V10[s] - A[s])) / (m - 1) for s in range(2)] for r in range(2)])
    S01 = np.array([[np.sum((V01[r] - A[r]) * (V01[s] - A[s])) / (n - 1) for s in range(2)] for r in range(2)])
    S = S10 / m + S01 / n
    return A[0], A[1], S[0, 0] + S[1, 1] - 2 * S[0, 1]


def test_delong_tiny_hand_example():
    # 2 positives (scores a: 0.9, 0.6), 2 negatives (a: 0.7, 0.2); b is a perfect scorer.
    pos = np.array([1, 1, 0, 0], bool)
    a = np.array([0.9, 0.6, 0.7, 0.2])
    b = np.array([0.9, 0.8, 0.3, 0.2])
    # a: V10 = [1, 0.5], V01 = [0.5, 1] -> AUC 0.75; b: all 1 -> AUC 1 (zero variance)
    # S10_a = var([1, .5]) = 0.125, S01_a = 0.125 -> Var(A_a - A_b) = 0.125/2 + 0.125/2 = 0.125
    auc_a, auc_b, var = delong_binary(pos, a, b)
    assert (auc_a, auc_b) == (0.75, 1.0)
    assert var == pytest.approx(0.125)


@pytest.mark.parametrize("seed", range(4))
def test_delong_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    pos = rng.random(25) < 0.4
    pos[:2], pos[2:4] = True, False
    a = np.round(rng.random(25) + pos, 1)
    b = np.round(rng.random(25) + 0.5 * pos, 1)
    fa, fb, fv = delong_binary(pos, a, b)
    sa, sb, sv = slow_delong(pos, a, b)
    assert fa == pytest.approx(roc_auc_score(pos, a)) and fa == pytest.approx(sa)
    assert fb == pytest.approx(sb) and fv == pytest.approx(sv)


def test_delong_macro_reduces_to_mean_and_identical_models_give_p1():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    pa = rng.random((30, 3)) + np.eye(3)[y]
    pb = rng.random((30, 3)) + 0.2 * np.eye(3)[y]
    c = delong_test(y, pa, pb)
    assert c.difference == pytest.approx(macro_auc(y, pa) - macro_auc(y, pb))
    assert c.low < c.difference < c.high
    assert 0 <= c.p_value < 0.05  # a strong signal vs a weak one
    same = delong_test(y, pa, pa)
    assert same.difference == 0 and same.p_value == 1.0


def test_delong_macro_variance_against_bootstrap():
    """The macro-AUC DeLong variance agrees with a large patient bootstrap (within 35%)."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 40)
    pa = rng.random((160, 4)) + 0.8 * np.eye(4)[y]
    pb = pa + rng.normal(scale=0.4, size=pa.shape)
    c = delong_test(y, pa, pb)
    var_delong = ((c.high - c.difference) / 1.959964) ** 2
    diffs = []
    for _ in range(1500):
        idx = rng.integers(0, 160, 160)
        diffs.append(macro_auc(y[idx], pa[idx]) - macro_auc(y[idx], pb[idx]))
    assert var_delong == pytest.approx(np.var(diffs), rel=0.35)


def test_paired_bootstrap_detects_difference_and_not_noise():
    rng = np.random.default_rng(2)
    splits = []
    for _ in range(3):
        y = np.repeat([0, 1], 20)
        good = rng.normal(size=40) + 2 * y
        bad = rng.normal(size=40)
        splits.append((y, np.stack([-good, good], 1), np.stack([-bad, bad], 1)))
    r = paired_bootstrap(splits, macro_auc, n_boot=300, seed=0)
    assert r.difference > 0.3 and r.low > 0 and r.p_value < 0.01
    same = paired_bootstrap([(y, a, a) for y, a, _ in splits], macro_auc, n_boot=100, seed=0)
    assert same.difference == 0 and same.low == 0 and same.high == 0


def test_paired_t_hand_value():
    c = paired_t([0.1, 0.2, 0.3])
    # mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 3.4641, df 2 -> p = 0.07418
    assert c.difference == pytest.approx(0.2)
    assert c.p_value == pytest.approx(0.07418, abs=1e-4)
    assert math.isnan(paired_t([0.1]).p_value)


def test_delong_multiclass_without_a_testable_class_raises_value_error():
    # 3 classes on 3 patients: no class has 2 positives and 2 negatives, so DeLong is undefined.
    labels = np.array([0, 1, 2])
    probs = np.full((3, 3), 1 / 3)
    with pytest.raises(InputError, match="at least 2 positives"):
        delong_test(labels, probs, probs)
