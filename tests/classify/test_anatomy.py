"""The anatomy classifier: separable measures give AUC ~1, unrelated ones ~0.5; the CV search sees the
training patients only; features known for every training patient only; importances as documented."""

from __future__ import annotations

import numpy as np
import pytest

import cmrprior.classify.anatomy as anatomy
from cmrprior.classify.anatomy import fit_anatomy, usable_features
from cmrprior.classify.config import AnatomyConfig
from cmrprior.errors import ConfigError, DataError
from cmrprior.evaluate.metrics import macro_auc

CHEAP = AnatomyConfig(cs=(0.1, 1.0), n_trees=20, depths=(2,), permutation_repeats=2)


def _data(n: int, k: int, separation: float, seed: int) -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    values = [{"lv_edv_ml": float(150 + separation * c + rng.normal(0, 5)), "noise_mm": float(rng.normal(0, 5)),
               "bsa_m2": None} for c in y]
    return values, y


@pytest.mark.parametrize("k", [2, 3])
def test_separable_measures_give_auc_one_unrelated_about_half(k):
    train, y = _data(60, k, 100.0, 0)
    test, yt = _data(90, k, 100.0, 1)
    model = fit_anatomy(train, y, n_classes=k, config=CHEAP, cv_folds=3, seed=0)
    assert model.predict_proba(test).shape == (90, k)
    assert macro_auc(yt, model.predict_proba(test)) > 0.98  # the middle class of one monotone feature: ~1
    train, y = _data(60, k, 0.0, 2)
    test, yt = _data(300, k, 0.0, 3)
    model = fit_anatomy(train, y, n_classes=k, config=CHEAP, cv_folds=3, seed=0)
    assert abs(macro_auc(yt, model.predict_proba(test)) - 0.5) < 0.1


def test_features_missing_for_a_training_patient_are_dropped_and_test_gaps_get_the_median():
    rows = [{"a": 1.0, "b": None, "c": float("nan"), "d": 2.0}, {"a": 2.0, "b": 3.0, "c": 1.0, "d": 3.0, "e": 1.0}]
    assert usable_features(rows) == ("a", "d")
    train, y = _data(30, 2, 100.0, 0)
    model = fit_anatomy(train, y, n_classes=2, config=CHEAP, cv_folds=3, seed=0)
    assert model.features == ("lv_edv_ml", "noise_mm")
    filled = model.matrix([{"lv_edv_ml": None, "noise_mm": 1.0}])
    assert filled[0, 0] == pytest.approx(np.median([v["lv_edv_ml"] for v in train]))
    with pytest.raises(DataError, match="no anatomy measure"):
        fit_anatomy([{"a": None}] * 6, [0, 1] * 3, n_classes=2, config=CHEAP, cv_folds=3, seed=0)
    with pytest.raises(ConfigError):
        AnatomyConfig(families=("svm",))


def test_cv_search_uses_the_training_patients_only(monkeypatch):
    """The folds are drawn over the training ids, and every fitted estimator sees training rows only (a
    test patient's row would be a row not among the training values)."""
    train, y = _data(24, 2, 100.0, 0)
    ids = [f"tr{i}" for i in range(24)]
    seen_ids, seen_rows = [], []
    folds = anatomy.stratified_kfold
    monkeypatch.setattr(anatomy, "stratified_kfold", lambda i, lab, **kw: seen_ids.append(list(i)) or folds(i, lab, **kw))
    make = anatomy._estimator

    def spy(c, seed):
        est = make(c, seed)
        fit = est.fit
        est.fit = lambda x, yy: seen_rows.append(np.array(x)) or fit(x, yy)
        return est

    monkeypatch.setattr(anatomy, "_estimator", spy)
    fit_anatomy(train, y, n_classes=2, config=CHEAP, cv_folds=3, seed=0, train_ids=ids)
    assert seen_ids == [ids]
    allowed = {tuple(r) for r in anatomy.feature_matrix(train, ("lv_edv_ml", "noise_mm"))}
    assert len(seen_rows) == 3 * 3 + 1 or len(seen_rows) == 3 * 3 + 1 + 3  # + the forest's importance folds
    assert all(tuple(r) in allowed for x in seen_rows for r in x)


