"""The binary AUC from mid-ranks, the one AUC of the package: the study tables (`cmrprior.evaluate.metrics`)
and the report's ROC figure (`cmrprior.report.plots`, which may not import the evaluation) both call it.

AUC = (sum of positive mid-ranks - m (m + 1) / 2) / (m n), m positives, n negatives (Mann-Whitney U; a tie
between a positive and a negative counts one half).
"""

from __future__ import annotations

import math

import numpy as np


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUC of `scores` (P,) for the boolean `positive` (P,); NaN when one side is empty."""
    from scipy.stats import rankdata  # scipy.stats takes seconds to import; only a computed AUC needs it

    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    m = int(positive.sum())
    n = int(positive.size - m)
    if m == 0 or n == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - m * (m + 1) / 2.0) / (m * n))
