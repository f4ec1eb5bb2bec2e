"""Paired comparisons: DeLong against a hand-computed example, slow references and a simulated truth; the
patient bootstrap against a slow reference; corrected paired t and Holm against hand values."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from cmrprior.errors import InputError
from cmrprior.evaluate.compare import (delong_binary, delong_class_covariance, delong_test, holm_adjust,
                                       paired_t, patient_paired_bootstrap)
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


def slow_class_covariance(labels, pa, pb, classes):
    """Per-class AUC differences and their covariance, from pairwise comparisons written as plain loops:
    placements V10 / V01 per patient, weights 1/m_c or 1/n_c, covariance within each class stratum."""
    psi = lambda x, y: 1.0 if x > y else (0.5 if x == y else 0.0)  # noqa: E731
    n = len(labels)
    diffs, g = [], []
    for c in classes:
        pos = [i for i in range(n) if labels[i] == c]
        neg = [i for i in range(n) if labels[i] != c]
        place = {}
        for name, s in (("a", pa[:, c]), ("b", pb[:, c])):
            for i in pos:
                place[name, i] = sum(psi(s[i], s[j]) for j in neg) / len(neg)
            for j in neg:
                place[name, j] = sum(psi(s[i], s[j]) for i in pos) / len(pos)
        auc_a = sum(place["a", i] for i in pos) / len(pos)
        auc_b = sum(place["b", i] for i in pos) / len(pos)
        diffs.append(auc_a - auc_b)
        g.append([(place["a", i] - place["b", i]) / (len(pos) if labels[i] == c else len(neg)) for i in range(n)])
    cov = np.zeros((len(classes), len(classes)))
    for k in sorted(set(labels.tolist())):
        members = [i for i in range(n) if labels[i] == k]
        nk = len(members)
        for u in range(len(classes)):
            for v in range(len(classes)):
                mu = sum(g[u][i] for i in members) / nk
                mv = sum(g[v][i] for i in members) / nk
                cov[u, v] += nk * sum((g[u][i] - mu) * (g[v][i] - mv) for i in members) / (nk - 1)
    return np.array(diffs), cov


def _correlated_classes(rng, y, k):
    """Model A: a per-patient hardness h pushes the patient's own class down and every other class up, so a
    hard patient lowers the AUC of several classes at once (positively correlated class AUCs); B: noise."""
    h = rng.normal(scale=1.5, size=y.size)
    own = np.eye(k)[y]
    a = own + h[:, None] * (1 - 2 * own) + rng.normal(size=(y.size, k))
    b = own + 1.8 * rng.normal(size=(y.size, k))
    return a, b


def test_delong_class_covariance_matches_slow_reference():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), [5, 6, 4, 7])
    a, b = _correlated_classes(rng, y, 4)
    a = np.round(a, 1)  # ties
    d, cov = delong_class_covariance(y, a, b, range(4))
    ref_d, ref_cov = slow_class_covariance(y, a, b, range(4))
    assert np.allclose(d, ref_d, atol=1e-12) and np.allclose(cov, ref_cov, atol=1e-14)
    assert d.mean() == pytest.approx(macro_auc(y, a) - macro_auc(y, b))
    # binary: the one-class covariance is the classic DeLong variance
    pos = y < 2
    yb = pos.astype(int)
    _, cov_b = delong_class_covariance(yb, np.stack([-a[:, 0], a[:, 0]], 1), np.stack([-b[:, 0], b[:, 0]], 1), [1])
    assert cov_b[0, 0] == pytest.approx(slow_delong(pos, a[:, 0], b[:, 0])[2])


def test_delong_macro_variance_matches_simulated_truth_with_correlated_classes():
    """Over many simulated cohorts (class counts fixed), the mean DeLong variance of the macro difference
    equals its true (Monte-Carlo) variance; the diagonal alone (cross-class covariance dropped) gives ~0.6
    of it here, so this test fails without the cross term."""
    rng = np.random.default_rng(0)
    k, reps = 4, 500
    y = np.repeat(np.arange(k), 15)
    diffs, var_delong = [], []
    for _ in range(reps):
        a, b = _correlated_classes(rng, y, k)
        c = delong_test(y, a, b)
        diffs.append(c.difference)
        var_delong.append(((c.high - c.difference) / 1.959964) ** 2)
    true_var = np.var(diffs, ddof=1)  # relative standard error sqrt(2 / reps) = 6%
    assert np.mean(var_delong) == pytest.approx(true_var, rel=0.15)


def test_patient_paired_bootstrap_matches_slow_reference():
    rng = np.random.default_rng(4)
    ids = np.array([f"p{i:02d}" for i in range(12)])
    y_all = np.repeat(np.arange(3), 4)
    pa_all = rng.random((12, 3)) + np.eye(3)[y_all]
    pb_all = rng.random((12, 3)) + 0.3 * np.eye(3)[y_all]
    tests = [np.array([0, 1, 4, 5, 8, 9]), np.array([1, 2, 5, 6, 9, 10]), np.array([0, 3, 4, 7, 8, 11])]
    splits = [(list(ids[t]), y_all[t], pa_all[t], pb_all[t]) for t in tests]
    r = patient_paired_bootstrap(splits, n_boot=120, seed=3)
    ref = np.random.default_rng(3)  # the same random calls: per class in sorted order, (n_boot, n_k) integers
    picks = {kk: ref.integers(0, 4, size=(120, 4)) for kk in range(3)}
    draws = []
    for bb in range(120):
        drawn = [int(np.flatnonzero(y_all == kk)[i]) for kk in range(3) for i in picks[kk][bb]]
        vals = []
        for t in tests:
            rows = [i for i in t for _ in range(drawn.count(i))]
            vals.append(macro_auc(y_all[rows], pa_all[rows]) - macro_auc(y_all[rows], pb_all[rows]))
        draws.append(np.nanmean(vals))
    draws = np.array(draws)
    assert r.difference == pytest.approx(np.mean([macro_auc(y, a) - macro_auc(y, b) for _, y, a, b in splits]))
    assert (r.low, r.high) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])), abs=1e-12)
    assert r.p_value == pytest.approx(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))
    same = patient_paired_bootstrap([(i, y, a, a) for i, y, a, _ in splits], n_boot=50, seed=0)
    assert same.difference == 0 and same.low == 0 and same.high == 0 and same.p_value == 1.0


def test_corrected_paired_t_hand_value():
    c = paired_t([0.1, 0.2, 0.3], test_train_ratio=0.5)
    # mean 0.2, sd 0.1, t = 0.2 / (0.1 * sqrt(1/3 + 0.5)) = sqrt(4.8); df 2: p = 1 - t / sqrt(2 + t^2)
    assert c.method == "corrected_paired_t_over_splits" and c.difference == pytest.approx(0.2)
    assert c.p_value == pytest.approx(1 - math.sqrt(4.8 / 6.8), abs=1e-12)
    assert c.high - 0.2 == pytest.approx(4.302653 * 0.1 * math.sqrt(1 / 3 + 0.5), abs=1e-6)


def slow_holm(p, alphas=np.linspace(0, 1, 100001)):
    """Holm's adjusted p: the smallest level at which the step-down procedure rejects the hypothesis."""
    out = []
    for i in range(len(p)):
        order = np.argsort(p, kind="stable")
        reject_at = 1.0
        for alpha in alphas:
            rejected = set()
            for step, j in enumerate(order):
                if p[j] <= alpha / (len(p) - step):
                    rejected.add(j)
                else:
                    break
            if i in rejected:
                reject_at = alpha
                break
        out.append(reject_at)
    return out


