"""One cell of the study on one split: backbone x initialisation x training images -> a scored classifier.

The training mode is the initialisation's (`ClassifierConfig.mode_of`; the study's: None end to end, the
pre-trained inits linear). Both modes search the same way: for SSCL inits each pre-training batch size of the
grid is a candidate encoder; k-fold CV inside the training part (the same folds in both modes) chooses the
candidate, the lr and the number of epochs; the final model is trained on all training patients for that many
epochs and scored on the test patients (mean slice probability per patient; with `classifier.pooling:
patient`, linear cells score each patient's pooled slice features instead: `cmrprior.classify.pooling`).

* linear: frozen encoders, features computed once per candidate, the output layer trained on them;
* finetune: every layer trained (encoders at lr * `encoder_lr_ratio`); CV folds stop early on their own
  validation part (`cmrprior.classify.search.cv_search_finetune`).

`result.json` (atomic, last; `cmrprior.runs.CellResult`) is the done marker; status "unavailable" (e.g. no
ImageNet weights offline) and "failed" cells are retried on a rerun, "ok" cells are not.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import traceback
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cmrprior.classify.config import ClassifierConfig
from cmrprior.classify.data import SliceSet
from cmrprior.classify.model import DiagnosisModel, PooledDiagnosisModel, build_model, save_classifier
from cmrprior.classify.pooling import patient_descriptors
from cmrprior.classify.scoring import score_patients
from cmrprior.classify.search import SearchResult, cv_search_finetune, cv_search_linear
from cmrprior.classify.train import (
    extract_features,
    fit_end_to_end,
    fit_head,
    fold_standardization,
    standardization,
)
from cmrprior.data.splits import assert_disjoint, stratified_kfold
from cmrprior.errors import LeakageError, WeightsUnavailableError
from cmrprior.evaluate.metrics import classification_metrics
from cmrprior.runs import (
    CellKey,
    CellResult,
    EpochRecord,
    MasksOrigin,
    OutOfFold,
    PretrainRecord,
    RunFolder,
    TestMetrics,
    TestOutputs,
)
from cmrprior.utils.seeding import derive_seed
from cmrprior.utils.tracking import MetricsSink, trackers_from_env
from cmrprior.vocab import get_init

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellJob:
    """What one cell needs besides its images and the classifier settings."""

    key: CellKey
    split_seed: int
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    pretrained: tuple[PretrainRecord, ...]  # SSCL inits: one per pre-training batch size
    classes: tuple[str, ...]
    masks: MasksOrigin
    image_mode: str
    cv_folds: int
    trackers: tuple[str, ...] = ()  # the study's `tracking.sinks` (`cmrprior.utils.tracking`)


@dataclass(frozen=True)
class _Fit:
    """What a training mode returns: the trained model, the test patients' probabilities `(P, K)` (in
    `job.test_ids` order), and records."""

    model: DiagnosisModel
    test_probs: np.ndarray
    hyperparameters: dict
    search: dict
    history: tuple[EpochRecord, ...]
    history_source: str
    final_train_loss: float | None
    pretrain: PretrainRecord | None
    seen: dict[str, list[str]]
    search_result: SearchResult


def run_cell(run: RunFolder, job: CellJob, data: SliceSet, classifier: ClassifierConfig) -> CellResult:
    """Train and score one cell, or return its finished result. See the module docstring."""
    old = run.read_cell(job.key)
    if old is not None and old.ok:
        return old
    base = dict(key=job.key, seed=job.split_seed, classes=job.classes, masks=job.masks,
                image_mode=job.image_mode, input_size=classifier.input_size,
                mode=classifier.mode_of(job.key.init))
    t0 = time.time()
    k = job.key
    try:
        fit = _train(job, data, classifier, derive_seed(job.split_seed, "cell", k.backbone, k.init, k.images))
        result = CellResult(**base, status="ok", **_scored(run, job, data, fit), wall_s=time.time() - t0)
    except WeightsUnavailableError as exc:
        result = CellResult(**base, status="unavailable", reason=str(exc), wall_s=time.time() - t0)
        log.warning("cell %s unavailable: %s", run.cell_dir(k), exc)
    except LeakageError:
        raise
    except Exception as exc:  # one failed cell must not stop a long study; it is retried on a rerun
        result = CellResult(**base, status="failed", reason=f"{type(exc).__name__}: {exc}",
                            traceback=traceback.format_exc(limit=8), wall_s=time.time() - t0)
        log.error("cell %s failed: %s", run.cell_dir(k), result.reason)
    run.write_cell(result)
    if result.ok:
        _send_curves(run, job, result)
    return result


def _send_curves(run: RunFolder, job: CellJob, result: CellResult) -> None:
    """The cell's epoch curves (its `history`, the file of truth being result.json) to the trackers asked for."""
    if not (job.trackers or trackers_from_env()):
        return
    with MetricsSink(run.cell_dir(job.key), jsonl=None, trackers=job.trackers, name=str(run.cell_dir(job.key))) as sink:
        sink.write([dataclasses.asdict(r) for r in result.history])


