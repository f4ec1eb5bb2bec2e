"""Patient-level stratified splits: disjoint, stratified, seeded."""

from __future__ import annotations

from collections import Counter

import pytest

from cmrprior.data.splits import (ProtocolConfig, Split, protocol_splits, repeated_kfold, repeated_splits,
                                  stratified_kfold, stratified_split)
from cmrprior.errors import ConfigError

CLASSES = ("NOR", "DCM", "HCM", "MINF", "RV")
IDS = [f"patient{i:03d}" for i in range(1, 101)]
LABELS = [CLASSES[i % 5] for i in range(100)]


def test_split_is_disjoint_complete_and_stratified():
    s = stratified_split(IDS, LABELS, test_fraction=0.3, seed=0)
    assert not set(s.train) & set(s.test)
    assert sorted(s.train + s.test) == sorted(IDS)
    assert len(s.test) == 30 and len(s.train) == 70
    lab = dict(zip(IDS, LABELS))
    assert Counter(lab[p] for p in s.test) == {c: 6 for c in CLASSES}
    assert Counter(lab[p] for p in s.train) == {c: 14 for c in CLASSES}
    assert s.seed == 0


def test_binary_unbalanced_proportions():
    ids = [f"p{i}" for i in range(40)]
    labels = ["ICM"] * 30 + ["NICM"] * 10
    s = stratified_split(ids, labels, test_fraction=0.3, seed=3)
    test_counts = Counter(labels[int(p[1:])] for p in s.test)
    assert test_counts == {"ICM": 9, "NICM": 3}


def test_determinism_and_seed_dependence():
    a = repeated_splits(IDS, LABELS, n=5, test_fraction=0.3, seed=7)
    b = repeated_splits(IDS, LABELS, n=5, test_fraction=0.3, seed=7)
    assert a == b
    assert len({s.test for s in a}) == 5  # the repeats differ
    assert [s.seed for s in a] == [7, 8, 9, 10, 11]
    assert stratified_split(IDS, LABELS, seed=1) != stratified_split(IDS, LABELS, seed=2)
    # split r does not depend on how many repeats are asked for
    assert repeated_splits(IDS, LABELS, n=2, seed=7) == a[:2]


def test_no_patient_on_both_sides_ever():
    for s in repeated_splits(IDS, LABELS, n=20, seed=0):
        assert not set(s.train) & set(s.test)
        for fold in stratified_kfold(list(s.train), [LABELS[IDS.index(p)] for p in s.train], k=5, seed=s.seed):
            assert not set(fold.train) & set(fold.test)
            assert set(fold.train) | set(fold.test) == set(s.train)
            assert not set(fold.test) & set(s.test)  # validation folds come from the training part only
    with pytest.raises(ValueError, match="both sides"):
        Split(train=("a", "b"), test=("b",), seed=0)


def test_kfold_partitions_and_stratifies():
    folds = stratified_kfold(IDS, LABELS, k=5, seed=0)
    assert len(folds) == 5
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(IDS)
    assert sum(len(t) for t in tests) == 100  # each patient validated exactly once
    lab = dict(zip(IDS, LABELS))
    for f in folds:
        assert Counter(lab[p] for p in f.test) == {c: 4 for c in CLASSES}
    assert stratified_kfold(IDS, LABELS, k=5, seed=0) == folds
    assert stratified_kfold(IDS, LABELS, k=5, seed=1) != folds


def test_small_classes_and_bad_arguments():
    with pytest.raises(ConfigError, match="fewer than 2 patients"):
        stratified_split(["a", "b", "c", "d"], ["X", "X", "X", "Y"], test_fraction=0.5)
    with pytest.raises(ConfigError, match="at least 3 patients per class"):
        stratified_kfold(["a", "b", "c", "d", "e"], ["X", "X", "X", "Y", "Y"], k=3)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        stratified_split(["a", "b"], ["X", "X"])
    with pytest.raises(ConfigError, match="duplicate"):
        stratified_split(["a", "a", "b", "c"], ["X", "X", "Y", "Y"])
    with pytest.raises(ConfigError, match="test_fraction"):
        stratified_split(IDS, LABELS, test_fraction=1.0)
    with pytest.raises(ConfigError, match="unlabelled"):
        stratified_split(["a", "b", "c", "d"], ["X", None, "Y", "Y"])
    with pytest.raises(ConfigError, match="one patient per class"):
        stratified_split([f"p{i}" for i in range(10)], ["A", "B", "C", "D", "E"] * 2, test_fraction=0.2)


def test_errors_are_project_errors_and_still_value_errors():
    from cmrprior.errors import CmrPriorError

    with pytest.raises(CmrPriorError):
        Split(train=("a",), test=("a",), seed=0)
    with pytest.raises(ValueError):  # InputError is also a ValueError, for callers that catch that
        Split(train=("a",), test=("a",), seed=0)


def test_repeated_kfold_tests_every_patient_once_per_repeat():
    splits = repeated_kfold(IDS, LABELS, repeats=3, folds=5, seed=4)
    assert len(splits) == 15
    lab = dict(zip(IDS, LABELS))
    for r in range(3):
        block = splits[5 * r:5 * r + 5]
        tested = [p for s in block for p in s.test]
        assert sorted(tested) == sorted(IDS)  # each patient exactly once in this repeat
        for s in block:
            assert sorted(s.train + s.test) == sorted(IDS) and not set(s.train) & set(s.test)
            assert Counter(lab[p] for p in s.test) == {c: 4 for c in CLASSES}
    # repeats are shuffled differently; each split has its own seed (the study derives seeds from it)
    assert {s.test for s in splits[:5]} != {s.test for s in splits[5:10]}
    assert [s.seed for s in splits] == list(range(4, 19))
    # repeat r does not depend on how many repeats are asked for, and equals stratified_kfold with seed + r
    assert repeated_kfold(IDS, LABELS, repeats=1, folds=5, seed=4) == splits[:5]
    assert [s.test for s in splits[5:10]] == [f.test for f in stratified_kfold(IDS, LABELS, k=5, seed=5)]


def test_protocol_splits_default_is_the_repeated_holdout():
    p = ProtocolConfig(n_splits=3, test_fraction=0.3, seed=2)
    assert p.scheme == "holdout" and p.total_splits == 3
    assert protocol_splits(IDS, LABELS, p) == repeated_splits(IDS, LABELS, 3, 0.3, 2)
    assert p.test_train_ratio == pytest.approx(0.3 / 0.7)
    assert "holdout, 3 split(s), test fraction 0.3" in p.describe()
    k = ProtocolConfig(scheme="kfold", folds=4, repeats=2, seed=2)
    assert k.total_splits == 8 and k.test_train_ratio == pytest.approx(1 / 3)
    assert protocol_splits(IDS, LABELS, k) == repeated_kfold(IDS, LABELS, 2, 4, 2)
    assert "4-fold" in k.describe() and "2 repeat(s)" in k.describe()


@pytest.mark.parametrize("bad", [{"scheme": "loo"}, {"folds": 1}, {"repeats": 0}])
def test_protocol_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        ProtocolConfig(**bad)
