"""Patient-level stratified splits (seeded): 70/30 train/test, repeated splits, repeated k-fold, k folds
inside training. `protocol_splits` builds the outer splits of a `ProtocolConfig` (scheme "holdout": repeated
random splits; "kfold": repeated stratified k-fold, every patient tested once per repeat).

Every function takes patient ids and one label per patient, never slices: a patient is on one side only.
Built on scikit-learn's StratifiedShuffleSplit / StratifiedKFold with an integer `random_state`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmrprior.errors import ConfigError, InputError, LeakageError
from cmrprior.utils.seeding import derive_seed


@dataclass(frozen=True)
class Split:
    """Patient ids on each side of one split (each side in input order), and the seed that drew it.

    For `stratified_kfold`, `train`/`test` are the inner training and validation folds. Raises InputError
    when a patient is on both sides.
    """

    train: tuple[str, ...]
    test: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        overlap = set(self.train) & set(self.test)
        if overlap:
            raise InputError(f"patients on both sides of a split: {sorted(overlap)[:5]}")


def _check(ids: Sequence[str], labels: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    ids_arr = np.asarray([str(i) for i in ids], dtype=object)
    labels_arr = np.asarray([str(lab) for lab in labels], dtype=object)
    if len(ids_arr) != len(labels_arr):
        raise ConfigError(f"{len(ids_arr)} patient ids but {len(labels_arr)} labels")
    dup = [pid for pid, n in Counter(ids_arr.tolist()).items() if n > 1]
    if dup:
        raise ConfigError(f"duplicate patient ids: {dup[:5]}")
    if any(lab in ("None", "") for lab in labels_arr):
        raise ConfigError("every patient needs a label to be split by class (found unlabelled patients)")
    if len(set(labels_arr.tolist())) < 2:
        raise ConfigError(f"stratified splits need at least 2 classes, got {sorted(set(labels_arr.tolist()))}")
    return ids_arr, labels_arr


def _as_split(ids: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, seed: int) -> Split:
    return Split(train=tuple(ids[np.sort(train_idx)].tolist()), test=tuple(ids[np.sort(test_idx)].tolist()), seed=seed)


def _check_test_fraction(labels: np.ndarray, test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    counts = Counter(labels.tolist())
    n = len(labels)
    n_test = int(np.ceil(test_fraction * n))
    n_train = n - n_test
    small = {c: k for c, k in counts.items() if k < 2}
    if small:
        raise ConfigError(f"classes with fewer than 2 patients cannot be split: {small}")
    if n_test < len(counts) or n_train < len(counts):
        raise ConfigError(
            f"{n} patients with test_fraction={test_fraction} give {n_train} train / {n_test} test patients, "
            f"fewer than the {len(counts)} classes: each side needs one patient per class"
        )


def stratified_split(ids: Sequence[str], labels: Sequence[object], test_fraction: float = 0.3,
                     seed: int = 0) -> Split:
    """One stratified train/test split of patients (class proportions kept on both sides).

    Raises:
        ConfigError: mismatched lengths, duplicate ids, unlabelled patients, a single class, a class with
            fewer than 2 patients, or too few patients for `test_fraction`.
    """
    return repeated_splits(ids, labels, n=1, test_fraction=test_fraction, seed=seed)[0]


def repeated_splits(ids: Sequence[str], labels: Sequence[object], n: int = 10, test_fraction: float = 0.3,
                    seed: int = 0) -> list[Split]:
    """`n` independent stratified train/test splits; split r is drawn with seed `seed + r`.

    Split r is the same whatever `n` is (so adding repeats keeps earlier ones).

    Raises:
        ConfigError: as `stratified_split`, or n < 1.
    """
    from sklearn.model_selection import StratifiedShuffleSplit  # scikit-learn takes ~2 s to import

    ids_arr, labels_arr = _check(ids, labels)
    _check_test_fraction(labels_arr, test_fraction)
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    out = []
    for r in range(n):
        s = seed + r
        sss = StratifiedShuffleSplit(n_splits=1, test_size=test_fraction, random_state=s)
        train_idx, test_idx = next(sss.split(np.zeros(len(ids_arr)), labels_arr))
        out.append(_as_split(ids_arr, train_idx, test_idx, s))
    return out


def stratified_kfold(ids: Sequence[str], labels: Sequence[object], k: int = 5, seed: int = 0) -> list[Split]:
    """`k` stratified folds (shuffled with `seed`): split i has fold i as `test` (validation), the rest as `train`.

    Use it on the training part of an outer split only (hyperparameters by cross-validation).

    Raises:
        ConfigError: as `stratified_split`, k < 2, or a class with fewer than k patients.
    """
    from sklearn.model_selection import StratifiedKFold  # scikit-learn takes ~2 s to import

    ids_arr, labels_arr = _check(ids, labels)
    if k < 2:
        raise ConfigError(f"k must be >= 2, got {k}")
    counts = Counter(labels_arr.tolist())
    small = {c: m for c, m in counts.items() if m < k}
    if small:
        raise ConfigError(f"{k}-fold stratification needs at least {k} patients per class; too few in {small}")
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [_as_split(ids_arr, tr, te, seed) for tr, te in skf.split(np.zeros(len(ids_arr)), labels_arr)]


def repeated_kfold(ids: Sequence[str], labels: Sequence[object], repeats: int = 1, folds: int = 5,
                   seed: int = 0) -> list[Split]:
    """`repeats` x `folds` outer splits: repeat r is a stratified `folds`-fold partition shuffled with seed
    `seed + r`; split i = r * folds + f tests fold f of repeat r, so every patient is tested once per repeat.

    Split i gets the seed `seed + i` (unique per split: everything trained on a split derives its seeds from
    it); repeat r is the same whatever `repeats` is.

    Raises:
        ConfigError: as `stratified_kfold`, or repeats < 1.
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    out = []
    for r in range(repeats):
        for f, fold in enumerate(stratified_kfold(ids, labels, k=folds, seed=seed + r)):
            out.append(Split(train=fold.train, test=fold.test, seed=seed + r * folds + f))
    return out


