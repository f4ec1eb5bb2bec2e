"""One cell of the study on one split: backbone x initialisation x training images -> a scored classifier.

Linear mode (the study's): frozen encoders, features computed once per candidate encoder; for SSCL inits
each pre-training batch size of the grid is a candidate; k-fold CV inside the training part chooses the
candidate, the output-layer lr and the number of epochs; the final output layer is trained on all training
patients for that many epochs and scored on the test patients (mean slice probability per patient).

Finetune mode: the first candidate encoder, the first lr; trained on the inner training part with early
stopping on the inner validation part.

`result.json` (atomic, last) is the done marker; status "unavailable" (e.g. no ImageNet weights offline)
and "failed" cells are retried on a rerun, "ok" cells are not.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmrprior.classify.data import SliceSet
from cmrprior.classify.model import build_model, save_classifier
from cmrprior.classify.search import cv_search_linear
from cmrprior.classify.train import (
    extract_features,
    fit_end_to_end,
    fit_head,
    fold_standardization,
    head_proba,
    predict_proba,
    standardization,
)
from cmrprior.errors import WeightsUnavailableError
from cmrprior.evaluate.metrics import classification_metrics, patient_probabilities
from cmrprior.utils import atomic
from cmrprior.utils.seeding import derive_seed

log = logging.getLogger(__name__)


class LeakageError(RuntimeError):
    """A test patient reached a stage that must not see it."""


def assert_disjoint(stage: str, seen_ids, test_ids) -> None:
    """Raise LeakageError when any id of `test_ids` is in `seen_ids`."""
    leaked = sorted(set(seen_ids) & set(test_ids))
    if leaked:
        raise LeakageError(f"{stage}: test patient(s) {leaked[:5]} would be seen")


def _folds(train_ids: tuple[str, ...], labels: list[int], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    from cmrprior.data.splits import stratified_kfold

    return [(list(s.train), list(s.test)) for s in stratified_kfold(list(train_ids), labels, k, seed)]


def run_cell(
    folder: Path,
    data: SliceSet,
    *,
    split_name: str,
    split_seed: int,
    train_ids: tuple[str, ...],
    test_ids: tuple[str, ...],
    inner_train: tuple[str, ...],
    inner_val: tuple[str, ...],
    backbone: str,
    init: str,
    images: str,
    pretrained: list[dict],
    config,
    classes: tuple[str, ...],
    masks_source: str,
    masks_note: str,
) -> dict:
    """Train and score one cell (or return its finished result). See the module docstring."""
    res_path = folder / "result.json"
    if res_path.exists():
        old = json.loads(res_path.read_text())
        if old.get("status") == "ok":
            return old
    c = config.classifier
    base = {
        "backbone": backbone, "init": init, "images": images, "split": split_name, "seed": split_seed,
        "classes": list(classes), "masks_source": masks_source, "masks_note": masks_note,
        "image_mode": "full" if images == "full" else config.images.segmented_mode,
        "input_size": c.input_size, "mode": c.mode,
    }
    t0 = time.time()
    try:
        result = _train_and_score(folder, data, train_ids=train_ids, test_ids=test_ids, inner_train=inner_train,
                                  inner_val=inner_val, backbone=backbone, init=init, pretrained=pretrained,
                                  config=config, classes=classes, seed=derive_seed(split_seed, "cell", backbone, init, images))
        result = {**base, "status": "ok", **result}
    except WeightsUnavailableError as exc:
        result = {**base, "status": "unavailable", "reason": str(exc)}
        log.warning("cell %s unavailable: %s", folder, exc)
    except LeakageError:
        raise
    except Exception as exc:  # one failed cell must not stop a long study; it is retried on a rerun
        result = {**base, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=8)}
        log.error("cell %s failed: %s", folder, result["reason"])
    result["wall_s"] = time.time() - t0
    atomic.write_json(res_path, result)
    if result["status"] == "ok":
        log.info("cell %s: macro AUC %.3f (%.0f s)", folder, result["test"]["metrics"]["macro_auc"] or float("nan"), result["wall_s"])
    return result


def _train_and_score(folder, data, *, train_ids, test_ids, inner_train, inner_val, backbone, init, pretrained,
                     config, classes, seed) -> dict:
    c = config.classifier
    k = len(classes)
    assert_disjoint("classifier training", train_ids, test_ids)
    candidates = [{"checkpoint": None, "batch_size": None, "patient_ids": []}] if init in ("none", "imagenet") else pretrained
    if not candidates:
        raise RuntimeError(f"init {init} needs pre-training checkpoints and none were made")
    for cand in candidates:
        assert_disjoint("pretrain (recorded)", cand.get("patient_ids", []) + cand.get("val_patient_ids", []), test_ids)
    train = data.subset_patients(list(train_ids))
    test = data.subset_patients(list(test_ids))
    label_of = dict(zip(train.patient_ids, train.patient_labels.tolist()))
    seen = {"pretrain": sorted(set(candidates[0].get("patient_ids", [])) | set(candidates[0].get("val_patient_ids", []))),
            "train": sorted(train_ids)}
    if c.mode == "linear":
        folds = _folds(train_ids, [label_of[p] for p in train_ids], config.protocol.cv_folds, derive_seed(seed, "folds"))
        for tr, va in folds:
            assert_disjoint("hyperparameter search", tr + va, test_ids)
        seen["search"] = sorted({p for tr, va in folds for p in tr + va})
        best = None
        for cand in candidates:
            model = build_model(backbone, init, k, checkpoint=cand["checkpoint"], seed=seed)
            f_train = extract_features(model, train, batch_size=c.feature_batch_size)
            if c.standardize:  # statistics of the training part only
                mean, sd = standardization(f_train)
                f_train = (f_train - mean) / sd
            search = cv_search_linear(f_train, train.labels, train.patient_index, train.patient_ids, folds, n_classes=k,
                                      lrs=c.lrs, max_epochs=c.max_epochs, batch_size=c.batch_size,
                                      weight_decay=c.weight_decay, seed=derive_seed(seed, "cv"))
            if best is None or search.cv_auc > best[1].cv_auc:
                best = (cand, search, model, f_train, (mean, sd) if c.standardize else None)
        cand, search, model, f_train, stats = best
        torch.manual_seed(derive_seed(seed, "head"))
        head = nn.Linear(f_train.shape[1], k)
        fit = fit_head(head, f_train, train.labels, lr=search.lr, weight_decay=c.weight_decay, epochs=search.epochs,
                       batch_size=c.batch_size, seed=derive_seed(seed, "final"))
        if stats is not None:
            fold_standardization(head, *stats)
        model.head.load_state_dict(head.state_dict())
        slice_probs = head_proba(head, extract_features(model, test, batch_size=c.feature_batch_size))
        history = [{"epoch": i + 1, "val_auc": a, "val_loss": lo, "train_loss": t} for i, (a, lo, t) in
                   enumerate(zip(search.curves["val_auc"], search.curves["val_loss"], search.curves["train_loss"]))]
        hyper = {"lr": search.lr, "epochs": search.epochs, "pretrain_batch_size": cand["batch_size"],
                 "standardized_features": bool(c.standardize)}
        search_info = {**search.as_dict(), "candidates": [x["batch_size"] for x in candidates]}
        history_source = "mean over CV folds of the training part (chosen lr)"
        final_train_loss = fit.history[-1]["train_loss"] if fit.history else None
    else:
        cand = candidates[0]
        model = build_model(backbone, init, k, checkpoint=cand["checkpoint"], seed=seed)
        seen["val"] = sorted(inner_val)
        seen["train"] = sorted(inner_train)
        fit = fit_end_to_end(model, train.subset_patients(list(inner_train)), mode="finetune", lr=c.lrs[0],
                             encoder_lr=c.encoder_lr, weight_decay=c.weight_decay, epochs=c.max_epochs,
                             batch_size=c.batch_size, seed=derive_seed(seed, "final"),
                             val=train.subset_patients(list(inner_val)), patience=c.patience)
        slice_probs = predict_proba(model, test, batch_size=c.feature_batch_size)
        history = fit.history
        hyper = {"lr": c.lrs[0], "encoder_lr": c.encoder_lr, "epochs": fit.best_epoch, "pretrain_batch_size": cand["batch_size"]}
        search_info = {"note": "finetune mode: fixed hyperparameters, early stopping on the inner validation part"}
        history_source = "inner validation part"
        final_train_loss = None
    for stage, ids in seen.items():
        assert_disjoint(stage, ids, test_ids)
    probs = patient_probabilities(slice_probs, test.patient_index, test.n_patients)
    labels = test.patient_labels
    save_classifier(model, folder / "model.pt", backbone=backbone, classes=list(classes),
                    meta={"init": init, "hyperparameters": hyper})
    return {
        "hyperparameters": hyper,
        "search": search_info,
        "history": history,
        "history_source": history_source,
        "final_train_loss": final_train_loss,
        "test": {
            "patient_ids": list(test.patient_ids),
            "labels": labels.tolist(),
            "probabilities": probs.tolist(),
            "metrics": classification_metrics(labels, probs, classes),
        },
        "seen_patient_ids": seen,
        "checkpoint": "model.pt",
        "pretrain_checkpoint": cand["checkpoint"],
    }
