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
