"""Hyperparameter choice by k-fold cross-validation inside the training part of a split.

For the linear mode (cached frozen features) every candidate output-layer learning rate is trained on the
inner-training folds for `max_epochs` and scored on the inner-validation fold after every epoch
(patient-level macro AUC of mean slice probabilities). The chosen pair (lr, epochs) maximises the mean
validation AUC over folds (ties: smaller lr index, then fewer epochs). The mean validation AUC and loss per
epoch of the chosen lr are the convergence curves of Figure 1.

Folds are given as patient-id pairs (inner train, inner validation), made from the training part only
(`cmrprior.data.splits.stratified_kfold`); the test patients of the split never reach this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cmrprior.classify.train import fit_head
from cmrprior.errors import ConfigError, InputError


@dataclass(frozen=True)
class SearchResult:
    lr: float
    epochs: int
    cv_auc: float
    curves: dict = field(default_factory=dict)  # {"val_auc": [...], "val_loss": [...], "train_loss": [...]} of the chosen lr
    grid: list = field(default_factory=list)  # [{"lr", "best_epoch", "best_mean_auc", "mean_auc": [...]}]
    fold_patient_ids: list = field(default_factory=list)  # [[train ids], [val ids]] per fold

    def as_dict(self) -> dict:
        return {
            "lr": self.lr,
            "epochs": self.epochs,
            "cv_auc": None if math.isnan(self.cv_auc) else self.cv_auc,
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
) -> SearchResult:
    """Choose the output-layer lr and number of epochs by cross-validation on cached features.

    Args:
        features: float32 `(N, F)` frozen features of the slices of the TRAINING part.
        labels: int64 `(N,)` slice labels.
        slice_patient: int64 `(N,)` index into `patient_ids` per slice.
        patient_ids: the training part's patient ids.
        folds: (inner-train ids, inner-val ids) per fold, subsets of `patient_ids`.

    Raises ConfigError without folds, InputError for a fold with outside patients or one on both sides.
    """
    if not folds:
        raise ConfigError("cross-validation needs at least one fold")
    known = set(patient_ids)
    for tr, va in folds:
        if not set(tr) <= known or not set(va) <= known:
            raise InputError("fold patients must come from the training part")
        if set(tr) & set(va):
            raise InputError("a patient is on both sides of a fold")
    grid, per_lr = [], []
    for li, lr in enumerate(lrs):
        auc = np.full((len(folds), max_epochs), np.nan)
        vloss = np.full((len(folds), max_epochs), np.nan)
        tloss = np.full((len(folds), max_epochs), np.nan)
        for fi, (tr, va) in enumerate(folds):
            tr_rows, _ = _rows(patient_ids, slice_patient, tr)
            va_rows, va_local = _rows(patient_ids, slice_patient, va)
            torch.manual_seed(seed + 7919 * fi)
            head = nn.Linear(features.shape[1], n_classes)
            res = fit_head(
                head,
                features[tr_rows],
                labels[tr_rows],
                lr=lr,
                weight_decay=weight_decay,
                epochs=max_epochs,
                batch_size=batch_size,
                seed=seed + fi,
                val=(features[va_rows], labels[va_rows], va_local, len(va)),
                patience=None,
            )
            for row in res.history:
                e = row["epoch"] - 1
                auc[fi, e] = np.nan if row["val_auc"] is None else row["val_auc"]
                vloss[fi, e] = row["val_loss"]
                tloss[fi, e] = row["train_loss"]
        mean_auc = np.nanmean(auc, axis=0)
        best_e = int(np.nanargmax(mean_auc)) if not np.all(np.isnan(mean_auc)) else max_epochs - 1
        grid.append({"lr": lr, "best_epoch": best_e + 1, "best_mean_auc": _f(mean_auc[best_e]), "mean_auc": [_f(a) for a in mean_auc]})
        per_lr.append((li, best_e, mean_auc, np.nanmean(vloss, axis=0), np.nanmean(tloss, axis=0)))
    li, best_e, mean_auc, mean_vloss, mean_tloss = max(
        per_lr, key=lambda t: (np.nan_to_num(t[2][t[1]], nan=-1.0), -t[0], -t[1])
    )
    return SearchResult(
        lr=float(lrs[li]),
        epochs=best_e + 1,
        cv_auc=float(mean_auc[best_e]),
        curves={
            "val_auc": [_f(a) for a in mean_auc],
            "val_loss": [_f(a) for a in mean_vloss],
            "train_loss": [_f(a) for a in mean_tloss],
        },
        grid=grid,
        fold_patient_ids=[[list(tr), list(va)] for tr, va in folds],
    )


def _f(x: float) -> float | None:
    return None if x is None or math.isnan(float(x)) else float(x)
