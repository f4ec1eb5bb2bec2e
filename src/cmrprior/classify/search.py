"""Hyperparameter choice by k-fold cross-validation inside the training part of a split.

Both training modes search the same way. For every candidate learning rate, a model is trained on the
inner-training part of each fold and scored on that fold's inner-validation part after every epoch
(patient-level macro AUC of mean slice probabilities). The chosen pair (lr, epochs) maximises the mean
validation AUC over folds (ties: smaller lr index, then fewer epochs). The mean validation AUC and loss per
epoch of the chosen lr are the convergence curves of Figure 1.

* `cv_search_linear`: the output layer on cached frozen features, every fold trained `max_epochs` epochs.
* `cv_search_finetune`: the whole model (encoders at `lr * encoder_lr_ratio`); each fold stops early after
  `patience` epochs without a lower validation loss. The number of epochs is chosen among those that every
  fold reached, so each mean is over all folds (the curves go on, averaged over the folds still running).

Folds are given as patient-id pairs (inner train, inner validation), made from the training part only
(`cmrprior.data.splits.stratified_kfold`); the test patients of the split never reach this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cmrprior.classify.data import SliceSet
from cmrprior.classify.train import FitResult, fit_end_to_end, fit_head, standardization
from cmrprior.errors import ConfigError, InputError
from cmrprior.evaluate.metrics import none_if_nan


@dataclass(frozen=True)
class SearchResult:
    lr: float
    epochs: int
    cv_auc: float
    curves: dict = field(default_factory=dict)  # {"val_auc": [...], "val_loss": [...], "train_loss": [...]} of the chosen lr
    grid: list = field(default_factory=list)  # [{"lr", "best_epoch", "best_mean_auc", "mean_auc": [...]}]
    fold_patient_ids: list = field(default_factory=list)  # [[train ids], [val ids]] per fold
    # Out-of-fold predictions of the chosen (lr, epochs): every training patient's mean slice probabilities
    # `(P, K)` from the fold model that did not train on it (stacking, late fusion); rows in `oof_patient_ids` order.
    oof_patient_ids: tuple[str, ...] = ()
    oof_probabilities: np.ndarray | None = None
    oof_folds: tuple[int, ...] = ()  # the fold of each out-of-fold row

    def as_dict(self) -> dict:
        return {
            "lr": self.lr,
            "epochs": self.epochs,
            "cv_auc": none_if_nan(self.cv_auc),
            "curves": self.curves,
            "grid": self.grid,
            "n_folds": len(self.fold_patient_ids),
        }


def _rows(patient_ids: Sequence[str], slice_patient: np.ndarray, wanted: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Slice rows of the `wanted` patients and their local patient index in `wanted` order."""
    pos = {p: i for i, p in enumerate(patient_ids)}
    local = np.full(len(patient_ids), -1, np.int64)
    local[[pos[p] for p in wanted]] = np.arange(len(wanted))
    rows = np.flatnonzero(local[slice_patient] >= 0)
    return rows, local[slice_patient[rows]]


def _check_folds(patient_ids: Sequence[str], folds: Sequence[tuple[Sequence[str], Sequence[str]]]) -> None:
    if not folds:
        raise ConfigError("cross-validation needs at least one fold")
    known = set(patient_ids)
    for tr, va in folds:
        if not set(tr) <= known or not set(va) <= known:
            raise InputError("fold patients must come from the training part")
        if set(tr) & set(va):
            raise InputError("a patient is on both sides of a fold")


