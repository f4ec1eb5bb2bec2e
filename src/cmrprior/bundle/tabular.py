"""The anatomy model's fitted estimator as plain arrays and JSON, and its probabilities computed from them.

A bundle must load without executing code, so the scikit-learn objects that `cmrprior.classify.anatomy`
fits are never pickled: `to_arrays` turns one into a JSON spec (its structure and hyperparameters) and named
arrays (weights, saved as safetensors), and `TabularPredictor.from_arrays` rebuilds a predictor that computes
the same probabilities with NumPy alone (checked against scikit-learn in `tests/bundle/test_tabular.py`).

Families (those `fit_anatomy` fits):
- logistic: `sign(x) log(1 + |x|)` (spec `transform` "signed_log", the anatomy model's; "identity" for a
  hybrid's stacking model, whose inputs are made by `cmrprior.classify.hybrid.stack_features`) -> standardise
  (training mean and scale) -> linear scores; binary models give `[1 - s, s]` with `s` the logistic of the one
  score, multi-class ones the softmax of the scores (scikit-learn's multinomial `predict_proba`).
- forest: the mean over trees of each tree's leaf class fractions; a sample goes left where
  `float32(x[feature]) <= threshold` (scikit-learn compares float32 inputs to float64 thresholds).
- vote: the mean of its members' probabilities (`cmrprior.classify.anatomy.SoftVote`).
- staged: `P(group) * P(class | group)` (`cmrprior.classify.staged.StagedClassifier`): spec `groups` (class
  indices), `first` (the group model, its classes the group indices) and `within` (per group, the model of the
  class's position in the group; null for a group of one class).
- pairs: a model over all classes whose probability of each pair of classes is shared out again by a model of
  the pair on its own columns (`cmrprior.classify.staged.PairSplitClassifier`): spec `main`, `pairs` (class
  indices), `columns` (per pair, the feature columns its model reads) and `within` (per pair, the model of the
  position in the pair: 0 for the first class, 1 for the second).

`classes` are the class indices (into the bundle's class names) that the estimator's columns stand for; a
class absent from the fit gets probability 0 (as `AnatomyModel.predict_proba` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cmrprior.classify.staged import split_pair
from cmrprior.errors import DataError

FAMILIES = ("logistic", "forest", "vote", "staged", "pairs")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class _Logistic:
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (K', F), K' = 1 for a binary model
    intercept: np.ndarray  # (K',)
    signed_log: bool = True  # the anatomy model's inputs; a hybrid's stacking model gets its inputs as they are

    def proba(self, x: np.ndarray) -> np.ndarray:
        z = ((np.sign(x) * np.log1p(np.abs(x)) if self.signed_log else x) - self.mean) / self.scale
        scores = z @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            s = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - s, s], axis=1)
        return _softmax(scores)


@dataclass(frozen=True, eq=False)
class _Tree:
    left: np.ndarray  # int64 (N,), -1 at leaves
    right: np.ndarray
    feature: np.ndarray  # int64 (N,)
    threshold: np.ndarray  # float64 (N,)
    value: np.ndarray  # float64 (N, K') class fractions of each node

    def proba(self, x32: np.ndarray) -> np.ndarray:
        node = np.zeros(x32.shape[0], dtype=np.int64)
        rows = np.arange(x32.shape[0])
        for _ in range(self.left.size):  # depth is at most the number of nodes
            inner = self.left[node] >= 0
            if not inner.any():
                break
            f = self.feature[node[inner]]
            go_left = x32[rows[inner], f] <= self.threshold[node[inner]]
            node[inner] = np.where(go_left, self.left[node[inner]], self.right[node[inner]])
        return self.value[node]


@dataclass(frozen=True, eq=False)
class TabularPredictor:
    """`predict_proba(x)`: `(P, n_classes)` probabilities of a `(P, F)` float64 matrix (no missing values)."""

    family: str
    classes: np.ndarray  # int64 (K',): the class index of each of the estimator's columns
    n_classes: int
    logistic: _Logistic | None = None
    trees: tuple[_Tree, ...] = ()
    members: tuple[TabularPredictor, ...] = ()  # a vote's; a staged model's first stage, then one per group; a
    # pair model's main model, then one per pair
    groups: tuple[tuple[int, ...], ...] = ()  # a staged model's groups of class indices; a pair model's pairs
    columns: tuple[tuple[int, ...], ...] = ()  # a pair model's: the feature columns of each pair's model

    def _staged(self, x: np.ndarray) -> np.ndarray:
        pg = self.members[0].predict_proba(x)
        within = iter(self.members[1:])
        out = np.zeros((x.shape[0], self.n_classes))
        for g, members in enumerate(self.groups):
            inner = np.ones((x.shape[0], 1)) if len(members) == 1 else next(within).predict_proba(x)
            out[:, list(members)] = pg[:, [g]] * inner
        return out

    def _own_columns(self, x: np.ndarray) -> np.ndarray:
        if self.family == "logistic":
            return self.logistic.proba(x)
        if self.family == "forest":
            x32 = x.astype(np.float32).astype(np.float64)
            return np.mean([t.proba(x32) for t in self.trees], axis=0)
        if self.family == "staged":
            return self._staged(x)
        if self.family == "pairs":
            p = self.members[0].predict_proba(x)
            for pair, cols, model in zip(self.groups, self.columns, self.members[1:]):
                split_pair(p, pair, model.predict_proba(x[:, list(cols)]))
            return p
        return np.mean([m.predict_proba(x) for m in self.members], axis=0)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        p = self._own_columns(x)
        if self.family in ("vote", "staged", "pairs"):
            return p
        out = np.zeros((x.shape[0], self.n_classes))
        out[:, self.classes] = p
        return out

    @classmethod
    def from_arrays(cls, spec: Mapping, arrays: Mapping[str, np.ndarray], n_classes: int,
                    where: str = "bundle") -> TabularPredictor:
        """The predictor that `to_arrays` described; DataError naming `where` when a piece is missing."""
        try:
            family = spec["family"]
            if family == "vote":
                members = tuple(cls.from_arrays(m, arrays, n_classes, where) for m in spec["members"])
                return cls("vote", np.arange(n_classes), n_classes, members=members)
            if family == "staged":
                groups = tuple(tuple(int(c) for c in g) for g in spec["groups"])
                stages = [cls.from_arrays(spec["first"], arrays, len(groups), where)]
                stages += [cls.from_arrays(w, arrays, len(g), where) for g, w in zip(groups, spec["within"])
                           if w is not None]
                return cls("staged", np.arange(n_classes), n_classes, members=tuple(stages), groups=groups)
            if family == "pairs":
                pairs = tuple(tuple(int(c) for c in p) for p in spec["pairs"])
                members = (cls.from_arrays(spec["main"], arrays, n_classes, where),
                           *(cls.from_arrays(w, arrays, 2, where) for w in spec["within"]))
                if not len(pairs) == len(spec["columns"]) == len(members) - 1:
                    raise DataError(where, "a pair model needs one list of columns and one model per pair")
                return cls("pairs", np.arange(n_classes), n_classes, members=members, groups=pairs,
                           columns=tuple(tuple(int(c) for c in cols) for cols in spec["columns"]))
            key = spec["arrays"]
            classes = np.asarray(arrays[f"{key}.classes"], dtype=np.int64)
            if family == "logistic":
                lr = _Logistic(*(np.asarray(arrays[f"{key}.{n}"], dtype=np.float64)
                                 for n in ("mean", "scale", "coef", "intercept")),
                               signed_log=spec.get("transform", "signed_log") == "signed_log")
                return cls("logistic", classes, n_classes, logistic=lr)
            if family == "forest":
                trees = tuple(_Tree(*(np.asarray(arrays[f"{key}.tree{i}.{n}"], dtype=d) for n, d in _TREE_ARRAYS))
                              for i in range(int(spec["n_trees"])))
                return cls("forest", classes, n_classes, trees=trees)
        except KeyError as exc:
            raise DataError(where, f"the model's arrays lack {exc}") from None
        raise DataError(where, f"unknown model family {spec.get('family')!r} (known: {list(FAMILIES)})")


_TREE_ARRAYS = (("left", np.int64), ("right", np.int64), ("feature", np.int64), ("threshold", np.float64),
                ("value", np.float64))


def to_arrays(estimator, key: str = "m") -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON spec, named arrays) of a fitted anatomy estimator (module docstring); arrays are named
    `<key>.<part>`, members of a vote `<key>.<i>.<part>`.

    Raises:
        TypeError: an estimator of another kind.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from cmrprior.classify.anatomy import SoftVote
    from cmrprior.classify.staged import PairSplitClassifier, StagedClassifier

    if isinstance(estimator, PairSplitClassifier):
        main = to_arrays(estimator.main, f"{key}.main")
        within = [to_arrays(w, f"{key}.pair{i}") for i, w in enumerate(estimator.within)]
        return ({"family": "pairs", "main": main[0], "pairs": [list(p) for p in estimator.pairs],
                 "columns": [list(c) for c in estimator.columns], "within": [w[0] for w in within]},
                {**main[1], **{k: v for w in within for k, v in w[1].items()}})
    if isinstance(estimator, StagedClassifier):
        first = to_arrays(estimator.first, f"{key}.first")
        within = [None if w is None else to_arrays(w, f"{key}.group{g}") for g, w in enumerate(estimator.within)]
        arrays = {**first[1], **{k: v for w in within if w is not None for k, v in w[1].items()}}
        return ({"family": "staged", "groups": [list(g) for g in estimator.groups], "first": first[0],
                 "within": [None if w is None else w[0] for w in within]}, arrays)
    if isinstance(estimator, SoftVote):
        parts = [to_arrays(e, f"{key}.{i}") for i, e in enumerate(estimator.estimators)]
        return ({"family": "vote", "members": [p[0] for p in parts]},
                {k: v for p in parts for k, v in p[1].items()})
    if not isinstance(estimator, (Pipeline, RandomForestClassifier)):
        raise TypeError(f"cannot export an estimator of type {type(estimator).__name__}")
    classes = np.asarray(estimator.classes_, dtype=np.int64)
    if isinstance(estimator, Pipeline):
        scaler, lr = estimator[-2], estimator[-1]
        arrays = {"mean": scaler.mean_, "scale": scaler.scale_, "coef": lr.coef_, "intercept": lr.intercept_}
        spec = {"family": "logistic", "arrays": key, "C": float(lr.C)}
    else:
        arrays, spec = {}, {"family": "forest", "arrays": key, "n_trees": len(estimator.estimators_),
                            "max_depth": estimator.max_depth}
        for i, t in enumerate(estimator.estimators_):
            tree = t.tree_
            value = tree.value[:, 0, :].astype(np.float64)
            arrays.update({f"tree{i}.left": tree.children_left, f"tree{i}.right": tree.children_right,
                           f"tree{i}.feature": tree.feature, f"tree{i}.threshold": tree.threshold,
                           f"tree{i}.value": value / value.sum(axis=1, keepdims=True)})
    arrays["classes"] = classes
    return spec, {f"{key}.{k}": np.ascontiguousarray(np.asarray(v, dtype=np.float64 if np.asarray(v).dtype.kind == "f"
                                                                 else np.int64)) for k, v in arrays.items()}