def test_logistic_importance_is_the_standardised_coefficient_and_forest_ranks_the_informative_feature():
    from sklearn.linear_model import LogisticRegression

    train, y = _data(60, 3, 20.0, 0)
    model = fit_anatomy(train, y, n_classes=3, config=AnatomyConfig(families=("logistic",), cs=(1.0,)), cv_folds=3,
                        seed=0)
    raw = anatomy.feature_matrix(train, model.features)
    x = np.sign(raw) * np.log1p(np.abs(raw))  # the documented transform, written out
    z = (x - x.mean(0)) / x.std(0)
    ref = np.abs(LogisticRegression(C=1.0, max_iter=5000).fit(z, y).coef_).mean(0)
    assert [model.importance[f] for f in model.features] == pytest.approx(ref.tolist(), rel=1e-4)
    forest = fit_anatomy(train, y, n_classes=3, config=AnatomyConfig(families=("forest",), n_trees=20, depths=(3,),
                                                                     permutation_repeats=3), cv_folds=3, seed=0)
    assert forest.chosen.family == "forest"
    assert forest.importance["lv_edv_ml"] > 5 * abs(forest.importance["noise_mm"])


def test_out_of_fold_rows_come_from_fold_models_of_the_chosen_candidate():
    """Reference: the chosen candidate refitted on each CV fold's training rows, scored on its held-out rows."""
    from cmrprior.data.splits import stratified_kfold

    train, y = _data(45, 3, 20.0, 4)
    ids = [f"p{i}" for i in range(45)]
    model = fit_anatomy(train, y, n_classes=3, config=CHEAP, cv_folds=3, seed=7, train_ids=ids)
    x = anatomy.feature_matrix(train, model.features)
    pos = {p: i for i, p in enumerate(ids)}
    for f in stratified_kfold(ids, y.tolist(), k=3, seed=7):
        tr, va = [pos[p] for p in f.train], [pos[p] for p in f.test]
        est = anatomy._estimator(model.chosen, 7).fit(x[tr], y[tr])
        np.testing.assert_allclose(model.out_of_fold(list(f.test)), anatomy._proba(est, x[va], 3), atol=1e-12)


def test_permutation_importance_equals_a_feature_by_feature_loop():
    """Reference: the shuffles drawn and scored one at a time, in the documented order."""
    from cmrprior.data.splits import stratified_kfold

    train, y = _data(45, 3, 20.0, 5)
    cfg = AnatomyConfig(families=("forest",), n_trees=15, depths=(3,), permutation_repeats=3)
    model = fit_anatomy(train, y, n_classes=3, config=cfg, cv_folds=3, seed=2)
    x = anatomy.feature_matrix(train, model.features)
    ids = [str(i) for i in range(45)]
    rng = np.random.default_rng(2)
    drops = []
    for f in stratified_kfold(ids, y.tolist(), k=3, seed=2):
        tr, va = [int(p) for p in f.train], [int(p) for p in f.test]
        est = anatomy._estimator(model.chosen, 2).fit(x[tr], y[tr])
        base = macro_auc(y[va], anatomy._proba(est, x[va], 3))
        row = []
        for j in range(x.shape[1]):
            d = []
            for _ in range(3):
                xp = x[va].copy()
                xp[:, j] = xp[rng.permutation(len(va)), j]
                d.append(base - macro_auc(y[va], anatomy._proba(est, xp, 3)))
            row.append(np.mean(d))
        drops.append(row)
    assert [model.importance[f] for f in model.features] == pytest.approx(np.mean(drops, axis=0).tolist(), abs=1e-12)


def test_vote_is_scored_from_the_best_logistic_and_best_forest_fold_probabilities():
    """Reference: the best candidate of each family (by mean CV selection score, earlier on ties) refitted on each fold,
    their held-out probabilities averaged and scored; the fitted vote is the mean of its refitted members."""
    from cmrprior.data.splits import stratified_kfold

    train, y = _data(45, 3, 8.0, 6)
    ids = [f"p{i}" for i in range(45)]
    model = fit_anatomy(train, y, n_classes=3, config=CHEAP, cv_folds=3, seed=3, train_ids=ids)
    entries = [s for s in model.search if s["family"] == "vote"]
    assert len(entries) == 1
    singles = [s for s in model.search if s["family"] != "vote"]
    best = {fam: max((s for s in singles if s["family"] == fam), key=lambda s: s["mean_cv_score"])
            for fam in ("logistic", "forest")}
    cands = {c.describe(): c for c in anatomy.candidates(CHEAP)}
    members = [cands[best[f]["model"]] for f in ("logistic", "forest")]
    assert entries[0]["model"] == f"vote({members[0].describe()}, {members[1].describe()})"
    x = anatomy.feature_matrix(train, model.features)
    pos = {p: i for i, p in enumerate(ids)}
    ref = []
    for f in stratified_kfold(ids, y.tolist(), k=3, seed=3):
        tr, va = [pos[p] for p in f.train], [pos[p] for p in f.test]
        p = np.mean([anatomy._proba(anatomy._estimator(m, 3).fit(x[tr], y[tr]), x[va], 3) for m in members], axis=0)
        ref.append(macro_auc(y[va], p))
    assert entries[0]["fold_aucs"] == pytest.approx(ref, abs=1e-12)
    vote = anatomy.Candidate(anatomy.VOTE, {}, tuple(members))
    fitted = anatomy._estimator(vote, 3).fit(x, y)
    direct = np.mean([anatomy._estimator(m, 3).fit(x, y).predict_proba(x) for m in members], axis=0)
    np.testing.assert_allclose(fitted.predict_proba(x), direct, atol=1e-12)
    one_family = fit_anatomy(train, y, n_classes=3, config=AnatomyConfig(families=("logistic",), cs=(1.0,)),
                             cv_folds=3, seed=3)
    assert [s["family"] for s in one_family.search] == ["logistic"]