PROTOCOL_SCHEMES: tuple[str, ...] = ("holdout", "kfold")


@dataclass(frozen=True)
class ProtocolConfig:
    """How patients are split for testing, and the CV inside each training part.

    scheme "holdout": `n_splits` repeated stratified splits with `test_fraction` test patients; "kfold":
    `repeats` x `folds` repeated stratified k-fold (n_splits and test_fraction unused). `seed` draws the
    splits; `cv_folds`-fold CV inside the training part for hyperparameters; `val_fraction` of the training
    patients as the inner validation part (pre-training early stopping; finetune mode)."""

    n_splits: int = 5
    test_fraction: float = 0.3
    seed: int = 0
    cv_folds: int = 3
    val_fraction: float = 0.2
    scheme: str = "holdout"
    folds: int = 5
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.n_splits < 1 or not 0 < self.test_fraction < 1 or self.cv_folds < 2 or not 0 < self.val_fraction < 1:
            raise ConfigError(f"protocol: invalid values {self}")
        if self.scheme not in PROTOCOL_SCHEMES:
            raise ConfigError(f"protocol.scheme must be one of {list(PROTOCOL_SCHEMES)}, got {self.scheme!r}")
        if self.folds < 2 or self.repeats < 1:
            raise ConfigError(f"protocol: folds >= 2 and repeats >= 1, got folds={self.folds}, repeats={self.repeats}")

    @property
    def total_splits(self) -> int:
        """Number of outer splits (train/test evaluations) the protocol makes."""
        return self.n_splits if self.scheme == "holdout" else self.repeats * self.folds

    @property
    def test_train_ratio(self) -> float:
        """n_test / n_train of one outer split (nominal), the overlap term of the corrected resampled t."""
        if self.scheme == "holdout":
            return self.test_fraction / (1 - self.test_fraction)
        return 1 / (self.folds - 1)

    def describe(self) -> str:
        """One line for table notes: which protocol ran."""
        if self.scheme == "holdout":
            return (f"repeated stratified holdout, {self.n_splits} split(s), test fraction {self.test_fraction:g} "
                    f"(test sets of different splits overlap)")
        return (f"repeated stratified {self.folds}-fold CV, {self.repeats} repeat(s) x {self.folds} folds = "
                f"{self.total_splits} split(s), every patient tested once per repeat")


def protocol_splits(ids: Sequence[str], labels: Sequence[object], protocol: ProtocolConfig) -> list[Split]:
    """The outer splits of `protocol` (see `repeated_splits`, `repeated_kfold`); raises ConfigError as they do."""
    if protocol.scheme == "kfold":
        return repeated_kfold(ids, labels, protocol.repeats, protocol.folds, protocol.seed)
    return repeated_splits(ids, labels, protocol.n_splits, protocol.test_fraction, protocol.seed)


def assert_disjoint(stage: str, seen_ids: Sequence[str], test_ids: Sequence[str]) -> None:
    """Raise LeakageError when any of `test_ids` is in `seen_ids` (what `stage` saw)."""
    leaked = sorted(set(seen_ids) & set(test_ids))
    if leaked:
        raise LeakageError(f"{stage}: test patient(s) {leaked[:5]} would be seen")


def inner_split(train_ids: Sequence[str], labels: Sequence[object], *, val_fraction: float, split_seed: int) -> Split:
    """The inner validation part of a split's training patients (pre-training early stopping, finetune
    mode): stratified, seeded from the split's seed. `cmrprior study` and `cmrprior pretrain` both use it,
    so they pre-train on the same patients for the same split."""
    return stratified_split(list(train_ids), list(labels), val_fraction, derive_seed(split_seed, "inner"))
