"""Hybrid of image and anatomy probabilities (`cmrprior.classify.hybrid.fit_hybrid`)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cmrprior.classify.hybrid import choose, fit_hybrid
from cmrprior.errors import InputError


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _cohort(n, seed):
    """3 classes: the image tells class 0 from the others, the measures tell 1 from 2 (and nothing else)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    img = _softmax(np.column_stack([3.0 * (y == 0), np.zeros(n), np.zeros(n)]) + rng.normal(0, 0.7, (n, 3)))
    meas = np.column_stack([2.5 * (y == 2) + rng.normal(0, 0.7, n), rng.normal(0, 1, n)])
    anat = _softmax(np.column_stack([np.zeros(n), -meas[:, 0], meas[:, 0] - 1.2]) + rng.normal(0, 0.3, (n, 3)))
    return y, img, anat, meas


def _folds(n, k=4):
    return [np.arange(n)[np.arange(n) % k == f] for f in range(k)]


def test_hybrid_beats_each_part_when_they_know_different_things():
    y, img, anat, meas = _cohort(90, 0)
    yt, img_t, anat_t, meas_t = _cohort(90, 1)
    fit = fit_hybrid(y, img, anat, meas, _folds(90), img_t, anat_t, meas_t)
    auc = lambda p: roc_auc_score(yt, p, multi_class="ovr", average="macro")  # noqa: E731 (independent library)
    assert auc(fit.test_probabilities) > max(auc(img_t), auc(anat_t)) + 0.05
    np.testing.assert_allclose(fit.test_probabilities.sum(axis=1), 1.0, atol=1e-9)


def test_cv_estimates_match_independent_references():
    y, img, anat, meas = _cohort(60, 2)
    folds = _folds(60, 4)
    fit = fit_hybrid(y, img, anat, meas, folds, img, anat, meas, weights=(0.3,), cs=(0.5,), seed=3)
    want_late = roc_auc_score(y, 0.3 * img + 0.7 * anat, multi_class="ovr", average="macro")
    assert fit.cv_auc["late fusion (image weight 0.3)"] == pytest.approx(want_late, abs=1e-9)
    test_fold = np.empty(60, int)
    for i, f in enumerate(folds):
        test_fold[f] = i
    x = np.hstack([np.log(np.clip(img, 1e-6, 1)), meas])
    ref = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000, random_state=3)),
                            x, y, cv=PredefinedSplit(test_fold), method="predict_proba")
    want_stack = roc_auc_score(y, ref, multi_class="ovr", average="macro")
    assert fit.cv_auc["stacking (logistic regression, C 0.5)"] == pytest.approx(want_stack, abs=1e-9)
    assert fit.choice == max(fit.cv_auc, key=fit.cv_auc.get)


def test_test_patients_do_not_steer_the_choice():
    y, img, anat, meas = _cohort(60, 4)
    a = fit_hybrid(y, img, anat, meas, _folds(60), img[:10], anat[:10], meas[:10])
    rng = np.random.default_rng(9)
    b = fit_hybrid(y, img, anat, meas, _folds(60), _softmax(rng.normal(size=(10, 3))), _softmax(rng.normal(size=(10, 3))),
                   rng.normal(size=(10, 2)))
    assert a.choice == b.choice and a.cv_auc == b.cv_auc


def test_folds_must_partition_the_training_patients():
    y, img, anat, meas = _cohort(30, 5)
    with pytest.raises(InputError, match="exactly one fold"):
        fit_hybrid(y, img, anat, meas, [np.arange(10), np.arange(5, 30)], img, anat, meas)
    with pytest.raises(InputError, match="number of training patients"):
        fit_hybrid(y, img[:20], anat, meas, _folds(30), img, anat, meas)


def test_a_part_that_adds_nothing_is_left_out():
    """Images that are noise: the training part's CV picks the anatomy model alone (image weight 0), and the
    hybrid's test probabilities are the anatomy model's."""
    rng = np.random.default_rng(11)
    y, _, anat, meas = _cohort(90, 6)
    yt, _, anat_t, meas_t = _cohort(30, 7)
    noise, noise_t = _softmax(rng.normal(size=(90, 3))), _softmax(rng.normal(size=(30, 3)))
    fit = fit_hybrid(y, noise, anat, meas, _folds(90), noise_t, anat_t, meas_t, cs=())
    assert fit.choice == "late fusion (image weight 0)"
    assert fit.cv_auc[fit.choice] == pytest.approx(roc_auc_score(y, anat, multi_class="ovr", average="macro"))
    np.testing.assert_allclose(fit.test_probabilities, anat_t)
    fit = fit_hybrid(y, anat, noise, meas, _folds(90), anat_t, noise_t, meas_t, cs=())  # the parts swapped
    assert fit.choice == "late fusion (image weight 1)"
    np.testing.assert_allclose(fit.test_probabilities, anat_t)


def test_one_standard_error_rule_on_hand_computed_folds():
    parts = ["late fusion (image weight 0)", "late fusion (image weight 1)"]
    cv = {parts[0]: 0.90, "late fusion (image weight 0.5)": 0.93, parts[1]: 0.70}
    # paired differences +0.05, -0.01, +0.05: mean 0.03, SD 0.034641, SE 0.02; 0.03 > 0.02: the fusion is kept
    folds = {parts[0]: (0.90, 0.92, 0.88), "late fusion (image weight 0.5)": (0.95, 0.91, 0.93), parts[1]: (.7, .7, .7)}
    assert choose(cv, folds, parts) == "late fusion (image weight 0.5)"
    # the same mean with noisier folds (+0.09, -0.07, +0.07: SE 0.0503) falls back to the better part
    folds["late fusion (image weight 0.5)"] = (0.99, 0.85, 0.95)
    assert choose(cv, folds, parts) == parts[0]
    # the better part is the image model here; undefined fold AUCs are left out of the SE
    cv = {parts[0]: 0.70, "stacking (logistic regression, C 1)": 0.905, parts[1]: 0.90}
    folds = {parts[0]: (.7, .7, .7), "stacking (logistic regression, C 1)": (0.91, float("nan"), 0.898),
             parts[1]: (0.90, 0.80, 0.90)}
    assert choose(cv, folds, parts) == parts[1]  # differences +0.01, -0.002: mean 0.004 < SE 0.006
    # without the parts among the candidates, the best CV AUC decides
    assert choose({"a": 0.8, "b": 0.9}, {"a": (0.8,), "b": (0.9,)}, []) == "b"


def test_a_combination_that_wins_by_chance_gives_way_to_the_better_part():
    """Noise images: on some seeds a late fusion edges out the anatomy model in the training part's CV; its
    per-fold gain is within one standard error, so the rule keeps the anatomy model alone, with the anatomy
    model's exact test probabilities."""
    y, _, anat, meas = _cohort(60, 6)
    folds = [np.arange(f * 20, (f + 1) * 20) for f in range(3)]  # every class in every fold
    part = "late fusion (image weight 0)"
    found = 0
    for seed in range(40):
        noise = _softmax(np.random.default_rng(seed).normal(size=(60, 3)))
        fit = fit_hybrid(y, noise, anat, meas, folds, noise[:6], anat[:6], meas[:6], cs=())
        argmax = max(fit.cv_auc, key=fit.cv_auc.get)
        if argmax == part:
            continue
        found += 1
        d = np.array(fit.fold_auc[argmax]) - np.array(fit.fold_auc[part])
        assert d.mean() <= d.std(ddof=1) / np.sqrt(3)
        assert fit.choice == part
        np.testing.assert_allclose(fit.test_probabilities, anat[:6])
    assert found > 0  # the case the rule exists for occurs
