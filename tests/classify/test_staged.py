"""The anatomy model in stages: P(class) = P(group) * P(class | group), checked by hand on a tiny dataset and
against stage models fitted separately; the CV choice of every stage on its own patients; the config."""

from __future__ import annotations

import numpy as np
import pytest

from cmrprior.classify.anatomy import (Candidate, _estimator, fit_anatomy, pair_columns, refit_out_of_fold,
                                      stage_groups)
from cmrprior.classify.config import AnatomyConfig
from cmrprior.classify.staged import PairSplitClassifier, StagedClassifier, group_labels
from cmrprior.errors import ConfigError

NAMES = ("DCM", "HCM", "MINF", "NOR", "RV")
GROUPS = (("NOR",), ("RV",), ("DCM", "HCM", "MINF"))


class _Table:
    """A fixed "classifier": the probabilities of each row are looked up by the row's first value."""

    def __init__(self, table: dict[float, list[float]], classes: list[int]) -> None:
        self.table, self.classes_ = table, np.asarray(classes)

    def fit(self, x, y):
        self.fitted_on = (x.copy(), np.asarray(y).copy())
        return self

    def predict_proba(self, x):
        return np.array([self.table[float(r[0])] for r in x])


def test_probabilities_are_the_product_of_the_stage_probabilities_by_hand():
    # classes 0..3; groups {2} and {0, 1, 3}; first stage: P(group 0 = {2}), P(group 1)
    first = _Table({1.0: [0.2, 0.8], 2.0: [0.9, 0.1]}, [0, 1])
    within = _Table({1.0: [0.5, 0.25, 0.25], 2.0: [0.1, 0.3, 0.6]}, [0, 1, 2])
    staged = StagedClassifier([(2,), (0, 1, 3)], first, [None, within])
    p = staged.predict_proba(np.array([[1.0], [2.0]]))
    # row 1: P(2) = 0.2, P(0) = 0.8 * 0.5, P(1) = P(3) = 0.8 * 0.25; row 2: P(2) = 0.9, P(0) = 0.1 * 0.1, ...
    np.testing.assert_allclose(p, [[0.4, 0.2, 0.2, 0.2], [0.01, 0.03, 0.9, 0.06]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_fit_gives_each_stage_its_own_rows_and_labels():
    first = _Table({}, [0, 1])
    within = _Table({}, [0, 1, 2])
    x = np.arange(8, dtype=float)[:, None]
    y = np.array([0, 1, 2, 3, 2, 1, 0, 3])
    StagedClassifier([(2,), (0, 1, 3)], first, [None, within]).fit(x, y)
    np.testing.assert_array_equal(first.fitted_on[1], [1, 1, 0, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(within.fitted_on[0][:, 0], [0, 1, 3, 5, 6, 7])  # the rows of classes 0, 1, 3
    np.testing.assert_array_equal(within.fitted_on[1], [0, 1, 2, 1, 0, 2])  # positions in (0, 1, 3)
    np.testing.assert_array_equal(group_labels([(2,), (0, 1, 3)], y), first.fitted_on[1])


@pytest.mark.parametrize("groups, within", [([(0,), (0, 1)], [None, object()]), ([(0,), (1,)], [None, object()]),
                                            ([(0, 1), (2,)], [None, None])])
def test_bad_groups_are_refused(groups, within):
    with pytest.raises(ValueError):
        StagedClassifier(groups, object(), within)


def _data(n: int, seed: int):
    """Five classes; RV and NOR differ by `rv`, the three others by `lv`, NOR/RV from the rest by `wall`."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 5
    lv = np.array([3.0, 0.0, 1.5, 1.5, 1.5])[y] + rng.normal(0, 0.4, n)
    rv = np.array([0.0, 0.0, 0.0, 0.0, 2.0])[y] + rng.normal(0, 0.4, n)
    wall = np.array([2.0, 2.0, 2.0, 0.0, 0.0])[y] + rng.normal(0, 0.4, n)
    values = [{"lv": float(a) + 10, "rv": float(b) + 10, "wall": float(c) + 10} for a, b, c in zip(lv, rv, wall)]
    return values, y


def test_fit_anatomy_in_stages_equals_the_stages_fitted_separately():
    values, y = _data(75, 0)
    cfg = AnatomyConfig(families=("logistic",), cs=(0.1, 1.0), groups=GROUPS, pairs=(), pair_measures=())
    model = fit_anatomy(values, y.tolist(), n_classes=5, config=cfg, cv_folds=3, seed=4, class_names=NAMES)
    assert model.chosen.family == "staged"
    assert model.chosen.groups == ((3,), (4,), (0, 1, 2))
    assert model.chosen.describe().startswith("staged(NOR | RV | DCM + HCM + MINF: groups by logistic(C=")
    # each stage is the flat search on its own patients and labels
    x = model.matrix(values)
    first = fit_anatomy(values, group_labels(model.chosen.groups, y).tolist(), n_classes=3,
                        config=AnatomyConfig(families=("logistic",), cs=(0.1, 1.0)), cv_folds=3, seed=4)
    lv_rows = np.isin(y, (0, 1, 2))
    within = fit_anatomy([v for v, r in zip(values, lv_rows) if r], y[lv_rows].tolist(), n_classes=3,
                         config=AnatomyConfig(families=("logistic",), cs=(0.1, 1.0)), cv_folds=3, seed=4,
                         train_ids=[str(i) for i in np.flatnonzero(lv_rows)])
    assert model.chosen.members == (first.chosen, within.chosen)
    test, _ = _data(40, 1)
    p, pg, pw = model.predict_proba(test), first.predict_proba(test), within.predict_proba(test)
    np.testing.assert_allclose(p[:, 3], pg[:, 0], atol=1e-12)
    np.testing.assert_allclose(p[:, 4], pg[:, 1], atol=1e-12)
    np.testing.assert_allclose(p[:, :3], pg[:, [2]] * pw, atol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # out-of-fold rows: P(group) from the first stage's CV; P(class | group) from the LV stage's CV for its
    # patients, from its model on all LV patients for the others (who were never in its fit)
    oof = model.out_of_fold([str(i) for i in range(75)])
    np.testing.assert_allclose(oof[:, 3], first.oof[:, 0], atol=1e-12)
    np.testing.assert_allclose(oof[lv_rows][:, :3], first.oof[lv_rows][:, [2]] * within.oof, atol=1e-12)
    np.testing.assert_allclose(oof[~lv_rows][:, :3], first.oof[~lv_rows][:, [2]] * pw_of(within, values, ~lv_rows),
                               atol=1e-12)
    assert {e["stage"] for e in model.search} == {"groups", "DCM + HCM + MINF"}
    # the same candidate refitted on other folds (a hybrid's): a staged model again
    folds = [np.arange(0, 75, 3), np.arange(1, 75, 3), np.arange(2, 75, 3)]
    refit = refit_out_of_fold(model, values, y.tolist(), folds, seed=4)
    np.testing.assert_allclose(refit.sum(axis=1), 1.0)
    tr = np.setdiff1d(np.arange(75), folds[0])
    direct = _estimator(model.chosen, 4).fit(x[tr], y[tr]).predict_proba(x[folds[0]])
    np.testing.assert_allclose(refit[folds[0]], direct, atol=1e-12)


def pw_of(model, values, rows):
    return model.predict_proba([v for v, r in zip(values, rows) if r])


def test_groups_apply_only_where_they_cover_the_cohort():
    assert stage_groups(GROUPS, NAMES, 5) == ((3,), (4,), (0, 1, 2))
    assert stage_groups(GROUPS, ("DCM", "HCM", "NOR"), 3) == ((2,), (0, 1))  # the phantom's classes
    assert stage_groups(GROUPS, ("ICM", "NICM"), 2) == ()  # other labels: one model
    assert stage_groups(GROUPS, ("DCM", "HCM"), 2) == ()  # one group left: one model
    assert stage_groups((), NAMES, 5) == () and stage_groups(GROUPS, None, 5) == ()
    values, y = _data(30, 0)
    flat = fit_anatomy(values, (y % 2).tolist(), n_classes=2, config=AnatomyConfig(families=("logistic",), cs=(1.0,),
                       groups=GROUPS), cv_folds=3, seed=0, class_names=("ICM", "NICM"))
    assert flat.chosen == Candidate("logistic", {"C": 1.0})


@pytest.mark.parametrize("groups", [(("NOR",), ()), (("NOR", "RV"), ("RV",))])
def test_bad_group_config_is_refused(groups):
    with pytest.raises(ConfigError, match="anatomy.groups"):
        AnatomyConfig(groups=groups)


def test_groups_and_sparse_family_from_a_config_mapping():
    from cmrprior.experiments.config import StudyConfig

    cfg = StudyConfig.from_dict({"anatomy": {"groups": [["NOR"], ["RV"], ["DCM", "HCM", "MINF"]],
                                             "families": ["logistic", "sparse_logistic"], "sparse_cs": [0.5]}})
    assert cfg.anatomy.groups == GROUPS and cfg.anatomy.sparse_cs == (0.5,)
    assert StudyConfig.from_dict({}).anatomy.groups == ()  # default: one model over all classes


# ---- a pair of classes split again by its own model (PairSplitClassifier) ----

def test_pair_split_probabilities_by_hand():
    # classes 0..3; the main model's P(1) + P(3) shared out by the pair model of (1, 3), which reads column 1 only
    main = _Table({1.0: [0.1, 0.3, 0.2, 0.4], 2.0: [0.5, 0.1, 0.4, 0.0]}, [0, 1, 2, 3])
    pair = _Table({7.0: [0.25, 0.75], 8.0: [0.9, 0.1]}, [0, 1])  # given column 1 only: looks it up there

    split = PairSplitClassifier(main, [(1, 3)], [(1,)], [pair])
    p = split.predict_proba(np.array([[1.0, 7.0], [2.0, 8.0]]))
    # row 1: mass 0.7 -> P(1) = 0.7 * 0.25, P(3) = 0.7 * 0.75; row 2: mass 0.1 -> 0.09, 0.01
    np.testing.assert_allclose(p, [[0.1, 0.175, 0.2, 0.525], [0.5, 0.09, 0.4, 0.01]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_two_pair_splits_by_hand():
    # classes 0..4; P(1) + P(3) shared by a model reading column 1, P(0) + P(4) by one reading column 2
    main = _Table({1.0: [0.1, 0.3, 0.2, 0.3, 0.1], 2.0: [0.4, 0.1, 0.1, 0.0, 0.4]}, [0, 1, 2, 3, 4])
    pair_13 = _Table({7.0: [0.25, 0.75], 8.0: [0.9, 0.1]}, [0, 1])
    pair_04 = _Table({5.0: [0.5, 0.5], 6.0: [0.2, 0.8]}, [0, 1])
    split = PairSplitClassifier(main, [(1, 3), (0, 4)], [(1,), (2,)], [pair_13, pair_04])
    p = split.predict_proba(np.array([[1.0, 7.0, 5.0], [2.0, 8.0, 6.0]]))
    # row 1: (1, 3) mass 0.6 -> 0.15, 0.45; (0, 4) mass 0.2 -> 0.1, 0.1; class 2 keeps 0.2
    # row 2: (1, 3) mass 0.1 -> 0.09, 0.01; (0, 4) mass 0.8 -> 0.16, 0.64; class 2 keeps 0.1
    np.testing.assert_allclose(p, [[0.1, 0.15, 0.2, 0.45, 0.1], [0.16, 0.09, 0.1, 0.01, 0.64]], rtol=0, atol=1e-15)
    y = np.array([0, 1, 2, 3, 4, 4, 3, 1])
    x = np.arange(24, dtype=float).reshape(8, 3)
    split.fit(x, y)
    np.testing.assert_array_equal(pair_13.fitted_on[0], x[[1, 3, 6, 7]][:, [1]])
    np.testing.assert_array_equal(pair_13.fitted_on[1], [0, 1, 1, 0])
    np.testing.assert_array_equal(pair_04.fitted_on[0], x[[0, 4, 5]][:, [2]])
    np.testing.assert_array_equal(pair_04.fitted_on[1], [0, 1, 1])


def test_pair_split_fit_gives_the_pair_model_its_rows_columns_and_labels():
    main, pair = _Table({}, [0, 1, 2, 3]), _Table({}, [0, 1])
    x = np.arange(16, dtype=float).reshape(8, 2)
    y = np.array([0, 1, 2, 3, 2, 1, 0, 3])
    PairSplitClassifier(main, [(3, 1)], [(1,)], [pair]).fit(x, y)
    np.testing.assert_array_equal(main.fitted_on[1], y)
    np.testing.assert_array_equal(pair.fitted_on[0], [[3.0], [7.0], [11.0], [15.0]])  # column 1 of rows 1, 3, 5, 7
    np.testing.assert_array_equal(pair.fitted_on[1], [1, 0, 1, 0])  # position in (3, 1): class 1 is second


@pytest.mark.parametrize("pairs, columns", [([(0, 1, 2)], [(0,)]), ([(0, 1), (1, 2)], [(0,), (0,)]),
                                            ([(0, 1)], [()]), ([(0, 1)], [(0,), (1,)])])
def test_bad_pairs_are_refused(pairs, columns):
    with pytest.raises(ValueError):
        PairSplitClassifier(object(), pairs, columns, [object()] * len(columns))


PAIR_CFG = dict(families=("logistic",), cs=(0.1, 1.0), pairs=(("NOR", "RV"),),
                pair_measures=(("rv_edv_ml_m2", "rvef"),))


def _measures(n: int, seed: int):
    """Five classes (NAMES); NOR and RV differ by the RV's measures only, the others by the LV's and the wall."""
    values, y = _data(n, seed)
    rng = np.random.default_rng(seed + 100)
    out = [{"lv_edv_ml_m2": v["lv"], "max_wall_thickness_mm": v["wall"], "rv_edv_ml_m2": v["rv"],
            "rvef": 50.0 - 5 * (c == 4) + float(rng.normal(0, 3))} for v, c in zip(values, y)]
    return out, y


def _pair_alone(values, y, pair, keys, config):
    """The model of classes `pair` fitted as `fit_anatomy` fits a pair model: on their rows and `keys` only, label
    1 for the pair's second class, train ids the rows' positions."""
    rows = np.isin(y, pair)
    return fit_anatomy([{k: v[k] for k in keys} for v, r in zip(values, rows) if r],
                       (y[rows] == pair[1]).astype(int).tolist(), n_classes=2, config=config, cv_folds=3, seed=4,
                       train_ids=[str(i) for i in np.flatnonzero(rows)])


def test_fit_anatomy_with_a_pair_equals_the_main_and_pair_models_fitted_separately():
    values, y = _measures(75, 0)
    model = fit_anatomy(values, y.tolist(), n_classes=5, config=AnatomyConfig(**PAIR_CFG), cv_folds=3, seed=4,
                        class_names=NAMES)
    assert model.chosen.family == "pairs" and model.chosen.groups == ((3, 4),)
    assert model.chosen.columns == ((model.features.index("rv_edv_ml_m2"), model.features.index("rvef")),)
    assert model.chosen.describe().startswith("pairs(logistic(C=") and "NOR/RV split by logistic(C=" in \
        model.chosen.describe() and model.chosen.describe().endswith("on 2 measures)")
    flat_cfg = AnatomyConfig(families=("logistic",), cs=(0.1, 1.0), pairs=(), pair_measures=())
    main = fit_anatomy(values, y.tolist(), n_classes=5, config=flat_cfg, cv_folds=3, seed=4, class_names=NAMES)
    rows = np.isin(y, (3, 4))
    pair = _pair_alone(values, y, (3, 4), ("rv_edv_ml_m2", "rvef"), flat_cfg)
    assert model.chosen.members == (main.chosen, pair.chosen)
    test, _ = _measures(40, 1)
    p, pm = model.predict_proba(test), main.predict_proba(test)
    pp = pair.predict_proba([{k: v[k] for k in ("rv_edv_ml_m2", "rvef")} for v in test])
    np.testing.assert_allclose(p[:, :3], pm[:, :3], atol=1e-12)  # the other classes keep the main model's
    np.testing.assert_allclose(p[:, 3:], pm[:, 3:].sum(axis=1, keepdims=True) * pp, atol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # out-of-fold rows: the main search's; the pair's share from the pair search's CV for NOR and RV patients,
    # from the pair model on all of them for the others (never in its fit)
    oof = model.out_of_fold([str(i) for i in range(75)])
    np.testing.assert_allclose(oof[:, :3], main.oof[:, :3], atol=1e-12)
    np.testing.assert_allclose(oof[rows][:, 3:], main.oof[rows][:, 3:].sum(axis=1, keepdims=True) * pair.oof,
                               atol=1e-12)
    others = pair.predict_proba([{k: v[k] for k in ("rv_edv_ml_m2", "rvef")} for v, r in zip(values, rows) if not r])
    np.testing.assert_allclose(oof[~rows][:, 3:], main.oof[~rows][:, 3:].sum(axis=1, keepdims=True) * others,
                               atol=1e-12)
    assert {e.get("stage") for e in model.search} == {None, "NOR/RV"}
    # a pair model's importance is 0 for the measures it does not use: the mean halves the main model's there
    assert model.importance["lv_edv_ml_m2"] == pytest.approx(main.importance["lv_edv_ml_m2"] / 2)
    # the same candidate refitted on other folds (a hybrid's)
    folds = [np.arange(0, 75, 3), np.arange(1, 75, 3), np.arange(2, 75, 3)]
    refit = refit_out_of_fold(model, values, y.tolist(), folds, seed=4)
    tr = np.setdiff1d(np.arange(75), folds[0])
    x = model.matrix(values)
    np.testing.assert_allclose(refit[folds[0]], _estimator(model.chosen, 4).fit(x[tr], y[tr]).predict_proba(
        x[folds[0]]), atol=1e-12)


def test_fit_anatomy_with_two_pairs_equals_the_models_fitted_separately():
    values, y = _measures(75, 2)
    cfg = AnatomyConfig(families=("logistic",), cs=(0.1, 1.0), pairs=(("NOR", "RV"), ("HCM", "MINF")),
                        pair_measures=(("rv_edv_ml_m2", "rvef"), ("max_wall_thickness_mm", "lv_edv_ml_m2")))
    model = fit_anatomy(values, y.tolist(), n_classes=5, config=cfg, cv_folds=3, seed=4, class_names=NAMES)
    assert model.chosen.groups == ((3, 4), (1, 2)) and model.chosen.group_names == ("NOR/RV", "HCM/MINF")
    assert "NOR/RV split by" in model.chosen.describe() and "; HCM/MINF split by" in model.chosen.describe()
    flat_cfg = AnatomyConfig(families=("logistic",), cs=(0.1, 1.0), pairs=(), pair_measures=())
    main = fit_anatomy(values, y.tolist(), n_classes=5, config=flat_cfg, cv_folds=3, seed=4, class_names=NAMES)
    test, _ = _measures(40, 3)
    expected = main.predict_proba(test)
    for (a, b), keys in (((3, 4), ("rv_edv_ml_m2", "rvef")), ((1, 2), ("max_wall_thickness_mm", "lv_edv_ml_m2"))):
        pair = _pair_alone(values, y, (a, b), keys, flat_cfg)
        expected[:, [a, b]] = expected[:, [a, b]].sum(axis=1, keepdims=True) * pair.predict_proba(
            [{k: v[k] for k in keys} for v in test])
    np.testing.assert_allclose(model.predict_proba(test), expected, atol=1e-12)


def test_pairs_apply_only_where_both_classes_and_a_measure_are_there(caplog):
    cfg = AnatomyConfig(**PAIR_CFG)
    features = ("lv_edv_ml_m2", "rvef", "rv_edv_ml_m2")
    assert pair_columns(cfg, NAMES, 5, features) == (((3, 4), (2, 1)),)
    assert pair_columns(cfg, ("DCM", "HCM", "NOR"), 3, features) == ()  # the phantom's classes: no RV
    assert pair_columns(cfg, None, 5, features) == ()
    assert pair_columns(cfg, NAMES, 5, ("lv_edv_ml_m2",)) == ()  # no RV measure known for every patient
    assert "no measure of the NOR/RV pair" in caplog.text
    values, y = _measures(30, 0)
    three = fit_anatomy(values, (y % 3).tolist(), n_classes=3, config=cfg, cv_folds=3, seed=0,
                        class_names=("DCM", "HCM", "NOR"))
    assert three.chosen.family == "logistic"


@pytest.mark.parametrize("pairs, measures, match", [
    ((("NOR", "RV", "DCM"),), (("rvef",),), "anatomy.pairs"), ((("NOR", "NOR"),), (("rvef",),), "anatomy.pairs"),
    ((("NOR", "RV"),), (), "anatomy.pairs"), ((("NOR", "RV"),), ((),), "anatomy.pairs"),
    ((("NOR", "RV"),), (("rv_ef",),), "anatomy.pair_measures: unknown 'rv_ef' .did you mean 'rvef'")])
def test_bad_pair_config_is_refused(pairs, measures, match):
    with pytest.raises(ConfigError, match=match):
        AnatomyConfig(pairs=pairs, pair_measures=measures)


def test_pairs_from_a_config_mapping():
    from cmrprior.classify.config import HCM_MINF_MEASURES, RV_MEASURES
    from cmrprior.experiments.config import StudyConfig

    cfg = StudyConfig.from_dict({"anatomy": {"pairs": [["DCM", "MINF"]], "pair_measures": [["lvef", "lv_edv_ml_m2"]]}})
    assert cfg.anatomy.pairs == (("DCM", "MINF"),) and cfg.anatomy.pair_measures == (("lvef", "lv_edv_ml_m2"),)
    default = StudyConfig.from_dict({}).anatomy
    assert default.pairs == (("NOR", "RV"), ("HCM", "MINF"))
    assert default.pair_measures == (RV_MEASURES, HCM_MINF_MEASURES)
    assert StudyConfig.from_dict({"anatomy": {"pairs": [], "pair_measures": []}}).anatomy.pairs == ()
