"""Hybrid diagnosis: an image model's probabilities combined with the anatomy model's (explicit measures).

Inputs are honest by construction: for the training patients, the image model's out-of-fold probabilities
(`cmrprior.runs.OutOfFold`, each from a CV fold model that left the patient out) and the anatomy model's
out-of-fold probabilities on the same folds; for the test patients, the final models' probabilities.

Candidates, chosen by macro AUC on the training part only (ties: the earlier candidate):
* late fusion `w * p_image + (1 - w) * p_anatomy` for w in `weights` (no fitting: the out-of-fold fusion is
  its cross-validated estimate). The weights include 0 and 1, the anatomy model and the image model alone,
  so that the hybrid leaves out a part that the training part's cross-validation says adds nothing (0 is
  first, so a tie keeps the measures alone);
* stacking: a standardised L2 logistic regression on `[log p_image, measures]` (C from `cs`), scored by
  cross-validation on the same folds over the training part, then refitted on every training patient.
A combination (a late fusion with 0 < w < 1, or stacking) that wins the search replaces the better part alone
(w = 0 or 1, by CV macro AUC) only when its per-fold macro AUCs exceed that part's by more, on average, than one
standard error of those paired differences (the one-standard-error rule: with a few dozen training patients, a
combination that wins the search by less than the noise of the folds is more often chance than signal, and the
simpler model is kept).
The image part enters as probabilities (the diagnosis model's patient-level summary); raw encoder
embeddings of the training patients are not used, since a fine-tuned encoder has seen their labels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cmrprior.errors import InputError
from cmrprior.evaluate.metrics import macro_auc

_EPS = 1e-6


@dataclass(frozen=True, eq=False)
class Fusion:
    """The chosen candidate, fitted: a late fusion (`image_weight`) or stacking (`stacker`, the fitted
    scikit-learn pipeline on `stack_features`), applied by `predict_proba` to new patients."""

    image_weight: float | None = None
    stacker: object | None = None

    def predict_proba(self, image: np.ndarray, anatomy: np.ndarray, measures: np.ndarray) -> np.ndarray:
        """`(P, K)` of the image and anatomy models' `(P, K)` probabilities and signed-log measures `(P, F)`."""
        if self.stacker is None:
            return self.image_weight * image + (1 - self.image_weight) * anatomy
        return _proba(self.stacker, stack_features(image, measures), image.shape[1])


@dataclass(frozen=True)
class HybridFit:
    """Test probabilities `(P, K)` of the chosen candidate, its name, every candidate's CV macro AUC and its
    macro AUC on each fold, and the chosen candidate fitted on every training patient."""

    test_probabilities: np.ndarray
    choice: str
    cv_auc: dict[str, float]
    fold_auc: dict[str, tuple[float, ...]] = field(default_factory=dict)
    fusion: Fusion | None = None


def stack_features(p_image: np.ndarray, measures: np.ndarray) -> np.ndarray:
    """The stacking model's inputs: `log` of the image probabilities (clipped at 1e-6), then the measures."""
    return np.hstack([np.log(np.clip(p_image, _EPS, 1.0)), measures])


def _logistic(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression  # scikit-learn imports in ~1 s: only when fitting
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))


def _proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with one column per class index, also for classes absent from a fold's training part."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _check(labels: np.ndarray, *arrays: np.ndarray) -> None:
    n = len(labels)
    if any(len(a) != n for a in arrays):
        raise InputError(f"hybrid inputs disagree on the number of training patients: {[len(a) for a in arrays]} vs {n}")


