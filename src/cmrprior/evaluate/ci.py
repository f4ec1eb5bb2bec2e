"""Confidence intervals: Student-t interval across splits, and a bootstrap over patients.

The bootstrap resamples the test patients of every split with replacement (stratified by class, so every
class stays present and the AUC is defined), recomputes the metric per split and averages over splits; the
percentile interval of that mean is the "patient bootstrap CI" of a table cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from cmrprior.evaluate.metrics import macro_auc, weighted_macro_auc

Metric = Callable[[np.ndarray, np.ndarray], float]


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t interval of the mean of `values` (NaNs dropped).

    One value gives (v, NaN, NaN): an interval across splits needs at least two splits.
    """
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, df=v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def stratified_resample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices `(P,)` drawn with replacement within each class (class counts kept)."""
    labels = np.asarray(labels)
    out = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        out.append(rng.choice(idx, size=idx.size, replace=True))
    return np.concatenate(out)


def resample_counts(labels_per_split: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per split, `(n_boot, P)` occurrence counts of each patient in stratified resamples; the draws
    are made in the same order as the loop `for b: for split: stratified_resample(...)`."""
    counts = [np.zeros((n_boot, len(y)), dtype=np.float64) for y in labels_per_split]
    for b in range(n_boot):
        for s, y in enumerate(labels_per_split):
            counts[s][b] = np.bincount(stratified_resample(y, rng), minlength=len(y))
    return counts


def bootstrap_ci(
    per_split: Sequence[tuple[np.ndarray, np.ndarray]],
    metric: Metric,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(point, low, high): percentile bootstrap of the mean over splits of `metric(labels, probs)`.

    `per_split` is a list of (labels (P,), probs (P, K)) for the test patients of each split. The point
    estimate is the mean metric on the unresampled data.
    """
    if not per_split:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    point = float(np.mean([metric(y, p) for y, p in per_split]))
    draws = np.empty(n_boot)
    if metric is macro_auc:  # fast path: all resamples at once from resample counts
        counts = resample_counts([y for y, _ in per_split], n_boot, rng)
        vals = np.vstack([weighted_macro_auc(y, p, c) for (y, p), c in zip(per_split, counts)])
        draws = np.nanmean(vals, axis=0)
    else:
        for b in range(n_boot):
            vals = []
            for y, p in per_split:
                idx = stratified_resample(y, rng)
                vals.append(metric(y[idx], p[idx]))
            draws[b] = np.nanmean(vals)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(draws, [alpha, 1 - alpha])
    return point, float(low), float(high)