def test_selection_scores_against_hand_computed_values():
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.0, 1.0, 0.0], [0.1, 0.7, 0.2]])
    # log loss: -(log .8 + log .5 + log 1e-6 (the floor, for a certain error) + log .7) / 4
    expected = -(np.log(0.8) + np.log(0.5) + np.log(1e-6) + np.log(0.7)) / 4
    assert anatomy.selection_score("log_loss", y, p) == pytest.approx(-expected)
    # Brier: (0.04 + 0.01 + 0.01) + (0.04 + 0.25 + 0.09) + (0 + 1 + 1) + (0.01 + 0.09 + 0.04), over 4
    assert anatomy.selection_score("brier", y, p) == pytest.approx(-(0.06 + 0.38 + 2.0 + 0.14) / 4)
    assert anatomy.selection_score("auc", y, p) == macro_auc(y, p)
    with pytest.raises(ConfigError, match="anatomy.selection"):
        AnatomyConfig(selection="accuracy")


@pytest.mark.parametrize("selection", ["log_loss", "brier"])
def test_the_candidate_with_the_best_mean_fold_score_is_chosen(selection):
    import dataclasses

    train, y = _data(45, 3, 8.0, 6)
    config = dataclasses.replace(CHEAP, selection=selection)
    model = fit_anatomy(train, y, n_classes=3, config=config, cv_folds=3, seed=3, train_ids=[f"p{i}" for i in range(45)])
    scores = {s["model"]: s["mean_cv_score"] for s in model.search}
    assert all(s["selection"] == selection for s in model.search)
    assert model.chosen.describe() == max(scores, key=scores.get)  # first of the best on ties, as max does
    # the recorded score is the mean of the fold scores of the out-of-fold probabilities of the chosen model
    from cmrprior.data.splits import stratified_kfold

    pos = {f"p{i}": i for i in range(45)}
    folds = [[pos[p] for p in f.test] for f in stratified_kfold(list(pos), y.tolist(), k=3, seed=3)]
    ref = np.mean([anatomy.selection_score(selection, y[va], model.oof[va]) for va in folds])
    assert scores[model.chosen.describe()] == pytest.approx(ref, abs=1e-12)


def test_sparse_logistic_is_the_l1_fit_and_drops_unrelated_measures():
    from sklearn.linear_model import LogisticRegression

    train, y = _data(60, 3, 100.0, 0)
    for v, extra in zip(train, np.random.default_rng(9).normal(0, 5, size=(60, 4))):
        v.update({f"noise{i}_mm": float(e) for i, e in enumerate(extra)})
    cfg = AnatomyConfig(families=("sparse_logistic",), sparse_cs=(0.05,))
    model = fit_anatomy(train, y, n_classes=3, config=cfg, cv_folds=3, seed=0)
    assert model.chosen.describe() == "sparse_logistic(C=0.05)"
    x = anatomy.signed_log(model.matrix(train))
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    ref = LogisticRegression(C=0.05, l1_ratio=1.0, solver="saga", max_iter=20000, tol=1e-6, random_state=0).fit(z, y)
    np.testing.assert_allclose(model.estimator[-1].coef_, ref.coef_, atol=1e-8)
    coef = np.abs(model.estimator[-1].coef_).sum(axis=0)
    assert coef[model.features.index("lv_edv_ml")] > 0
    assert np.count_nonzero(coef[[model.features.index(f"noise{i}_mm") for i in range(4)]]) <= 1
