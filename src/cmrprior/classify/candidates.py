"""The anatomy model's candidates (`cmrprior.classify.anatomy`): the families searched and their names, the soft
vote of two fitted models, probabilities placed in their class columns, the score that chooses among candidates
by CV, and the importance of each measure in the chosen one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmrprior.classify.config import AnatomyConfig
# `_proba(estimator, x, n_classes)`: the same placing of a fitted model's probabilities in their class columns as the
# stages' (a class absent from the fit gets 0), one function for both
from cmrprior.classify.staged import group_probabilities as _proba
from cmrprior.evaluate.metrics import macro_auc

VOTE = "vote"
STAGED = "staged"
PAIRS = "pairs"
SPARSE = "sparse_logistic"
LOG_LOSS_FLOOR = 1e-6


@dataclass(frozen=True)
class Candidate:
    family: str
    params: dict[str, float | int]
    members: tuple[Candidate, ...] = ()  # a vote's candidates, whose probabilities it averages; a staged
    # model's first-stage candidate, then one per group of several classes
    groups: tuple[tuple[int, ...], ...] = ()  # a staged model's groups of class indices; a pair model's pairs
    group_names: tuple[str, ...] = ()
    columns: tuple[tuple[int, ...], ...] = ()  # a pair model's: each pair's feature columns

    def describe(self) -> str:
        if self.family == PAIRS:
            return (f"{PAIRS}({self.members[0].describe()}; "
                    + "; ".join(f"{n} split by {m.describe()} on {len(c)} measures"
                                for n, m, c in zip(self.group_names, self.members[1:], self.columns)) + ")")
        if self.family == STAGED:
            within = [n for g, n in zip(self.groups, self.group_names) if len(g) > 1]
            return (f"{STAGED}({' | '.join(self.group_names)}: groups by {self.members[0].describe()}; "
                    + "; ".join(f"{n} by {m.describe()}" for n, m in zip(within, self.members[1:])) + ")")
        args = [m.describe() for m in self.members] or [f"{k}={v:g}" for k, v in self.params.items()]
        return self.family + "(" + ", ".join(args) + ")"


class SoftVote:
    """Mean of the class probabilities of fitted or unfitted scikit-learn classifiers (same classes)."""

    def __init__(self, estimators: Sequence) -> None:
        self.estimators = list(estimators)

    def fit(self, x: np.ndarray, y: np.ndarray) -> SoftVote:
        for e in self.estimators:
            e.fit(x, y)
        return self

    @property
    def classes_(self) -> np.ndarray:
        return self.estimators[0].classes_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([e.predict_proba(x) for e in self.estimators], axis=0)


def candidates(config: AnatomyConfig) -> list[Candidate]:
    out = []
    for family in config.families:
        if family == "logistic":
            out += [Candidate("logistic", {"C": float(c)}) for c in sorted(config.cs)]
        elif family == SPARSE:
            out += [Candidate(SPARSE, {"C": float(c)}) for c in sorted(config.sparse_cs)]
        else:
            out += [Candidate("forest", {"max_depth": int(d), "n_trees": config.n_trees})
                    for d in sorted(config.depths, key=lambda d: d or 10**9)]
    return out


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _nanmean(xs: Sequence[float]) -> float:
    return float(np.nanmean(xs)) if not np.all(np.isnan(xs)) else float("nan")


def selection_score(selection: str, y: np.ndarray, p: np.ndarray) -> float:
    """Score of `(P, K)` probabilities `p` for labels `y` by `selection` (`AnatomyConfig.selection`), higher is
    better: macro AUC; minus the mean log loss, -mean log max(p[y], 1e-6) (the floor keeps one certain error
    of a forest from outweighing everything else); minus the mean multi-class Brier score, mean sum_k
    (p_k - [y = k])^2."""
    if selection == "auc":
        return macro_auc(y, p)
    truth = p[np.arange(len(y)), y]
    if selection == "log_loss":
        return float(np.mean(np.log(np.maximum(truth, LOG_LOSS_FLOOR))))
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return -float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _importance(est, cand: Candidate, x: np.ndarray, y: np.ndarray, n_classes: int, features: Sequence[str],
                config: AnatomyConfig, seed: int, folds: list[tuple[list[int], list[int]]], fold_ests: list
                ) -> tuple[dict[str, float], str]:
    """`fold_ests`: the chosen candidate's fold models of the CV search (fitted on `folds`' training rows)."""
    if cand.family in ("logistic", SPARSE):
        coef = np.abs(est[-1].coef_).mean(axis=0)
        return dict(zip(features, coef.tolist())), "mean |standardised coefficient| over classes (training fit)"
    rng = np.random.default_rng(seed)
    drops = np.zeros((len(folds), x.shape[1]))
    r = config.permutation_repeats
    for i, ((_, va), fold_est) in enumerate(zip(folds, fold_ests)):
        xv, yv = x[va], y[va]
        base = macro_auc(yv, _proba(fold_est, xv, n_classes))
        # every shuffled copy (feature j, repeat k) stacked into one prediction call: the same shuffles in the
        # same order as a loop, one forest pass instead of features x repeats
        copies = np.repeat(xv[None], x.shape[1] * r, axis=0)
        for j in range(x.shape[1]):
            for k in range(r):
                copies[j * r + k, :, j] = xv[rng.permutation(len(xv)), j]
        p = _proba(fold_est, copies.reshape(-1, x.shape[1]), n_classes).reshape(x.shape[1], r, len(xv), n_classes)
        drops[i] = [np.nanmean([base - macro_auc(yv, p[j, k]) for k in range(r)]) for j in range(x.shape[1])]
    return dict(zip(features, np.nanmean(drops, axis=0).tolist())), (
        f"permutation importance: drop of the validation macro AUC on the {len(folds)} CV folds of the training "
        f"part, {config.permutation_repeats} shuffles per feature and fold")
