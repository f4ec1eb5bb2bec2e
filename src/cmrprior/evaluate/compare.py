"""Paired comparison of two configurations scored on the same test patients of the same splits.

* `paired_bootstrap`: resample the test patients of every split (stratified by class), score both
  configurations on the SAME resample, average the difference over splits; percentile CI and a two-sided
  bootstrap p-value (twice the smaller tail share around 0).
* `delong_test`: DeLong, DeLong & Clarke-Pearson (1988) test for two correlated AUCs on one split, with
  the fast mid-rank computation of Sun & Xu (2014). Binary AUC: the classic test. Macro one-vs-rest AUC:
  the per-class DeLong variances on the diagonal and, between classes (which share patients), the
  covariance of the per-patient influence terms (V10 - A) / m and (V01 - A) / n.
* `paired_t`: Student-t test of the per-split differences (splits as the unit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import rankdata

from cmrprior.evaluate.ci import Metric, resample_counts, stratified_resample, t_interval
from cmrprior.errors import InputError
from cmrprior.evaluate.metrics import macro_auc, weighted_macro_auc


@dataclass(frozen=True)
class Comparison:
    """Difference A - B of a metric with its interval and two-sided p-value."""

    method: str
    difference: float
    low: float
    high: float
    p_value: float

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def paired_bootstrap(
    per_split: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    metric: Metric,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Comparison:
    """`per_split`: (labels (P,), probs_a (P, K), probs_b (P, K)) for the same patients per split."""
    rng = np.random.default_rng(seed)
    observed = float(np.mean([metric(y, a) - metric(y, b) for y, a, b in per_split]))
    draws = np.empty(n_boot)
    if metric is macro_auc:  # fast path: all resamples at once, same draws as the loop below
        counts = resample_counts([y for y, _, _ in per_split], n_boot, rng)
        diffs = np.vstack([weighted_macro_auc(y, a, c) - weighted_macro_auc(y, b, c) for (y, a, b), c in zip(per_split, counts)])
        draws = np.nanmean(diffs, axis=0)
    for i in range(n_boot if metric is not macro_auc else 0):
        diffs = []
        for y, a, b in per_split:
            idx = stratified_resample(y, rng)
            diffs.append(metric(y[idx], a[idx]) - metric(y[idx], b[idx]))
        draws[i] = np.nanmean(diffs)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(draws, [alpha, 1 - alpha])
    p = min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0)))
    return Comparison("paired_bootstrap", observed, float(low), float(high), float(p))


def paired_t(diffs: Sequence[float], level: float = 0.95) -> Comparison:
    """t-test of per-split differences (A - B) against 0."""
    d = np.asarray([x for x in diffs if x is not None and not math.isnan(x)], dtype=np.float64)
    mean, low, high = t_interval(d, level)
    if d.size < 2 or np.all(d == d[0]):
        p = math.nan if d.size < 2 or d[0] != 0 else 1.0
        if d.size >= 2 and d[0] != 0:
            p = 0.0
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return Comparison("paired_t_over_splits", mean, low, high, p)


def _structural_components(positive: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC, V10 `(m,)` for positives and V01 `(n,)` for negatives (Sun & Xu mid-rank form)."""
    x = scores[positive]
    y = scores[~positive]
    m, n = x.size, y.size
    rz = rankdata(np.concatenate([x, y]))
    rx = rankdata(x)
    ry = rankdata(y)
    v10 = (rz[:m] - rx) / n
    v01 = 1.0 - (rz[m:] - ry) / m
    auc = float(v10.mean())
    return auc, v10, v01


def delong_binary(positive: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[float, float, float]:
    """(AUC_a, AUC_b, Var(AUC_a - AUC_b)) by DeLong for two scores on the same patients.

    Raises InputError with fewer than 2 positives or 2 negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise InputError("DeLong needs at least 2 positives and 2 negatives")
    a_auc, a10, a01 = _structural_components(positive, np.asarray(scores_a, float))
    b_auc, b10, b01 = _structural_components(positive, np.asarray(scores_b, float))
    s10 = np.cov(np.vstack([a10, b10]), ddof=1)
    s01 = np.cov(np.vstack([a01, b01]), ddof=1)
    s = s10 / m + s01 / n
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return a_auc, b_auc, var


def _influence(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-patient influence term of the AUC: (V10 - A)/m on positives, (V01 - A)/n on negatives."""
    auc, v10, v01 = _structural_components(positive, scores)
    out = np.empty(positive.size)
    out[positive] = (v10 - auc) / v10.size
    out[~positive] = (v01 - auc) / v01.size
    return out


def delong_test(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> Comparison:
    """DeLong test of macro OvR AUC (binary AUC when K == 2) of A vs B on one split; 95% normal CI.

    Raises InputError when no class has at least 2 positives and 2 negatives.
    """
    labels = np.asarray(labels, dtype=np.int64)
    k = probs_a.shape[1]
    if k == 2:
        a, b, var = delong_binary(labels == 1, probs_a[:, 1], probs_b[:, 1])
        diff = a - b
    else:
        classes = [c for c in range(k) if 2 <= (labels == c).sum() <= labels.size - 2]
        if not classes:
            raise InputError("DeLong needs a class with at least 2 positives and 2 negatives")
        w = 1.0 / len(classes)
        diffs, variances, infl = [], [], []
        for c in classes:
            pos = labels == c
            a, b, v = delong_binary(pos, probs_a[:, c], probs_b[:, c])
            diffs.append(a - b)
            variances.append(v)
            infl.append(_influence(pos, probs_a[:, c]) - _influence(pos, probs_b[:, c]))
        diff = w * float(np.sum(diffs))
        infl_arr = np.vstack(infl)  # (C, P)
        cov = infl_arr @ infl_arr.T
        np.fill_diagonal(cov, variances)
        var = float(w * w * cov.sum())
    se = math.sqrt(max(var, 0.0))
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
    else:
        p = float(2 * stats.norm.sf(abs(diff) / se))
    return Comparison("delong", float(diff), float(diff - 1.959964 * se), float(diff + 1.959964 * se), p)
