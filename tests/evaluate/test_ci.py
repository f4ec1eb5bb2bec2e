"""Confidence intervals against hand values and a slow reference."""

import numpy as np
import pytest

from cmrprior.errors import InputError
from cmrprior.evaluate.ci import patient_bootstrap_ci, pooled_patient_counts
from cmrprior.evaluate.metrics import macro_auc


def _three_overlapping_splits(seed=0):
    """Three splits of 12 patients (3 classes), 6 test patients each, sharing patients."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"p{i:02d}" for i in range(12)])
    y_all = np.repeat(np.arange(3), 4)
    p_all = rng.random((12, 3)) + 0.7 * np.eye(3)[y_all]
    tests = [np.array([0, 1, 4, 5, 8, 9]), np.array([1, 2, 5, 6, 9, 10]), np.array([0, 3, 4, 7, 8, 11])]
    return [(list(ids[t]), y_all[t], p_all[t]) for t in tests], ids, y_all


def slow_patient_bootstrap(splits, n_boot, seed, level=0.95):
    """The pooled patient bootstrap written out: the same random calls, then explicit resampled test sets."""
    rng = np.random.default_rng(seed)
    label_of = {pid: int(lab) for ids, y, _ in splits for pid, lab in zip(ids, y)}
    pool = sorted(label_of)
    pool_y = np.array([label_of[p] for p in pool])
    per_class = {k: (np.flatnonzero(pool_y == k), rng.integers(0, (pool_y == k).sum(), size=(n_boot, (pool_y == k).sum())))
                 for k in np.unique(pool_y)}
    draws = []
    for b in range(n_boot):
        drawn = [pool[i] for k, (idx, d) in per_class.items() for i in idx[d[b]]]  # patient ids, with repeats
        vals = []
        for ids, y, p in splits:
            rows = [j for j, pid in enumerate(ids) for _ in range(drawn.count(pid))]
            vals.append(macro_auc(y[rows], p[rows]) if rows else np.nan)
        draws.append(np.nanmean(vals))
    return np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])


def test_patient_bootstrap_matches_slow_reference():
    splits, _, _ = _three_overlapping_splits()
    point, lo, hi = patient_bootstrap_ci(splits, n_boot=150, seed=5)
    ref_lo, ref_hi = slow_patient_bootstrap(splits, 150, 5)
    assert point == pytest.approx(np.mean([macro_auc(y, p) for _, y, p in splits]))
    assert lo == pytest.approx(ref_lo, abs=1e-12) and hi == pytest.approx(ref_hi, abs=1e-12)


def test_pooled_counts_are_one_draw_shared_by_all_splits():
    splits, ids, y_all = _three_overlapping_splits()
    counts = pooled_patient_counts([s[0] for s in splits], [s[1] for s in splits], 200, np.random.default_rng(0))
    # p01 is a test patient of splits 0 and 1 (position 1 and 0): the same multiplicity in every draw
    assert np.array_equal(counts[0][:, 1], counts[1][:, 0])
    assert counts[0][:, 1].std() > 0
    # the pool keeps its class counts in every draw (stratified by class): 4 pooled patients per class
    pool_total = np.zeros((200, 3))
    seen = set()
    for (sids, y, _), c in zip(splits, counts):
        for j, pid in enumerate(sids):
            if pid not in seen:
                seen.add(pid)
                pool_total[:, y[j]] += c[:, j]
    assert len(seen) == 12 and np.all(pool_total == 4)


def test_pooled_counts_refuse_a_patient_with_two_labels():
    with pytest.raises(InputError, match="two labels"):
        pooled_patient_counts([["a", "b"], ["a", "c"]], [np.array([0, 1]), np.array([1, 0])], 5, np.random.default_rng(0))

