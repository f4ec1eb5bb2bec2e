"""Metrics against scikit-learn and hand-computed values."""

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics import confusion_matrix as sk_confusion

from cmrprior.evaluate.metrics import (
    binary_auc,
    classification_metrics,
    confusion_matrix,
    macro_auc,
    patient_probabilities,
    per_class_auc,
)


def test_binary_auc_hand_value():
    # positives 0.8, 0.4; negatives 0.5, 0.1, 0.4 -> pairs: (0.8>all)=3, (0.4>0.1)=1, (0.4=0.4)=0.5 -> 4.5/6
    pos = np.array([1, 1, 0, 0, 0], bool)
    s = np.array([0.8, 0.4, 0.5, 0.1, 0.4])
    assert binary_auc(pos, s) == pytest.approx(4.5 / 6)


def test_binary_auc_degenerate_is_nan():
    assert math.isnan(binary_auc(np.ones(3, bool), np.arange(3.0)))


@pytest.mark.parametrize("k,n,seed", [(3, 30, 0), (5, 50, 1), (5, 23, 2), (4, 100, 3)])
def test_macro_auc_matches_sklearn(k, n, seed):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y] * rng.random()
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p = np.round(p, 2)  # ties
    p = p / p.sum(1, keepdims=True)
    assert macro_auc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    for c, a in enumerate(per_class_auc(y, p)):
        assert a == pytest.approx(roc_auc_score(y == c, p[:, c]), abs=1e-12)


def test_binary_task_macro_is_binary_auc():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 40)
    s = rng.random(40)
    p = np.stack([1 - s, s], 1)
    assert macro_auc(y, p) == pytest.approx(roc_auc_score(y, s))


def test_confusion_accuracy_balanced_against_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 60)
    p = rng.random((60, 4))
    p /= p.sum(1, keepdims=True)
    m = classification_metrics(y, p, ["a", "b", "c", "d"])
    pred = p.argmax(1)
    assert np.array_equal(np.array(m["confusion_matrix"]), sk_confusion(y, pred, labels=range(4)))
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert set(m["per_class_auc"]) == {"a", "b", "c", "d"}
    assert np.array_equal(confusion_matrix([0, 1, 1], [1, 1, 0], 2), [[0, 1], [1, 1]])


def test_patient_probabilities_mean_of_slices():
    sp = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]])
    pp = patient_probabilities(sp, np.array([1, 1, 0]), 2)
    assert np.allclose(pp, [[0.9, 0.1], [0.3, 0.7]])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_weighted_macro_auc_equals_resampled_auc(k):
    from cmrprior.evaluate.metrics import weighted_macro_auc

    def stratified_resample(labels, rng):  # indices drawn with replacement within each class
        return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=int((labels == c).sum()), replace=True)
                               for c in np.unique(labels)])

    rng = np.random.default_rng(k)
    y = np.repeat(np.arange(k), 6)
    p = np.round(rng.random((6 * k, k)), 1)  # ties
    idxs = [stratified_resample(y, rng) for _ in range(20)]
    counts = np.stack([np.bincount(i, minlength=y.size) for i in idxs])
    fast = weighted_macro_auc(y, p, counts)
    slow = [macro_auc(y[i], p[i]) for i in idxs]
    assert np.allclose(fast, slow)