def fit_hybrid(
    labels: np.ndarray,
    image_oof: np.ndarray,
    anatomy_oof: np.ndarray,
    measures: np.ndarray,
    folds: Sequence[np.ndarray],
    image_test: np.ndarray,
    anatomy_test: np.ndarray,
    measures_test: np.ndarray,
    *,
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
) -> HybridFit:
    """Choose and apply the hybrid (module docstring).

    Args:
        labels: int `(P,)` class index of each training patient; rows of every training array in this order.
        image_oof, anatomy_oof: `(P, K)` out-of-fold probabilities of the training patients.
        measures: `(P, F)` anatomy features of the training patients (finite).
        folds: validation row indices of each CV fold (a partition of the training rows).
        image_test, anatomy_test, measures_test: the same for the test patients (final models).

    Raises:
        InputError: arrays of inconsistent sizes, or folds that do not partition the training rows.
    """
    labels = np.asarray(labels, np.int64)
    _check(labels, image_oof, anatomy_oof, measures)
    rows = np.sort(np.concatenate([np.asarray(f, np.int64) for f in folds])) if folds else np.zeros(0, np.int64)
    if not np.array_equal(rows, np.arange(len(labels))):
        raise InputError("hybrid folds must split the training patients, each patient in exactly one fold")
    k = image_oof.shape[1]
    cv: dict[str, float] = {}
    per_fold: dict[str, tuple[float, ...]] = {}
    make_fusion: dict[str, Callable[[], Fusion]] = {}  # the chosen candidate, fitted on demand
    for w in weights:
        name = _fusion_name(w)
        oof = w * image_oof + (1 - w) * anatomy_oof
        cv[name], per_fold[name] = macro_auc(labels, oof), _fold_aucs(labels, oof, folds)
        make_fusion[name] = functools.partial(Fusion, float(w))
    x = stack_features(image_oof, measures)
    for c in cs:
        name = f"stacking (logistic regression, C {c:g})"
        oof = np.zeros((len(labels), k))
        for va in folds:
            tr = np.setdiff1d(np.arange(len(labels)), va)
            oof[va] = _proba(_logistic(c, seed).fit(x[tr], labels[tr]), x[va], k)
        cv[name], per_fold[name] = macro_auc(labels, oof), _fold_aucs(labels, oof, folds)
        make_fusion[name] = functools.partial(lambda c: Fusion(stacker=_logistic(c, seed).fit(x, labels)), c)
    parts = [_fusion_name(w) for w in weights if w in (0.0, 1.0)]
    choice = choose(cv, per_fold, parts)
    fusion = make_fusion[choice]()
    return HybridFit(test_probabilities=np.asarray(fusion.predict_proba(image_test, anatomy_test, measures_test),
                                                   np.float64),
                     choice=choice, cv_auc=cv, fold_auc=per_fold, fusion=fusion)


def _fusion_name(w: float) -> str:
    return f"late fusion (image weight {w:g})"


def _fold_aucs(labels: np.ndarray, probabilities: np.ndarray, folds: Sequence[np.ndarray]) -> tuple[float, ...]:
    return tuple(float(macro_auc(labels[f], probabilities[f])) for f in folds)


def _best(names: Sequence[str], cv: dict[str, float]) -> str:
    """The highest CV AUC among `names` (NaN lowest; ties: the earlier name)."""
    order = list(names)
    return max(order, key=lambda n: (np.nan_to_num(cv[n], nan=-1.0), -order.index(n)))


def choose(cv: dict[str, float], fold_auc: dict[str, Sequence[float]], parts: Sequence[str]) -> str:
    """The candidate of the hybrid (module docstring): the best by `cv`, unless it is a combination whose
    per-fold AUCs exceed those of the best of `parts` (the parts alone) by at most one standard error on
    average: mean of the paired differences <= their sample SD / sqrt(folds), over the folds where both AUCs
    are defined (with fewer than 2 such folds the SE is taken as 0; with none, the best by `cv` is kept)."""
    best = _best(list(cv), cv)
    if not parts or best in parts:
        return best
    part = _best(parts, cv)
    d = np.asarray(fold_auc[best], np.float64) - np.asarray(fold_auc[part], np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return best
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size >= 2 else 0.0
    return best if float(d.mean()) > se else part
