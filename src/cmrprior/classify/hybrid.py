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
The image part enters as probabilities (the diagnosis model's patient-level summary); raw encoder
embeddings of the training patients are not used, since a fine-tuned encoder has seen their labels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cmrprior.errors import InputError
from cmrprior.evaluate.metrics import macro_auc

_EPS = 1e-6


@dataclass(frozen=True)
class HybridFit:
    """Test probabilities `(P, K)` of the chosen candidate, its name, and every candidate's CV macro AUC."""

    test_probabilities: np.ndarray
    choice: str
    cv_auc: dict[str, float]


def _stack_features(p_image: np.ndarray, measures: np.ndarray) -> np.ndarray:
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
    make_test: dict[str, Callable[[], np.ndarray]] = {}  # the chosen candidate's test probabilities, on demand
    for w in weights:
        name = f"late fusion (image weight {w:g})"
        cv[name] = macro_auc(labels, w * image_oof + (1 - w) * anatomy_oof)
        make_test[name] = functools.partial(lambda w: w * image_test + (1 - w) * anatomy_test, w)
    x, x_test = _stack_features(image_oof, measures), _stack_features(image_test, measures_test)
    for c in cs:
        name = f"stacking (logistic regression, C {c:g})"
        oof = np.zeros((len(labels), k))
        for va in folds:
            tr = np.setdiff1d(np.arange(len(labels)), va)
            oof[va] = _proba(_logistic(c, seed).fit(x[tr], labels[tr]), x[va], k)
        cv[name] = macro_auc(labels, oof)
        make_test[name] = functools.partial(lambda c: _proba(_logistic(c, seed).fit(x, labels), x_test, k), c)
    choice = max(cv, key=lambda n: (np.nan_to_num(cv[n], nan=-1.0), -list(cv).index(n)))
    return HybridFit(test_probabilities=np.asarray(make_test[choice](), np.float64), choice=choice, cv_auc=cv)
