"""The "Anatomy" model: a tabular classifier on per-patient cardiac measures (volumes, EF, mass, wall
thickness; `cmrprior.anatomy.measure.AnatomyMeasures`), the explicit form of the anatomic prior.

Features: every measure that is a finite number for every training patient (so BSA-indexed measures drop
out when heights or weights are unknown, and new `AnatomyMeasures` fields join without a code change). A
test patient's missing value is replaced by the training median. Families (`AnatomyConfig`): L2 logistic
regression over C on standardised sign(x) log(1 + |x|) features (volumes and masses are right-skewed, and
the classes differ by ratios such as RV/LV volume or mass/volume, which are differences in log space), and a
random forest over its max depth; the family and its hyperparameters
are chosen by stratified k-fold CV (`cmrprior.data.splits.stratified_kfold`, seeded) on the training
patients only, by the mean over folds of the score named by `AnatomyConfig.selection` (`selection_score`: macro
AUC, log loss or Brier score of the validation probabilities; ties: the earlier candidate, logistic first,
smaller C, shallower trees). With both families searched, one more candidate is scored on the same folds: `vote`, the mean of the
probabilities of the best logistic and the best forest candidate (its CV probabilities are the mean of theirs,
so it costs no fit; the two families err on different patients: a linear boundary in log measures against
axis-aligned thresholds, as the clinical class definitions are). `sparse_logistic`: the same pipeline with an L1 penalty over
`sparse_cs`, which keeps few measures. The chosen model is refitted on all training patients.

In stages (`AnatomyConfig.groups`, `stage_groups`; `cmrprior.classify.staged`): the search above is run once for
the group of classes on every training patient, and once per group of several classes on that group's patients;
P(class) = P(group) P(class | group). Its out-of-fold probabilities are the product of the first stage's and, for
a group's own patients, that group model's out-of-fold ones (for the other patients, the group model fitted on
the group's patients, which never saw them). Its importance is the mean over the stages of each stage's.

Pairs (`AnatomyConfig.pairs`, `pair_columns`; `cmrprior.classify.staged.PairSplitClassifier`): on top of the
model over all classes, each pair of classes of the cohort gets a model of its own, chosen by the same search on
the pair's patients and the pair's measures (`AnatomyConfig.pair_measures`); it shares out the pair's
probability. Out-of-fold rows and importance are composed as in stages (a pair model's importance is 0 for the
measures it does not use).

Importance: logistic regression: mean over classes of |standardised coefficient|; forest and vote: permutation
importance on the CV folds of the training part (each fold's model, the mean drop of its validation macro
AUC over `permutation_repeats` seeded shuffles of each feature: a forest fits its own training rows almost
perfectly, so shuffling them says little).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmrprior.classify.candidates import (PAIRS, SPARSE, STAGED, VOTE, Candidate, SoftVote, _importance, _nanmean,
                                          _proba, candidates, selection_score, signed_log)
from cmrprior.classify.config import AnatomyConfig
from cmrprior.classify.staged import (PairSplitClassifier, StagedClassifier, group_labels, group_probabilities,
                                      split_pair)
from cmrprior.data.splits import stratified_kfold
from cmrprior.errors import DataError
from cmrprior.evaluate.metrics import macro_auc


log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class AnatomyModel:
    """A fitted anatomy classifier: `predict_proba(values)` gives `(P, n_classes)` class probabilities."""

    features: tuple[str, ...]
    medians: np.ndarray  # training medians, for a test patient's missing value
    estimator: object  # a fitted scikit-learn classifier
    n_classes: int
    chosen: Candidate
    search: tuple[dict, ...]  # per candidate: family, params, mean CV macro AUC, fold AUCs
    importance: dict[str, float]
    importance_method: str
    # The chosen candidate's out-of-fold probabilities of the training patients, from the CV search's own
    # folds (each row from a fold model that did not see that patient): honest inputs for stacking.
    train_ids: tuple[str, ...] = ()
    oof: np.ndarray | None = None

    def out_of_fold(self, patient_ids: Sequence[str]) -> np.ndarray:
        """`(P, n_classes)` out-of-fold probabilities of these training patients (KeyError for others)."""
        pos = {p: i for i, p in enumerate(self.train_ids)}
        return self.oof[[pos[p] for p in patient_ids]]

    def matrix(self, values: Sequence[Mapping[str, float | None]]) -> np.ndarray:
        x = feature_matrix(values, self.features)
        return np.where(np.isnan(x), self.medians[None, :], x)

    def predict_proba(self, values: Sequence[Mapping[str, float | None]]) -> np.ndarray:
        return _proba(self.estimator, self.matrix(values), self.n_classes)


def refit_out_of_fold(model: AnatomyModel, values: Sequence[Mapping[str, float | None]], labels: Sequence[int],
                      folds: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """`(P, n_classes)` out-of-fold probabilities of training patients on the given folds (another model's, e.g.
    an image cell's CV folds): for each fold, the model's chosen candidate refitted on the other folds' rows and
    applied to the fold's rows. A hybrid that combines two parts fold by fold then has, in every fold, neither
    part trained on that fold's patients (the anatomy model's own CV folds split them otherwise).

    `values`, `labels`: the training patients (rows in fold index order); `folds`: validation row indices,
    a partition of the rows.
    """
    x, y = model.matrix(values), np.asarray(labels, dtype=np.int64)
    out = np.zeros((len(y), model.n_classes))
    for va in folds:
        tr = np.setdiff1d(np.arange(len(y)), va)
        out[va] = _proba(_estimator(model.chosen, seed).fit(x[tr], y[tr]), x[va], model.n_classes)
    return out


def usable_features(values: Sequence[Mapping[str, float | None]]) -> tuple[str, ...]:
    """Measures (in first-seen order) that are finite numbers for every patient of `values`."""
    names: list[str] = []
    for v in values:
        names += [k for k in v if k not in names]
    return tuple(n for n in names if all(_finite(v.get(n)) for v in values))


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def feature_matrix(values: Sequence[Mapping[str, float | None]], features: Sequence[str]) -> np.ndarray:
    """`(P, F)` float64 matrix of `features`; NaN where a value is missing."""
    return np.array([[float(v[f]) if _finite(v.get(f)) else np.nan for f in features] for v in values],
                    dtype=np.float64).reshape(len(values), len(features))


def _estimator(c: Candidate, seed: int):
    if c.family == VOTE:
        return SoftVote([_estimator(m, seed) for m in c.members])
    if c.family == PAIRS:
        return PairSplitClassifier(_estimator(c.members[0], seed), c.groups, c.columns,
                                   [_estimator(m, seed) for m in c.members[1:]])
    if c.family == STAGED:
        within = iter(c.members[1:])
        return StagedClassifier(c.groups, _estimator(c.members[0], seed),
                                [None if len(g) == 1 else _estimator(next(within), seed) for g in c.groups])
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if c.family == "logistic":
        return make_pipeline(FunctionTransformer(signed_log), StandardScaler(),
                             LogisticRegression(C=c.params["C"], max_iter=5000))
    if c.family == SPARSE:  # saga: the multinomial L1 fit (softmax probabilities, as the L2 model's)
        return make_pipeline(FunctionTransformer(signed_log), StandardScaler(),
                             LogisticRegression(C=c.params["C"], l1_ratio=1.0, solver="saga", max_iter=20000,
                                                tol=1e-6, random_state=seed))
    return RandomForestClassifier(n_estimators=int(c.params["n_trees"]), max_depth=int(c.params["max_depth"]) or None,
                                  random_state=seed, n_jobs=1)


def fit_anatomy(train_values: Sequence[Mapping[str, float | None]], train_labels: Sequence[int], *, n_classes: int,
                config: AnatomyConfig, cv_folds: int, seed: int, train_ids: Sequence[str] | None = None,
                class_names: Sequence[str] | None = None) -> AnatomyModel:
    """Choose (CV on these training patients only) and fit the anatomy model; see the module doc.

    `class_names`: the name of each class index; with `config.groups` (`stage_groups`) the model is fitted in
    stages (`cmrprior.classify.staged`), each stage making its own choice by CV on its own patients; with
    `config.pairs` (`pair_columns`), each pair of classes in the cohort is split again by its own model.

    Raises:
        DataError: no measure is known for every training patient.
        ConfigError: a class with fewer than `cv_folds` training patients.
    """
    features = usable_features(train_values)
    if not features:
        raise DataError(None, "no anatomy measure is a finite number for every training patient")
    x = feature_matrix(train_values, features)
    y = np.asarray(train_labels, dtype=np.int64)
    ids = list(train_ids) if train_ids is not None else [str(i) for i in range(len(y))]
    main = _fit_main(x, y, ids, features, n_classes, config, cv_folds, seed, class_names)
    pairs = pair_columns(config, class_names, n_classes, features)
    return _split_pairs(main, pairs, x, y, config, cv_folds, seed, class_names) if pairs else main


def pair_columns(config: AnatomyConfig, class_names: Sequence[str] | None, n_classes: int,
                 features: Sequence[str]) -> tuple[tuple[tuple[int, int], tuple[int, ...]], ...]:
    """`config.pairs` as (class indices, columns of `features` among the pair's measures), for each pair whose
    two classes are both in the cohort and of whose measures one at least is a feature (known for every
    training patient: without heights and weights, no BSA-indexed measure is)."""
    if class_names is None:
        return ()
    lut = {c: i for i, c in enumerate(class_names[:n_classes])}
    out = []
    for pair, measures in zip(config.pairs, config.pair_measures):
        if not all(c in lut for c in pair):
            continue
        cols = tuple(features.index(m) for m in measures if m in features)
        if not cols:
            log.warning("anatomy: no measure of the %s pair is known for every training patient (%s): no pair "
                        "model", "/".join(pair), ", ".join(measures))
            continue
        out.append(((lut[pair[0]], lut[pair[1]]), cols))
    return tuple(out)


def _split_pairs(main: AnatomyModel, pairs, x: np.ndarray, y: np.ndarray, config: AnatomyConfig, cv_folds: int,
                 seed: int, class_names: Sequence[str]) -> AnatomyModel:
    """`main` with each pair's probability split again by a model of the pair (PairSplitClassifier), chosen by
    its own CV search on the pair's patients and columns. Out-of-fold rows: the main model's, the pair's share
    from the pair search's CV for the pair's patients and from the pair model on all the pair's patients for
    the others (never in its fit)."""
    ids = list(main.train_ids)
    oof, stages, search = main.oof.copy(), [], list(main.search)
    parts = [(main.importance, main.importance_method, "all classes")]
    for pair, cols in pairs:
        rows = np.isin(y, pair)
        xp = x[np.ix_(rows, cols)]
        s = _search(xp, (y[rows] == pair[1]).astype(np.int64), [p for p, r in zip(ids, rows) if r], 2, config,
                    cv_folds, seed)
        name = f"{class_names[pair[0]]}/{class_names[pair[1]]}"
        inner = group_probabilities(s.estimator, x[:, list(cols)], 2)
        inner[rows] = s.oof
        split_pair(oof, pair, inner)
        stages.append((name, s))
        search += [{**e, "stage": name} for e in s.search]
        names = [main.features[c] for c in cols]
        imp, method = _importance(s.estimator, s.chosen, xp, s.y, 2, names, config, seed, s.cv, s.fold_ests)
        parts.append(({f: imp.get(f, 0.0) for f in main.features}, method, name))
    est = PairSplitClassifier(main.estimator, [p for p, _ in pairs], [c for _, c in pairs],
                              [s.estimator for _, s in stages])
    chosen = Candidate(PAIRS, {}, tuple([main.chosen] + [s.chosen for _, s in stages]), tuple(p for p, _ in pairs),
                       tuple(n for n, _ in stages), tuple(c for _, c in pairs))
    importance = {f: float(np.nanmean([p[0][f] for p in parts])) for f in main.features}
    method = "mean over the models (0 for a measure a pair model does not use) of: " + "; ".join(
        f"{name}: {m}" for _, m, name in parts)
    return AnatomyModel(main.features, main.medians, est, main.n_classes, chosen, tuple(search), importance, method,
                        main.train_ids, oof)


def _fit_main(x: np.ndarray, y: np.ndarray, ids: list[str], features: tuple[str, ...], n_classes: int,
              config: AnatomyConfig, cv_folds: int, seed: int, class_names: Sequence[str] | None) -> AnatomyModel:
    """The model over all classes: one search, or in stages (`config.groups`)."""
    groups = stage_groups(config.groups, class_names, n_classes)
    if not groups:
        s = _search(x, y, ids, n_classes, config, cv_folds, seed)
        importance, method = _importance(s.estimator, s.chosen, x, y, n_classes, features, config, seed, s.cv,
                                         s.fold_ests)
        return AnatomyModel(features, np.median(x, axis=0), s.estimator, n_classes, s.chosen, tuple(s.search),
                            importance, method, tuple(ids), s.oof)
    names = [" + ".join(class_names[c] for c in g) for g in groups]
    first = _search(x, group_labels(groups, y), ids, len(groups), config, cv_folds, seed)
    stages, within = [("groups", first, np.ones(len(y), dtype=bool))], []
    for g, name in zip(groups, names):
        if len(g) == 1:
            within.append(None)
            continue
        rows = np.isin(y, g)
        w = _search(x[rows], np.array([g.index(int(c)) for c in y[rows]]), [p for p, r in zip(ids, rows) if r],
                    len(g), config, cv_folds, seed)
        within.append(w)
        stages.append((name, w, rows))
    est = StagedClassifier(groups, first.estimator, [None if w is None else w.estimator for w in within])
    oof = np.zeros((len(y), n_classes))
    for k, (g, w) in enumerate(zip(groups, within)):
        inner = np.ones((len(y), 1))
        if w is not None:
            rows = np.isin(y, g)
            inner = group_probabilities(w.estimator, x, len(g))  # the rows of other groups: never in its fit
            inner[rows] = w.oof
        oof[:, list(g)] = first.oof[:, [k]] * inner
    chosen = Candidate(STAGED, {}, tuple([first.chosen] + [w.chosen for w in within if w is not None]), groups,
                       tuple(names))
    search, parts = [], []
    for name, s, rows in stages:
        search += [{**e, "stage": name} for e in s.search]
        k = len(groups) if name == "groups" else len(groups[names.index(name)])
        parts.append(_importance(s.estimator, s.chosen, x[rows], s.y, k, features, config, seed, s.cv, s.fold_ests))
    importance = {f: float(np.nanmean([p[0][f] for p in parts])) for f in features}
    method = "mean over the stages of: " + "; ".join(f"{name}: {p[1]}" for (name, _, _), p in zip(stages, parts))
    return AnatomyModel(features, np.median(x, axis=0), est, n_classes, chosen, tuple(search), importance, method,
                        tuple(ids), oof)


def stage_groups(groups: Sequence[Sequence[str]], class_names: Sequence[str] | None, n_classes: int
                 ) -> tuple[tuple[int, ...], ...]:
    """`groups` (class names, `AnatomyConfig.groups`) as class indices, restricted to the classes present:
    empty (one flat model) when no groups are set, the class names are not known, a class is in no group, or
    fewer than two groups hold a class of this cohort (a study of other labels runs the flat model)."""
    if not groups or class_names is None:
        return ()
    lut = {c: i for i, c in enumerate(class_names[:n_classes])}
    named = {c for g in groups for c in g}
    if not set(lut) <= named:
        log.info("anatomy: classes %s are in no group of anatomy.groups: one model over all classes",
                 sorted(set(lut) - named))
        return ()
    out = tuple(tuple(lut[c] for c in g if c in lut) for g in groups)
    out = tuple(g for g in out if g)
    return out if len(out) >= 2 else ()


@dataclass(frozen=True, eq=False)
class _Search:
    """One stage's CV choice: the chosen candidate refitted on all its rows, its CV entries, its out-of-fold
    probabilities, its fold models and folds (for importance)."""

    chosen: Candidate
    estimator: object
    search: list[dict]
    oof: np.ndarray
    fold_ests: list
    cv: list[tuple[list[int], list[int]]]
    y: np.ndarray


def _search(x: np.ndarray, y: np.ndarray, ids: Sequence[str], n_classes: int, config: AnatomyConfig, cv_folds: int,
            seed: int) -> _Search:
    pos = {p: i for i, p in enumerate(ids)}
    folds = stratified_kfold(list(ids), y.tolist(), k=cv_folds, seed=seed)
    cv = [([pos[p] for p in f.train], [pos[p] for p in f.test]) for f in folds]
    search, best, best_of = [], None, {}

    def score(cand: Candidate, oof: np.ndarray, fold_ests: list) -> None:
        nonlocal best
        aucs = [macro_auc(y[va], oof[va]) for _, va in cv]
        mean_auc = _nanmean(aucs)
        mean = mean_auc if config.selection == "auc" else _nanmean(
            [selection_score(config.selection, y[va], oof[va]) for _, va in cv])
        search.append({"model": cand.describe(), "family": cand.family, "params": cand.params,
                       "mean_cv_auc": mean_auc, "fold_aucs": [float(a) for a in aucs],
                       "selection": config.selection, "mean_cv_score": mean})
        entry = (mean if np.isfinite(mean) else -np.inf, cand, oof, fold_ests)
        if best is None or entry[0] > best[0]:
            best = entry
        if cand.family not in best_of or entry[0] > best_of[cand.family][0]:
            best_of[cand.family] = entry

    for cand in candidates(config):
        oof, fold_ests = np.zeros((len(y), n_classes)), []
        for tr, va in cv:
            fold_ests.append(_estimator(cand, seed).fit(x[tr], y[tr]))
            oof[va] = _proba(fold_ests[-1], x[va], n_classes)
        score(cand, oof, fold_ests)
    if {"logistic", "forest"} <= set(best_of):
        members = [best_of[f] for f in ("logistic", "forest")]
        vote = Candidate(VOTE, {}, tuple(m[1] for m in members))
        score(vote, np.mean([m[2] for m in members], axis=0), [SoftVote(pair) for pair in zip(*(m[3] for m in members))])
    chosen = best[1]
    return _Search(chosen, _estimator(chosen, seed).fit(x, y), search, best[2], best[3], cv, y)


