"""The bundle's NumPy predictor against scikit-learn's own predict_proba, for every family the anatomy model fits."""

import numpy as np
import pytest

from cmrprior.bundle.tabular import TabularPredictor, to_arrays
from cmrprior.classify.anatomy import Candidate, _estimator


def _data(n_classes: int, seed: int = 0, n: int = 90, f: int = 6):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.lognormal(3.0, 0.4, size=(n, f)) * (1 + 0.3 * y[:, None] * (np.arange(f) % 2))
    x[:, 0] -= 20.0  # negative values reach the signed log
    return x, y


CANDIDATES = [Candidate("logistic", {"C": 0.5}), Candidate("forest", {"max_depth": 3, "n_trees": 15}),
              Candidate("forest", {"max_depth": 0, "n_trees": 10})]
SPARSE = Candidate("sparse_logistic", {"C": 0.1})


def _exported_equals_sklearn(cand: Candidate, n_classes: int):
    """Fit `cand` on `_data`, export it, and check the NumPy predictor against scikit-learn's predict_proba on
    200 other rows (to 1e-12, rows summing to 1); returns the exported spec and arrays."""
    x, y = _data(n_classes)
    est = _estimator(cand, seed=3).fit(x, y)
    spec, arrays = to_arrays(est)
    pred = TabularPredictor.from_arrays(spec, arrays, n_classes)
    xt, _ = _data(n_classes, seed=1, n=200)
    np.testing.assert_allclose(pred.predict_proba(xt), est.predict_proba(xt), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pred.predict_proba(xt).sum(axis=1), 1.0)
    return spec, arrays


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("cand", CANDIDATES + [SPARSE, Candidate("vote", {}, (CANDIDATES[0], CANDIDATES[1]))],
                         ids=lambda c: c.describe() if isinstance(c, Candidate) else str(c))
def test_predictor_equals_sklearn(cand, n_classes):
    _exported_equals_sklearn(cand, n_classes)


def test_class_absent_from_the_fit_gets_zero():
    """A fit that saw classes 0 and 2 of 3: column 1 is 0 and the others are scikit-learn's."""
    x, y = _data(3)
    keep = y != 1
    est = _estimator(CANDIDATES[1], seed=0).fit(x[keep], y[keep])
    spec, arrays = to_arrays(est)
    p = TabularPredictor.from_arrays(spec, arrays, 3).predict_proba(x)
    assert np.all(p[:, 1] == 0)
    np.testing.assert_allclose(p[:, [0, 2]], est.predict_proba(x), atol=1e-12)


def test_thresholds_compare_in_float32_as_sklearn_does():
    """A value that lies between a float64 threshold and its float32 neighbour goes where scikit-learn sends it."""
    x, y = _data(2, n=40)
    est = _estimator(CANDIDATES[2], seed=0).fit(x, y)
    spec, arrays = to_arrays(est)
    thr = arrays["m.tree0.threshold"][0]
    feat = int(arrays["m.tree0.feature"][0])
    probe = np.repeat(x[:1], 3, axis=0)
    probe[:, feat] = [np.nextafter(thr, np.inf), thr, np.nextafter(np.float32(thr), np.float32(np.inf))]
    np.testing.assert_allclose(TabularPredictor.from_arrays(spec, arrays, 2).predict_proba(probe),
                               est.predict_proba(probe), atol=1e-12)


def test_unknown_estimator_is_refused():
    with pytest.raises(TypeError, match="cannot export"):
        to_arrays(object())


def test_missing_array_names_the_bundle():
    x, y = _data(2)
    spec, arrays = to_arrays(_estimator(CANDIDATES[0], seed=0).fit(x, y))
    del arrays["m.coef"]
    with pytest.raises(Exception, match="where.safetensors.*m.coef|m.coef"):
        TabularPredictor.from_arrays(spec, arrays, 2, where="where.safetensors")


@pytest.mark.parametrize("within", [CANDIDATES[0], CANDIDATES[1], Candidate("vote", {}, (CANDIDATES[0], CANDIDATES[2]))],
                         ids=lambda c: c.describe())
def test_staged_predictor_equals_sklearn(within):
    cand = Candidate("staged", {}, (CANDIDATES[0], within), ((3,), (4,), (0, 1, 2)), ("NOR", "RV", "DCM + HCM + MINF"))
    spec, _ = _exported_equals_sklearn(cand, 5)
    assert spec["family"] == "staged" and spec["within"][:2] == [None, None]


@pytest.mark.parametrize("main, within", [(CANDIDATES[0], CANDIDATES[1]),
                                          (Candidate("vote", {}, (CANDIDATES[0], CANDIDATES[2])), CANDIDATES[0])],
                         ids=lambda c: c.describe())
def test_pair_split_predictor_equals_sklearn(main, within):
    cand = Candidate("pairs", {}, (main, within), ((3, 4),), ("NOR/RV",), ((1, 3, 5),))
    spec, arrays = _exported_equals_sklearn(cand, 5)
    assert spec["family"] == "pairs" and spec["pairs"] == [[3, 4]] and spec["columns"] == [[1, 3, 5]]
    spec["columns"] = []
    with pytest.raises(Exception, match="one list of columns and one model per pair"):
        TabularPredictor.from_arrays(spec, arrays, 5)


def test_two_pair_splits_predictor_equals_sklearn():
    cand = Candidate("pairs", {}, (CANDIDATES[0], CANDIDATES[1], CANDIDATES[0]), ((3, 4), (1, 2)),
                     ("NOR/RV", "HCM/MINF"), ((1, 3, 5), (0, 2)))
    spec, _ = _exported_equals_sklearn(cand, 5)
    assert spec["pairs"] == [[3, 4], [1, 2]] and spec["columns"] == [[1, 3, 5], [0, 2]]
