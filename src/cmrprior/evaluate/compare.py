"""Paired comparison of two configurations scored on the same test patients of the same splits.

* `splits_paired_t` (the tables' test): the paired t over splits with a reduced overlap term
  (`PAIRED_OVERLAP_SHARE`); false-positive rate 4-5 % at the 5 % level for two copies of one training
  procedure retrained per split (bench/coverage_retrain.py), where the bootstrap and DeLong keep the models
  fixed and run hot when retraining varies and the fully corrected paired t is conservative.
* `patient_paired_bootstrap`: resample the patients ONCE per draw across all splits (stratified by class,
  `cmrprior.evaluate.ci.pooled_patient_counts`), score both configurations on the SAME draw, average the
  difference over splits; percentile CI and a two-sided bootstrap p-value (twice the smaller tail share
  around 0).
* `paired_t`: t test of the per-split differences (splits as the unit), with the corrected resampled
  variance of Nadeau & Bengio (2003) when `test_train_ratio` > 0.
* `compare_cells`: the tables' comparison of two configurations' `CellResult`s (the first or the second above).
* `holm_adjust`: Holm (1979) step-down adjusted p-values over a family of comparisons.
* `delong_test`: DeLong, DeLong & Clarke-Pearson (1988) test for two correlated AUCs on one split, with
  the fast mid-rank computation of Sun & Xu (2014). Binary AUC: the classic test. Macro one-vs-rest AUC:
  the covariance matrix of the per-class AUC differences from the structural components (placements) of
  every patient, per class stratum (class counts fixed, as in stratified sampling); the classes share
  patients, so the off-diagonal (cross-class) terms are part of the variance of the macro difference.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import rankdata

from cmrprior.evaluate.ci import pooled_patient_counts
from cmrprior.errors import DataError, InputError
from cmrprior.evaluate.metrics import macro_auc, weighted_macro_auc
from cmrprior.runs import PAIRED_TEST_KEY, CellResult
from cmrprior.utils.intervals import clip_interval, t_interval


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


def patient_paired_bootstrap(
    splits: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray, np.ndarray]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Comparison:
    """Macro AUC of A - B, mean over splits; `splits`: (test ids, labels (P,), probs_a, probs_b (P, K)).

    One draw of the pooled patients per bootstrap resample, shared by every split and by both configurations.
    """
    per_split, diffs = paired_draws(splits, n_boot=n_boot, seed=seed)
    observed = float(np.mean(per_split))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        draws = np.nanmean(diffs, axis=0)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(draws, [alpha, 1 - alpha])
    p = min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0)))
    return Comparison("patient_paired_bootstrap", observed, float(low), float(high), float(p))


def paired_draws(splits: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray, np.ndarray]], *, n_boot: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-split differences A - B of macro AUC `(J,)` and their `(J, n_boot)` draws: one draw of the pooled
    test patients per resample (`pooled_patient_counts`), shared by every split and by A and B."""
    observed = np.array([macro_auc(y, a) - macro_auc(y, b) for _, y, a, b in splits])
    counts = pooled_patient_counts([ids for ids, *_ in splits], [y for _, y, _, _ in splits], n_boot,
                                   np.random.default_rng(seed))
    draws = np.vstack([weighted_macro_auc(y, a, c) - weighted_macro_auc(y, b, c) for (_, y, a, b), c in zip(splits, counts)])
    return observed, draws


# The overlap term of the tables' paired t, as a share of the corrected resampled t's n_test/n_train. Two
# configurations trained on the same training part share what that part does to both, and it cancels in their
# difference: the split-to-split spread of a difference is mostly retraining noise, independent across splits,
# and only the shared test patients correlate splits. With the full term (Nadeau & Bengio) the test is
# conservative (false positives 1-2 % at the 5 % level), with none (plain paired t) it runs hot (5.5-11 %);
# 0.2 gave 5.0 % (100 patients) and 4.0 % (300) in bench/coverage_retrain.py (two copies of one training
# procedure retrained per split; 7.7 % and 1.5 % with a high-variance learner).
PAIRED_OVERLAP_SHARE = 0.2


def splits_paired_t(diffs: Sequence[float], test_train_ratio: float, level: float = 0.95) -> Comparison:
    """The tables' paired test: `paired_t` of the per-split differences A - B with the overlap term
    `PAIRED_OVERLAP_SHARE` x n_test/n_train (`test_train_ratio`); its interval clipped to [-1, 1] (a
    difference of two AUCs)."""
    res = paired_t(diffs, level, test_train_ratio=PAIRED_OVERLAP_SHARE * test_train_ratio)
    return dataclasses.replace(res, **dict(zip(("low", "high"), clip_interval(res.low, res.high, (-1.0, 1.0)))))


