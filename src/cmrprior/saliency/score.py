"""The in-heart saliency score: how much of a model's positive saliency falls on the heart.

For one image with saliency map S (H, W) and heart mask M (H, W) (union of LV cavity, myocardium and RV,
dilated by a margin in mm; see `cmrprior.anatomy.heart.heart_mask`):

    share = sum(max(S, 0) * M) / sum(max(S, 0))          in [0, 1]

undefined (NaN) when the image has no positive saliency. A uniform map scores the heart's area
fraction, which is the chance level to compare against (`heart_area_fraction`).

Per patient: the mean of the shares of all its slices and both branches (ED and ES), each image
weighted equally and images without positive saliency left out. Per configuration: the mean over
splits of the mean over each split's test patients, with the study tables' interval: the corrected resampled t
across splits (>= 2 splits; the splits overlap; `cmrprior.utils.intervals.t_interval`), clipped to
[0, 1]. One split (one model, e.g. on the held-out cohort): the percentile bootstrap over its patients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmrprior.errors import ConfigError
from cmrprior.utils.intervals import t_interval


def in_heart_share(saliency: np.ndarray, heart: np.ndarray) -> np.ndarray:
    """Share of positive saliency inside the heart, per image.

    saliency: float (N, H, W) (any sign; negative values are ignored). heart: bool (N, H, W).
    Returns float64 (N,), NaN where an image has no positive saliency.
    """
    s = np.asarray(saliency, dtype=np.float64)
    m = np.asarray(heart, dtype=bool)
    if s.shape != m.shape or s.ndim != 3:
        raise ConfigError(f"in_heart_share: saliency {s.shape} and heart {m.shape} must both be (N, H, W)")
    pos = np.clip(s, 0.0, None)
    total = pos.sum(axis=(1, 2))
    inside = (pos * m).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def heart_area_fraction(heart: np.ndarray) -> np.ndarray:
    """Fraction of each image covered by the heart mask: float64 (N,) (the score of a uniform map)."""
    m = np.asarray(heart, dtype=bool)
    return m.reshape(m.shape[0], -1).mean(axis=1)


def patient_scores(
    shares_ed: np.ndarray, shares_es: np.ndarray, patient_ids: Sequence[str]
) -> dict[str, float]:
    """Per patient, the mean of the finite shares of its slices in both branches.

    shares_ed, shares_es: (N,) per slice; patient_ids: (N,) the slice's patient. A patient whose images
    all lack positive saliency gets NaN. Returns {patient_id: score} in first-seen order.
    """
    ed = np.asarray(shares_ed, dtype=np.float64)
    es = np.asarray(shares_es, dtype=np.float64)
    ids = list(patient_ids)
    if not (ed.shape == es.shape == (len(ids),)):
        raise ConfigError(f"patient_scores: shapes {ed.shape}, {es.shape} and {len(ids)} ids differ")
    out: dict[str, float] = {}
    for pid in dict.fromkeys(ids):
        sel = np.array([i == pid for i in ids])
        vals = np.concatenate([ed[sel], es[sel]])
        vals = vals[np.isfinite(vals)]
        out[pid] = float(vals.mean()) if vals.size else float("nan")
    return out


@dataclass(frozen=True)
class ScoreSummary:
    """In-heart score of one configuration over splits.

    mean: mean over splits of the per-split mean over test patients. ci_splits: corrected resampled t interval
    across split means (NaN with < 2 splits). ci_boot: with one split only, the percentile bootstrap over its
    patients (NaN otherwise, as in the study tables). split_means: per split.
    """

    mean: float
    ci_splits: tuple[float, float]
    ci_boot: tuple[float, float]
    n_splits: int
    n_patients: int
    split_means: tuple[float, ...]


def summarize_scores(
    scores_by_split: Mapping[object, Mapping[str, float]],
    *,
    test_train_ratio: float,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> ScoreSummary:
    """Summarise per-patient scores of one configuration: {split: {patient_id: score}} -> ScoreSummary.

    `test_train_ratio`: n_test / n_train of one split (the overlap term of the intervals; 0 for one external
    cohort). NaN patient scores are dropped. Raises ConfigError when no split has a finite score.
    """
    splits: list[dict[str, float]] = []
    for _, per_patient in sorted(scores_by_split.items(), key=lambda kv: str(kv[0])):
        finite = {p: float(v) for p, v in per_patient.items() if np.isfinite(v)}
        if finite:
            splits.append(finite)
    if not splits:
        raise ConfigError("summarize_scores: no finite in-heart score in any split")
    split_means = np.array([np.mean(list(s.values())) for s in splits])
    mean = float(split_means.mean())
    # the study tables' interval (`cmrprior.utils.intervals.t_interval`); a share lies in [0, 1]
    _, lo, hi = t_interval(split_means.tolist(), test_train_ratio, level, bounds=(0.0, 1.0))
    ci_splits = (lo, hi)
    patients = sorted({p for s in splits for p in s})
    ci_boot = (math.nan, math.nan)
    draws = _cluster_draws(splits, patients, n_boot=n_boot, seed=seed) if len(splits) == 1 else None
    if draws is not None and np.isfinite(draws).any():  # one model (e.g. the held-out cohort's): its bootstrap
        lo, hi = np.nanquantile(draws[0], [0.5 - level / 2, 0.5 + level / 2])
        ci_boot = (float(lo), float(hi))
    return ScoreSummary(
        mean=mean,
        ci_splits=ci_splits,
        ci_boot=ci_boot,
        n_splits=len(splits),
        n_patients=len(patients),
        split_means=tuple(float(v) for v in split_means),
    )


def _cluster_draws(splits: list[dict[str, float]], patients: list[str], *, n_boot: int, seed: int
                   ) -> np.ndarray | None:
    """`(n_splits, n_boot)` per-split mean scores in `n_boot` draws of the patients (a drawn patient counts, with
    its multiplicity, in every split where it is tested); None without draws."""
    if n_boot < 1 or len(patients) < 2:
        return None
    rng = np.random.default_rng(seed)
    index = {p: i for i, p in enumerate(patients)}
    # matrix (n_splits, n_patients): score or NaN when the patient is not tested in that split
    mat = np.full((len(splits), len(patients)), np.nan)
    for k, s in enumerate(splits):
        for p, v in s.items():
            mat[k, index[p]] = v
    present = np.isfinite(mat)
    vals = np.where(present, mat, 0.0)
    draws = rng.integers(0, len(patients), size=(n_boot, len(patients)))
    counts = np.zeros((n_boot, len(patients)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    sums = counts @ vals.T  # (n_boot, n_splits)
    ns = counts @ present.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ns > 0, sums / np.where(ns > 0, ns, 1), np.nan).T
