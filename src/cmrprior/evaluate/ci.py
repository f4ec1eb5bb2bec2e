"""Confidence intervals of a metric averaged over repeated train/test splits.

* across splits, `cmrprior.utils.intervals.t_interval` with `test_train_ratio` > 0: the corrected resampled
  t of Nadeau & Bengio (2003): repeated splits of one cohort overlap, so the split-to-split spread
  underestimates the variance of their mean; the variance is inflated by n_test / n_train. The tables (and
  the saliency table) use it, clipped to [0, 1]: with the model retrained per split it covers the expected
  AUC of the training procedure at the nominal level (bench/coverage_retrain.py). With ratio 0 (plain
  Student t) it treats splits as independent: for independent values only (too narrow over overlapping
  splits: see tests/evaluate/test_coverage.py).
* `patient_bootstrap_ci`: over patients, resampled ONCE per draw across all splits (stratified by class over
  the pooled test patients); a drawn patient counts, with its multiplicity, in every split where it is a
  test patient; the statistic is the mean over splits of macro AUC; percentile interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from cmrprior.errors import InputError
from cmrprior.evaluate.metrics import macro_auc, weighted_macro_auc


def pooled_patient_counts(ids_per_split: Sequence[Sequence[str]], labels_per_split: Sequence[np.ndarray],
                          n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per split, `(n_boot, P_s)` multiplicities of its test patients in `n_boot` draws of the POOLED patients.

    The pool is the sorted union of all splits' test ids; each draw resamples it with replacement within
    each class (class counts of the pool kept): for each class in sorted order, `rng.integers(0, n_k,
    (n_boot, n_k))` picks the class's patients. Raises InputError when a patient has two labels.
    """
    label_of: dict[str, int] = {}
    for ids, labels in zip(ids_per_split, labels_per_split):
        for pid, lab in zip(ids, np.asarray(labels).tolist()):
            if label_of.setdefault(str(pid), lab) != lab:
                raise InputError(f"patient {pid} has two labels across splits ({label_of[str(pid)]}, {lab})")
    pool = sorted(label_of)
    pool_labels = np.array([label_of[p] for p in pool])
    counts = np.zeros((n_boot, len(pool)), dtype=np.float64)
    rows = np.arange(n_boot)[:, None]
    for k in np.unique(pool_labels):
        idx = np.flatnonzero(pool_labels == k)
        draws = rng.integers(0, idx.size, size=(n_boot, idx.size))
        flat = np.bincount((draws + rows * idx.size).ravel(), minlength=n_boot * idx.size)
        counts[:, idx] = flat.reshape(n_boot, idx.size)
    where = {p: i for i, p in enumerate(pool)}
    return [counts[:, [where[str(p)] for p in ids]] for ids in ids_per_split]


def pooled_bootstrap_draws(splits: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray]], *, n_boot: int,
                           seed: int) -> np.ndarray:
    """`(J, n_boot)` macro AUC of each split's (fixed) predictions in `n_boot` draws of the pooled test
    patients (`pooled_patient_counts`, one `np.random.default_rng(seed)`); NaN where a draw lacks every class.

    `splits`: (test patient ids, labels (P,), probs (P, K)) per split.
    """
    counts = pooled_patient_counts([ids for ids, _, _ in splits], [y for _, y, _ in splits], n_boot,
                                   np.random.default_rng(seed))
    return np.vstack([weighted_macro_auc(y, p, c) for (_, y, p), c in zip(splits, counts)])


def _nanmean0(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def patient_bootstrap_ci(
    splits: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(point, low, high) of the mean over splits of macro AUC; patients resampled once across splits.

    `splits`: (test patient ids, labels (P,), probs (P, K)) per split. Draws by `pooled_patient_counts`; a
    split whose draw lacks a class contributes the AUC of the classes present (no class: left out of the
    mean). Percentile interval; the point is the mean macro AUC on the unresampled data. The models stay
    fixed, so the variance of retraining is not in it: too narrow for the expected AUC of a training
    procedure (89 % at 100 patients in bench/coverage_retrain.py); the tables use the corrected t (`cmrprior.utils.intervals.t_interval`).
    """
    if not splits:
        return math.nan, math.nan, math.nan
    point = float(np.mean([macro_auc(y, p) for _, y, p in splits]))
    draws = _nanmean0(pooled_bootstrap_draws(splits, n_boot=n_boot, seed=seed))
    alpha = (1 - level) / 2
    low, high = np.nanquantile(draws, [alpha, 1 - alpha])
    return point, float(low), float(high)
