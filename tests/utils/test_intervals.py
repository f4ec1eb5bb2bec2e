"""The one t interval (plain and corrected resampled) against hand values, scipy, and the three formulas it
replaced (evaluate's plain and corrected t, the segmentation QC's), bit for bit."""

import math

import numpy as np
import pytest
from scipy import stats

from cmrprior.errors import InputError
from cmrprior.segmentation import qc
from cmrprior.utils.intervals import clip_interval, t_interval

V = [0.8, 0.9, 0.85, 0.75, 0.95]


def test_plain_t_hand_value():
    mean, lo, hi = t_interval(V)
    sd = math.sqrt(sum((x - 0.85) ** 2 for x in V) / 4)  # 0.0790569
    half = 2.7764451 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert mean == pytest.approx(0.85)
    assert lo == pytest.approx(0.85 - half, abs=1e-6) and hi == pytest.approx(0.85 + half, abs=1e-6)
    assert (lo, hi) == pytest.approx(stats.t.interval(0.95, 4, loc=np.mean(V), scale=stats.sem(V)))


def test_corrected_t_hand_value():
    sd = math.sqrt(sum((x - 0.85) ** 2 for x in V) / 4)
    half = 2.7764451 * sd * math.sqrt(1 / 5 + 0.3 / 0.7)  # t_{0.975, 4}, Nadeau & Bengio factor
    mean, lo, hi = t_interval(V, 0.3 / 0.7)
    assert mean == pytest.approx(0.85)
    assert hi - 0.85 == pytest.approx(half, abs=1e-6) and 0.85 - lo == pytest.approx(half, abs=1e-6)
    with pytest.raises(InputError, match="test_train_ratio"):
        t_interval(V, -0.1)


def test_too_few_values_and_dropped_values():
    m, lo, hi = t_interval([0.7])
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert math.isnan(t_interval([0.7], 0.4)[1])
    assert all(math.isnan(x) for x in t_interval([]))
    assert all(math.isnan(x) for x in t_interval([None, math.nan, math.inf]))
    assert t_interval([0.8, None, math.nan, math.inf, 0.9, -math.inf]) == t_interval([0.8, 0.9])


def test_intervals_are_clipped_to_the_auc_range():
    assert clip_interval(-0.2, 1.3) == (0.0, 1.0) and clip_interval(-0.2, 1.3, None) == (-0.2, 1.3)
    assert all(math.isnan(x) for x in clip_interval(math.nan, math.nan))
    mean, lo, hi = t_interval([0.99, 0.90, 1.0], 0.43, bounds=(0.0, 1.0))
    _, _, raw_hi = t_interval([0.99, 0.90, 1.0], 0.43)
    assert raw_hi > 1.0 and hi == 1.0 and 0 < lo < mean


def _old_plain(v, level):  # segmentation.qc.mean_ci before the merge (evaluate's t_interval: t * (s / sqrt n))
    v = np.asarray(v, dtype=np.float64)
    m = float(v.mean())
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def _old_corrected(v, ratio, level):  # evaluate.ci.corrected_t_interval before the merge
    v = np.asarray(v, dtype=np.float64)
    m = float(v.mean())
    half = float(stats.t.ppf(0.5 + level / 2, df=v.size - 1) * math.sqrt((1.0 / v.size + ratio) * v.var(ddof=1)))
    return m, m - half, m + half


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_same_bits_as_the_three_formulas_it_replaced(n, level):
    v = np.random.default_rng(n).random(n).tolist()
    assert t_interval(v, 0.0, level) == _old_plain(v, level)
    m, lo, hi = _old_plain(v, level)
    old_evaluate_half = float(stats.t.ppf(0.5 + level / 2, df=n - 1) * (np.std(v, ddof=1) / math.sqrt(n)))
    assert hi - m == pytest.approx(old_evaluate_half, rel=1e-12)  # the same up to rounding
    assert qc.mean_ci(v, level) == (*_old_plain(v, level), n)
    for ratio in (0.2, 1 / 3, 0.3 / 0.7):
        assert t_interval(v, ratio, level) == _old_corrected(v, ratio, level)