def _search(
    lrs: Sequence[float],
    folds: Sequence[tuple[Sequence[str], Sequence[str]]],
    max_epochs: int,
    fit_fold: Callable[[float, int, Sequence[str], Sequence[str]], FitResult],
) -> SearchResult:
    """Run `fit_fold(lr, fold index, inner train ids, inner val ids)` over the grid and choose (lr, epochs)."""
    grid, per_lr, fold_probs = [], [], []
    for li, lr in enumerate(lrs):
        auc, vloss, tloss = (np.full((len(folds), max_epochs), np.nan) for _ in range(3))
        fold_probs.append([])
        for fi, (tr, va) in enumerate(folds):
            fit = fit_fold(lr, fi, tr, va)
            fold_probs[li].append(fit.val_patient_probs)
            for row in fit.history:
                e = row["epoch"] - 1
                auc[fi, e] = np.nan if row["val_auc"] is None else row["val_auc"]
                vloss[fi, e] = row["val_loss"]
                tloss[fi, e] = row["train_loss"]
        reached = int(np.min(np.sum(~np.isnan(vloss), axis=1)))  # epochs every fold ran (all, without early stopping)
        mean_auc = _nanmean(auc)
        eligible = mean_auc[:reached]
        best_e = int(np.nanargmax(eligible)) if not np.all(np.isnan(eligible)) else reached - 1
        grid.append({"lr": lr, "best_epoch": best_e + 1, "best_mean_auc": none_if_nan(mean_auc[best_e]), "mean_auc": [none_if_nan(a) for a in mean_auc],
                     **({} if reached == max_epochs else {"epochs_all_folds": reached})})
        per_lr.append((li, best_e, mean_auc, _nanmean(vloss), _nanmean(tloss)))
    li, best_e, mean_auc, mean_vloss, mean_tloss = max(
        per_lr, key=lambda t: (np.nan_to_num(t[2][t[1]], nan=-1.0), -t[0], -t[1])
    )
    oof_ids = tuple(p for _, va in folds for p in va)
    oof = np.concatenate([fold_probs[li][fi][best_e] for fi in range(len(folds))]) if folds else None
    return SearchResult(
        lr=float(lrs[li]),
        epochs=best_e + 1,
        cv_auc=float(mean_auc[best_e]),
        curves={
            "val_auc": [none_if_nan(a) for a in mean_auc],
            "val_loss": [none_if_nan(a) for a in mean_vloss],
            "train_loss": [none_if_nan(a) for a in mean_tloss],
        },
        grid=grid,
        fold_patient_ids=[[list(tr), list(va)] for tr, va in folds],
        oof_patient_ids=oof_ids,
        oof_probabilities=oof,
        oof_folds=tuple(fi for fi, (_, va) in enumerate(folds) for _ in va),
    )


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Column means over the non-NaN entries (NaN, without a warning, where a column has none)."""
    if not np.isnan(a).all(axis=0).any():
        return np.nanmean(a, axis=0)
    n = np.sum(~np.isnan(a), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(a, axis=0) / np.maximum(n, 1), np.nan)


def cv_search_linear(
    features: np.ndarray,
    labels: np.ndarray,
    slice_patient: np.ndarray,
    patient_ids: Sequence[str],
    folds: Sequence[tuple[Sequence[str], Sequence[str]]],
    *,
    n_classes: int,
    lrs: Sequence[float],
    max_epochs: int,
    batch_size: int = 32,
    weight_decay: float = 1e-4,
    seed: int = 0,
    standardize: bool = False,
) -> SearchResult:
    """Choose the output-layer lr and number of epochs by cross-validation on cached features.

    `standardize`: each fold standardises the features with the mean and sd of its own inner-training slices
    (`cmrprior.classify.train.standardization`), as the final fit does with all training patients', so
    that no inner-validation patient shapes the inputs of the fold that scores it.

    Args:
        features: float32 `(N, F)` frozen features of the slices of the TRAINING part.
        labels: int64 `(N,)` slice labels.
        slice_patient: int64 `(N,)` index into `patient_ids` per slice.
        patient_ids: the training part's patient ids.
        folds: (inner-train ids, inner-val ids) per fold, subsets of `patient_ids`.

    Raises ConfigError without folds, InputError for a fold with outside patients or one on both sides.
    """
    _check_folds(patient_ids, folds)

    def fit_fold(lr: float, fi: int, tr: Sequence[str], va: Sequence[str]) -> FitResult:
        tr_rows, _ = _rows(patient_ids, slice_patient, tr)
        va_rows, va_local = _rows(patient_ids, slice_patient, va)
        x_tr, x_va = features[tr_rows], features[va_rows]
        if standardize:
            mean, sd = standardization(x_tr)
            x_tr, x_va = (x_tr - mean) / sd, (x_va - mean) / sd
        torch.manual_seed(seed + 7919 * fi)
        head = nn.Linear(features.shape[1], n_classes)
        return fit_head(head, x_tr, labels[tr_rows], lr=lr, weight_decay=weight_decay, epochs=max_epochs,
                        batch_size=batch_size, seed=seed + fi, val=(x_va, labels[va_rows], va_local, len(va)),
                        patience=None)

    return _search(lrs, folds, max_epochs, fit_fold)


def cv_search_finetune(
    make_model: Callable[[], nn.Module],
    train: SliceSet,
    folds: Sequence[tuple[Sequence[str], Sequence[str]]],
    *,
    lrs: Sequence[float],
    encoder_lr_ratio: float,
    max_epochs: int,
    patience: int,
    batch_size: int = 32,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> SearchResult:
    """Choose the lr and number of epochs of end-to-end training by cross-validation (see the module doc).

    Args:
        make_model: a fresh DiagnosisModel, the same initial weights on every call (the fold models start alike).
        train: the slices of the TRAINING part; `folds` are (inner-train ids, inner-val ids) of its patients.
        encoder_lr_ratio: encoder lr = lr * ratio (head lr = lr).
        patience: early stopping on each fold's validation loss.

    Raises ConfigError without folds, InputError for a fold with outside patients or one on both sides.
    """
    _check_folds(train.patient_ids, folds)

    def fit_fold(lr: float, fi: int, tr: Sequence[str], va: Sequence[str]) -> FitResult:
        return fit_end_to_end(make_model(), train.subset_patients(list(tr)), mode="finetune", lr=lr,
                              encoder_lr=lr * encoder_lr_ratio, weight_decay=weight_decay, epochs=max_epochs,
                              batch_size=batch_size, seed=seed + fi, val=train.subset_patients(list(va)),
                              patience=patience)

    return _search(lrs, folds, max_epochs, fit_fold)