def _train(job: CellJob, data: SliceSet, c: ClassifierConfig, seed: int) -> _Fit:
    assert_disjoint("classifier training", job.train_ids, job.test_ids)
    if get_init(job.key.init).pretrain_images is None:
        candidates: tuple[PretrainRecord | None, ...] = (None,)
    elif job.pretrained:
        candidates = job.pretrained
    else:
        raise RuntimeError(f"init {job.key.init} needs pre-training checkpoints and none were made")
    for cand in candidates:
        if cand is not None:
            assert_disjoint("pretrain (recorded)", cand.seen, job.test_ids)
    train = data.subset_patients(list(job.train_ids))
    label_of = dict(zip(train.patient_ids, train.patient_labels.tolist()))
    folds = [(list(s.train), list(s.test)) for s in stratified_kfold(
        list(job.train_ids), [label_of[p] for p in job.train_ids], job.cv_folds, derive_seed(seed, "folds"))]
    for tr, va in folds:
        assert_disjoint("hyperparameter search", tr + va, job.test_ids)
    if c.mode_of(job.key.init) == "linear":
        return _train_linear(job, data, c, candidates, folds, seed)
    return _train_finetune(job, data, c, candidates, folds, seed)


def _train_linear(job: CellJob, data: SliceSet, c: ClassifierConfig, candidates, folds, seed: int) -> _Fit:
    k = len(job.classes)
    train = data.subset_patients(list(job.train_ids))
    test = data.subset_patients(list(job.test_ids))
    pooled = c.pooling == PooledDiagnosisModel.pooling

    def rows(features: np.ndarray, part: SliceSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, labels, patient of each input) of the output layer: slices, or one pooled row per patient."""
        if not pooled:
            return features, part.labels, part.patient_index
        return (patient_descriptors(features, part.patient_index, part.n_patients, part.positions, c.position_bins),
                part.patient_labels, np.arange(part.n_patients))

    best = None
    for cand in candidates:
        model = build_model(job.key.backbone, job.key.init, k, checkpoint=None if cand is None else cand.checkpoint,
                            seed=seed, pooling=c.pooling, motion=c.motion, position_bins=c.position_bins)
        x_train, y_train, p_train = rows(extract_features(model, train, batch_size=c.feature_batch_size), train)
        # each CV fold standardises with its own inner-training statistics; the final fit with the training part's
        search = cv_search_linear(x_train, y_train, p_train, train.patient_ids, folds, n_classes=k,
                                  lrs=c.lrs, max_epochs=c.max_epochs, batch_size=c.batch_size,
                                  weight_decay=c.weight_decay, seed=derive_seed(seed, "cv"), standardize=c.standardize)
        stats = standardization(x_train) if c.standardize else None
        if stats is not None:
            x_train = (x_train - stats[0]) / stats[1]
        if best is None or search.cv_auc > best[1].cv_auc:
            best = (cand, search, model, x_train, y_train, stats)
    cand, search, model, x_train, y_train, stats = best
    torch.manual_seed(derive_seed(seed, "head"))
    head = nn.Linear(x_train.shape[1], k)
    fit = fit_head(head, x_train, y_train, lr=search.lr, weight_decay=c.weight_decay, epochs=search.epochs,
                   batch_size=c.batch_size, seed=derive_seed(seed, "final"))
    if stats is not None:
        fold_standardization(head, *stats)
    model.head.load_state_dict(head.state_dict())
    return _Fit(
        model=model, test_probs=score_patients(model, test, linear=True, batch_size=c.feature_batch_size),
        hyperparameters={"lr": search.lr, "epochs": search.epochs,
                         "pretrain_batch_size": None if cand is None else cand.batch_size,
                         "standardized_features": bool(c.standardize), "pooling": c.pooling,
                         **({"motion": True} if c.motion else {}),
                         **({"position_bins": c.position_bins} if c.position_bins else {})},
        search={**search.as_dict(), "candidates": [None if x is None else x.batch_size for x in candidates]},
        history=_history(search), history_source="mean over CV folds of the training part (chosen lr)",
        final_train_loss=fit.history[-1]["train_loss"] if fit.history else None, pretrain=cand,
        seen={"search": sorted({p for tr, va in folds for p in tr + va}), "train": sorted(job.train_ids)},
        search_result=search,
    )


def _train_finetune(job: CellJob, data: SliceSet, c: ClassifierConfig, candidates, folds, seed: int) -> _Fit:
    k = len(job.classes)
    train = data.subset_patients(list(job.train_ids))

    def make(cand: PretrainRecord | None) -> DiagnosisModel:  # the same initial weights for every fold and the final fit
        return build_model(job.key.backbone, job.key.init, k, checkpoint=None if cand is None else cand.checkpoint,
                           seed=seed)

    best: tuple[PretrainRecord | None, SearchResult] | None = None
    for cand in candidates:
        search = cv_search_finetune(functools.partial(make, cand), train, folds, lrs=c.finetune_lrs,
                                    encoder_lr_ratio=c.encoder_lr_ratio, max_epochs=c.finetune_max_epochs,
                                    patience=c.patience, batch_size=c.batch_size,
                                    weight_decay=c.weight_decay, seed=derive_seed(seed, "cv"))
        if best is None or search.cv_auc > best[1].cv_auc:
            best = (cand, search)
    cand, search = best
    model = make(cand)
    fit = fit_end_to_end(model, train, mode="finetune", lr=search.lr, encoder_lr=search.lr * c.encoder_lr_ratio,
                         weight_decay=c.weight_decay, epochs=search.epochs, batch_size=c.batch_size,
                         seed=derive_seed(seed, "final"))
    test = data.subset_patients(list(job.test_ids))
    return _Fit(
        model=model, test_probs=score_patients(model, test, linear=False, batch_size=c.feature_batch_size),
        hyperparameters={"lr": search.lr, "encoder_lr": search.lr * c.encoder_lr_ratio, "epochs": search.epochs,
                         "pretrain_batch_size": None if cand is None else cand.batch_size},
        search={**search.as_dict(), "candidates": [None if x is None else x.batch_size for x in candidates],
                "patience": c.patience},
        history=_history(search), history_source="mean over CV folds of the training part (chosen lr)",
        final_train_loss=fit.history[-1]["train_loss"] if fit.history else None, pretrain=cand,
        seen={"search": sorted({p for tr, va in folds for p in tr + va}), "train": sorted(job.train_ids)},
        search_result=search,
    )


def _history(search: SearchResult) -> tuple[EpochRecord, ...]:
    """The chosen lr's mean CV curves as per-epoch records (Figure 1)."""
    curves = search.curves
    return tuple(EpochRecord(epoch=i + 1, train_loss=t, val_loss=lo, val_auc=a) for i, (a, lo, t) in
                 enumerate(zip(curves["val_auc"], curves["val_loss"], curves["train_loss"])))