def paired_t(diffs: Sequence[float], level: float = 0.95, *, test_train_ratio: float = 0.0) -> Comparison:
    """t-test of per-split differences (A - B) against 0, df J - 1.

    `test_train_ratio` > 0: the corrected resampled t (variance (1/J + n_test/n_train) s^2), for splits that
    share patients; 0: the plain paired t (independent splits).
    """
    d = np.asarray([x for x in diffs if x is not None and not math.isnan(x)], dtype=np.float64)
    mean, low, high = t_interval(d, test_train_ratio, level)
    method = "corrected_paired_t_over_splits" if test_train_ratio > 0 else "paired_t_over_splits"
    if d.size < 2 or np.all(d == d[0]):
        p = math.nan if d.size < 2 or d[0] != 0 else 1.0
        if d.size >= 2 and d[0] != 0:
            p = 0.0
    else:
        t = mean / math.sqrt((1.0 / d.size + test_train_ratio) * d.var(ddof=1))
        p = float(2 * stats.t.sf(abs(t), df=d.size - 1))
    return Comparison(method, mean, low, high, p)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values, in input order, over the family of the non-missing ones.

    With m p-values sorted p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    None or NaN stay None and do not count in m.
    """
    present = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    order = sorted(present, key=lambda i: p_values[i])
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(p_values[i])))
        out[i] = running
    return out


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


def delong_class_covariance(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                            classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-class OvR AUC differences A - B `(C,)` and their DeLong covariance matrix `(C, C)`.

    Patient i's placement for class c (V10 if it is of class c, V01 otherwise; Sun & Xu) enters the AUC of c
    with weight 1/m_c (positive) or 1/n_c (negative): AUC_c - E ~ sum_i g_c(i). With class counts fixed,
    Cov = sum over class strata k of n_k * sample covariance (ddof 1) of g within stratum k. For one class
    of a binary task this is the classic DeLong variance.
    """
    labels = np.asarray(labels, dtype=np.int64)
    diffs, g = [], np.empty((len(classes), labels.size))
    for j, c in enumerate(classes):
        pos = labels == c
        auc_a, a10, a01 = _structural_components(pos, np.asarray(probs_a[:, c], float))
        auc_b, b10, b01 = _structural_components(pos, np.asarray(probs_b[:, c], float))
        diffs.append(auc_a - auc_b)
        g[j, pos] = (a10 - b10) / pos.sum()
        g[j, ~pos] = (a01 - b01) / (~pos).sum()
    cov = np.zeros((len(classes), len(classes)))
    for k in np.unique(labels):
        members = labels == k
        if members.sum() >= 2:
            cov += members.sum() * np.atleast_2d(np.cov(g[:, members], ddof=1))
    return np.asarray(diffs), cov


def delong_test(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> Comparison:
    """DeLong test of macro OvR AUC (binary AUC when K == 2) of A vs B on one split; 95% normal CI.

    Macro: Var = w^2 * (sum of the whole class covariance matrix), w = 1 / number of classes tested.
    DeLong's variance is that of the test patients for two FIXED models (not of retraining them): the study
    tables use `splits_paired_t` (bench/coverage_retrain.py). Raises InputError when no class has at least 2
    positives and 2 negatives.
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
        diffs, cov = delong_class_covariance(labels, probs_a, probs_b, classes)
        diff = w * float(diffs.sum())
        var = float(w * w * cov.sum())
    se = math.sqrt(max(var, 0.0))
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
    else:
        p = float(2 * stats.norm.sf(abs(diff) / se))
    return Comparison("delong", float(diff), float(diff - 1.959964 * se), float(diff + 1.959964 * se), p)


def compare_cells(results: list[CellResult], a: tuple, b: tuple, *, test_train_ratio: float, n_boot: int = 1000,
                  seed: int = 0) -> dict | None:
    """The tables' paired test of cells A - B over the splits they share: `splits_paired_t` of the per-split
    macro AUC differences; with one split (the external test cohort: one model each) the patient
    paired bootstrap of those two models. None when not comparable. Key `PAIRED_TEST_KEY` holds the test (its
    "method" says which test it is).

    Raises DataError when the two cells were scored on different patients in a split.
    """
    def pick(key):
        return {r.key.split: r for r in results if r.key.config == key and r.ok}

    ra, rb = pick(a), pick(b)
    common = sorted(set(ra) & set(rb))
    if not common:
        return None
    per_split = []
    for s in common:
        ta, tb = ra[s].test, rb[s].test
        if ta.patient_ids != tb.patient_ids:
            raise DataError(None, f"split {s}: {a} and {b} were scored on different patients")
        per_split.append((ta.patient_ids, np.asarray(ta.labels), np.asarray(ta.probabilities), np.asarray(tb.probabilities)))
    if len(per_split) == 1:
        test = patient_paired_bootstrap(per_split, n_boot=n_boot, seed=seed)
    else:
        test = splits_paired_t([macro_auc(y, pa) - macro_auc(y, pb) for _, y, pa, pb in per_split], test_train_ratio)
    return {"a": "/".join(a), "b": "/".join(b), "n_splits": len(common), "difference": test.difference,
            PAIRED_TEST_KEY: test.as_dict()}