def test_holm_hand_values_and_step_down_reference():
    assert holm_adjust([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm_adjust([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert holm_adjust([]) == []
    p = [0.003, 0.021, 0.0125, 0.4, 0.018]
    assert holm_adjust(p) == pytest.approx(slow_holm(p), abs=2e-5)


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


def test_splits_paired_t_is_the_paired_t_with_a_reduced_overlap_term():
    from cmrprior.evaluate.compare import PAIRED_OVERLAP_SHARE, splits_paired_t

    d = [0.05, 0.01, 0.03, -0.01, 0.04]  # mean 0.024, s^2 = 0.00058
    res = splits_paired_t(d, test_train_ratio=0.3 / 0.7)
    # by hand: t = 0.024 / sqrt((1/5 + 0.2 x 0.428571) x 0.00058), df 4
    t = 0.024 / math.sqrt((0.2 + PAIRED_OVERLAP_SHARE * 0.3 / 0.7) * 0.00058)
    assert PAIRED_OVERLAP_SHARE == 0.2
    assert res.difference == pytest.approx(0.024) and res.p_value == pytest.approx(2 * stats.t.sf(t, 4))
    full = paired_t(d, test_train_ratio=0.3 / 0.7)
    plain = paired_t(d)
    assert plain.p_value < res.p_value < full.p_value  # between the plain and the fully corrected t
    wide = splits_paired_t([0.9, -0.8], test_train_ratio=0.43)  # two splits far apart: clipped to [-1, 1]
    assert (wide.low, wide.high) == (-1.0, 1.0)


def test_patient_paired_bootstrap_uses_the_paired_draws():
    from cmrprior.evaluate.compare import paired_draws

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 5)
    ids = [f"p{i}" for i in range(15)]
    splits = []
    for _ in range(3):
        a = rng.dirichlet(np.ones(3), 15) + 0.6 * np.eye(3)[y]
        b = rng.dirichlet(np.ones(3), 15) + 0.4 * np.eye(3)[y]
        splits.append((ids, y, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)))
    diffs, draws = paired_draws(splits, n_boot=200, seed=1)
    assert diffs == pytest.approx([macro_auc(y, a) - macro_auc(y, b) for _, y, a, b in splits])
    boot = patient_paired_bootstrap(splits, n_boot=200, seed=1)
    assert boot.difference == pytest.approx(diffs.mean())
    assert np.quantile(draws.mean(0), [0.025, 0.975]) == pytest.approx([boot.low, boot.high])