def _scored(run: RunFolder, job: CellJob, data: SliceSet, fit: _Fit) -> dict:
    """Patient-level test outputs of a fitted cell, its saved model, and the CellResult fields that record them."""
    seen = {"pretrain": sorted({p for r in job.pretrained for p in r.seen}), **fit.seen}
    for stage, ids in seen.items():
        assert_disjoint(stage, ids, job.test_ids)
    test = data.subset_patients(list(job.test_ids))
    probs = fit.test_probs
    labels = test.patient_labels
    oof = fit.search_result
    label_of = dict(zip(data.patient_ids, data.patient_labels.tolist()))
    train_oof = None if oof.oof_probabilities is None else OutOfFold(
        list(oof.oof_patient_ids), [int(label_of[p]) for p in oof.oof_patient_ids], oof.oof_probabilities.tolist(),
        list(oof.oof_folds))
    save_classifier(fit.model, run.model_path(job.key), classes=list(job.classes),
                    meta={"init": job.key.init, "hyperparameters": fit.hyperparameters})
    return dict(
        hyperparameters=fit.hyperparameters, search=fit.search, history=fit.history,
        history_source=fit.history_source, final_train_loss=fit.final_train_loss,
        test=TestOutputs(list(test.patient_ids), labels.tolist(), probs.tolist(),
                         TestMetrics(**classification_metrics(labels, probs, job.classes))),
        seen_patient_ids=seen, checkpoint="model.pt",
        pretrain_checkpoint=None if fit.pretrain is None else fit.pretrain.checkpoint, train_oof=train_oof,
    )
