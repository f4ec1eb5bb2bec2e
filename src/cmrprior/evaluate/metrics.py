"""Per-patient classification metrics: one-vs-rest AUC (macro and per class), accuracy, balanced
accuracy, confusion matrix.

Conventions: `labels` int64 `(P,)` class indices in `[0, K)`; `probs` float `(P, K)` class probabilities
(rows sum to 1). With K == 2 the macro AUC is the ordinary binary AUC of class 1 (the OvR AUCs of the two
classes are equal then). AUC is computed from mid-ranks (Mann-Whitney U, `cmrprior.utils.auc.binary_auc`), so ties count one half.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from cmrprior.errors import InputError
from cmrprior.utils.auc import binary_auc


def per_class_auc(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per class, float64 `(K,)` (NaN for a class absent or alone in `labels`)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    return np.array([binary_auc(labels == k, probs[:, k]) for k in range(probs.shape[1])])


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUC (unweighted mean over classes present); binary AUC of class 1 when K == 2.

    `probs` `(P, K)` for `labels` `(P,)`; InputError otherwise.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != len(labels):
        raise InputError(f"probs must be (P, K) with P = len(labels); got {probs.shape} for {len(labels)} labels")
    if probs.shape[1] == 2:
        return binary_auc(np.asarray(labels) == 1, probs[:, 1])
    aucs = per_class_auc(labels, probs)
    aucs = aucs[~np.isnan(aucs)]
    return float(aucs.mean()) if aucs.size else math.nan


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 `(K, K)`: rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return cm


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes that occur (rows with at least one patient)."""
    support = cm.sum(axis=1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean()) if present.any() else math.nan


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict:
    """All per-patient metrics as a JSON-ready dict.

    Keys: macro_auc, per_class_auc {class: auc or None}, accuracy, balanced_accuracy,
    confusion_matrix (list of lists, rows true), n_patients.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, k)
    pc = per_class_auc(labels, probs)
    return {
        "macro_auc": none_if_nan(macro_auc(labels, probs)),
        "per_class_auc": {str(c): none_if_nan(a) for c, a in zip(classes, pc)},
        "accuracy": float((predicted == labels).mean()) if labels.size else None,
        "balanced_accuracy": none_if_nan(balanced_accuracy(cm)),
        "confusion_matrix": cm.tolist(),
        "n_patients": int(labels.size),
    }


def patient_probabilities(slice_probs: np.ndarray, patient_index: np.ndarray, n_patients: int) -> np.ndarray:
    """Mean of each patient's slice probabilities: `(N, K)` slices -> `(P, K)`; NaN rows for no slices."""
    slice_probs = np.asarray(slice_probs, dtype=np.float64)
    patient_index = np.asarray(patient_index, dtype=np.int64)
    sums = np.zeros((n_patients, slice_probs.shape[1]))
    np.add.at(sums, patient_index, slice_probs)
    counts = np.bincount(patient_index, minlength=n_patients).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def none_if_nan(x: float | None) -> float | None:
    """`x` as a float, or None where it is None or NaN: JSON's null, which strict readers accept and NaN is not."""
    return None if x is None or math.isnan(float(x)) else float(x)


def weighted_macro_auc(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro OvR AUC (binary AUC when K == 2) for many patient weightings at once.

    `weights` `(B, P)`: e.g. how often each patient occurs in each of B bootstrap resamples. With integer
    counts the result equals `macro_auc(labels[idx], probs[idx])` of the resample `idx` (the pairwise
    comparisons psi(s_i, s_j) of the original patients, weighted by w_i w_j). Returns float64 `(B,)`.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    k = probs.shape[1]
    classes = [1] if k == 2 else range(k)
    out = []
    for c in classes:
        pos = labels == c
        s = probs[:, c]
        psi = (s[pos][:, None] > s[~pos][None, :]) + 0.5 * (s[pos][:, None] == s[~pos][None, :])
        wp, wn = w[:, pos], w[:, ~pos]
        denom = wp.sum(1) * wn.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.einsum("bi,ij,bj->b", wp, psi, wn) / denom)
    arr = np.vstack(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(arr, axis=0)
