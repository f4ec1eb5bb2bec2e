"""The Student-t interval of a mean, plain or with the corrected resampled variance of repeated splits.

`t_interval(values, test_train_ratio)`: half-width t_{J-1} x SE over the J finite values. With
`test_train_ratio` 0 (values independent: per-patient QC metrics, independent repeats) SE = s / sqrt(J),
the textbook interval. With `test_train_ratio` > 0 (one value per train/test split of one cohort; the
splits overlap, so their spread underestimates the variance of their mean) SE = sqrt((1/J + n_test/n_train)
s^2), the corrected resampled t of Nadeau & Bengio (2003); for r repeats of k-fold CV the same with
J = r k and n_test/n_train = 1/(k-1) (Bouckaert & Frank 2004).

Low in the layering (segmentation QC and evaluation both use it); scipy.stats is imported on first use,
as it takes seconds to import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cmrprior.errors import InputError


def t_interval(values: Sequence[float | None], test_train_ratio: float = 0.0, level: float = 0.95,
               bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of the t interval of the mean of the finite `values` (None, NaN and inf dropped),
    clipped to `bounds` ((0, 1) for an AUC or a share; None, the default, for a difference).

    No finite value gives (NaN, NaN, NaN); one gives (v, NaN, NaN). Raises InputError for a negative ratio.
    """
    if test_train_ratio < 0:
        raise InputError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    t = stats.t.ppf(0.5 + level / 2, df=v.size - 1)
    # the operations in the order the QC tables (plain) and the study tables (corrected) were computed in
    # before this was one function, so that their numbers stay the same to the last bit
    if test_train_ratio == 0:
        half = float(t * v.std(ddof=1) / math.sqrt(v.size))
    else:
        half = float(t * math.sqrt((1.0 / v.size + test_train_ratio) * v.var(ddof=1)))
    return mean, *clip_interval(mean - half, mean + half, bounds)


def clip_interval(low: float, high: float, bounds: tuple[float, float] | None = (0.0, 1.0)) -> tuple[float, float]:
    """(low, high) clipped to `bounds` (NaN stays NaN; None: unchanged)."""
    if bounds is None:
        return low, high
    clip = lambda x: x if math.isnan(x) else min(max(x, bounds[0]), bounds[1])  # noqa: E731
    return clip(low), clip(high)
