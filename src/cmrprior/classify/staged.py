"""A classifier in stages that follows a clinical definition: first the group of classes, then the class
within its group, each stage its own model.

ACDC's classes fall in two kinds of disease: NOR and RV are told apart by the right ventricle (RV volume and
RVEF), DCM, HCM and MINF by the left ventricle and its wall (global dilation, hypertrophy, regional loss of
thickening). One classifier over five classes fits one boundary for every pair of classes on the same
features; in stages, the model that separates the LV diseases is fitted on LV-disease patients only and
cannot spend its capacity (or its regularisation) on the RV.

    P(class k) = P(group g(k)) * P(k | group g(k))

with `P(group)` from the first-stage model and `P(k | group)` from that group's model (1 for a group of one
class). The probabilities sum to 1 for every patient because each stage's do.

`PairSplitClassifier` keeps one model over all classes and splits again only a pair of classes that it
confuses, by a model of that pair on the pair's own measures (NOR and RV on the RV's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_probabilities(estimator, x: np.ndarray, n_columns: int) -> np.ndarray:
    """`(P, n_columns)` probabilities of a fitted scikit-learn-style classifier whose `classes_` are column
    indices; a class absent from its fit gets probability 0."""
    p = estimator.predict_proba(x)
    out = np.zeros((x.shape[0], n_columns))
    out[:, np.asarray(estimator.classes_, dtype=np.int64)] = p
    return out


def group_labels(groups: Sequence[Sequence[int]], y: Sequence[int]) -> np.ndarray:
    """The index of the group that holds each class label of `y`."""
    of = {int(c): g for g, members in enumerate(groups) for c in members}
    return np.array([of[int(c)] for c in y], dtype=np.int64)


class StagedClassifier:
    """`groups`: a partition of the class indices `0..K-1` (each a tuple of class indices); `first`: an
    unfitted classifier of the group index; `within[g]`: an unfitted classifier of the position of the class in
    `groups[g]` (None for a group of one class). `fit(x, y)` fits `first` on every row's group and `within[g]`
    on the rows of group g only; `predict_proba(x)` is `(P, K)` (module docstring)."""

    def __init__(self, groups: Sequence[Sequence[int]], first, within: Sequence[object | None]) -> None:
        self.groups = tuple(tuple(int(c) for c in g) for g in groups)
        flat = sorted(c for g in self.groups for c in g)
        if flat != list(range(len(flat))) or len(within) != len(self.groups):
            raise ValueError(f"groups must partition 0..K-1 with one model per group, got {self.groups}")
        if any((w is None) != (len(g) == 1) for g, w in zip(self.groups, within)):
            raise ValueError("a group of several classes needs its own model, a group of one class none")
        self.first = first
        self.within = list(within)
        self.n_classes = len(flat)

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(self.n_classes)

    def fit(self, x: np.ndarray, y: np.ndarray) -> StagedClassifier:
        y = np.asarray(y, dtype=np.int64)
        self.first.fit(x, group_labels(self.groups, y))
        for members, model in zip(self.groups, self.within):
            if model is not None:
                rows = np.isin(y, members)
                model.fit(x[rows], np.array([members.index(int(c)) for c in y[rows]], dtype=np.int64))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        pg = group_probabilities(self.first, x, len(self.groups))
        out = np.zeros((x.shape[0], self.n_classes))
        for g, (members, model) in enumerate(zip(self.groups, self.within)):
            inner = np.ones((x.shape[0], 1)) if model is None else group_probabilities(model, x, len(members))
            out[:, list(members)] = pg[:, [g]] * inner
        return out


class PairSplitClassifier:
    """A model over all K classes whose probability of a pair of classes is split again by a model of that pair
    alone, on the pair's own feature columns.

    ACDC's NOR and RV are told apart by the right ventricle alone (its volume and EF); among all the measures
    of the five classes, the model over all classes spends most of its weight elsewhere. The pair model is
    fitted on the pair's patients and columns only:

        P(a) = (P_main(a) + P_main(b)) * P_pair(a | {a, b}),   P(b) likewise,

    every other class keeps the main model's probability, so each row still sums to 1.

    `main`: an unfitted classifier of the K classes; `pairs`: disjoint pairs (a, b) of class indices;
    `columns[i]`: the feature columns of pair i's model; `within[i]`: an unfitted classifier of the position in
    the pair (0 = a, 1 = b), fitted on the rows of classes a and b only.
    """

    def __init__(self, main, pairs: Sequence[Sequence[int]], columns: Sequence[Sequence[int]],
                 within: Sequence[object]) -> None:
        self.pairs = tuple(tuple(int(c) for c in p) for p in pairs)
        self.columns = tuple(tuple(int(c) for c in cols) for cols in columns)
        named = [c for p in self.pairs for c in p]
        if any(len(p) != 2 for p in self.pairs) or len(named) != len(set(named)) \
                or not len(self.pairs) == len(self.columns) == len(within) or any(not c for c in self.columns):
            raise ValueError(f"disjoint pairs of class indices, each with its columns and model, got {self.pairs}")
        self.main = main
        self.within = list(within)

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.main.classes_)

    def fit(self, x: np.ndarray, y: np.ndarray) -> PairSplitClassifier:
        y = np.asarray(y, dtype=np.int64)
        self.main.fit(x, y)
        for pair, cols, model in zip(self.pairs, self.columns, self.within):
            rows = np.isin(y, pair)
            model.fit(x[np.ix_(rows, cols)], (y[rows] == pair[1]).astype(np.int64))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        classes = np.asarray(self.main.classes_, dtype=np.int64)
        out = np.zeros((x.shape[0], max(int(classes.max()), *(c for p in self.pairs for c in p)) + 1))
        out[:, classes] = self.main.predict_proba(x)
        for pair, cols, model in zip(self.pairs, self.columns, self.within):
            split_pair(out, pair, group_probabilities(model, x[:, list(cols)], 2))
        return out[:, classes]


def split_pair(p: np.ndarray, pair: Sequence[int], within: np.ndarray) -> None:
    """In place: the columns `pair` of `(P, K)` probabilities `p` get their summed mass shared by the `(P, 2)`
    probabilities `within` (PairSplitClassifier)."""
    cols = list(pair)
    p[:, cols] = p[:, cols].sum(axis=1, keepdims=True) * within
