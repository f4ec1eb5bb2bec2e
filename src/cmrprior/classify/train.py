"""Training the diagnosis model: `linear` (encoders frozen, output layer only, as in the study) or
`finetune` (all layers, encoder learning rate lower than the head's). Adam, weight decay, cross-entropy.

Two paths give the same linear model:

* `fit_end_to_end(model, train, mode="linear", ...)`: frozen encoders (eval mode) run on every batch;
* `extract_features` once + `fit_head(head, features, ...)`: the frozen features are computed one time and
  the output layer is trained on them. Same initial head, same seeded batch order, same optimiser ->
  the same weights (up to float rounding); the test checks it. The study uses the fast path.

Batches: the seeded order cut into `batch_size` pieces; in `finetune` (batch norm in training mode) a last
piece of one item is merged into the one before.

Validation (when given): after every epoch, slice-level cross-entropy (`val_loss`) and the macro
one-vs-rest AUC of per-patient mean probabilities (`val_auc`). Early stopping on `val_loss` with
`patience` epochs; the best epoch's weights are restored.

Seeding, early stopping, the epoch records and (with `out_dir`) resume are the helpers every training loop
of the toolkit shares (`cmrprior.utils.training`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmrprior.classify.data import SliceSet
from cmrprior.errors import ConfigError
from cmrprior.evaluate.metrics import macro_auc, patient_probabilities
from cmrprior.utils import timing
from cmrprior.utils.seeding import seed_everything
from cmrprior.utils.training import EarlyStopping, TrainingRun, order_generator


@dataclass(frozen=True)
class FitResult:
    """`history`: one dict per epoch {epoch, train_loss, val_loss, val_auc}; `best_epoch` 1-based.
    `val_patient_probs`: with validation, per epoch the validation patients' mean slice probabilities
    `(P, K)` (patients in the validation set's order; rows of patients without slices are NaN)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    val_patient_probs: list[np.ndarray] = field(default_factory=list)


@torch.no_grad()
def _eval_batches(model: nn.Module, data: SliceSet, fn, batch_size: int) -> list[torch.Tensor]:
    """`fn(ed, es)` over `data` in batches, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        ed = torch.from_numpy(data.ed[start : start + batch_size])
        es = torch.from_numpy(data.es[start : start + batch_size])
        out.append(fn(ed, es))
    model.train(was_training)
    return out


def extract_features(model: nn.Module, data: SliceSet, *, batch_size: int = 128) -> np.ndarray:
    """Frozen features `(N, F)` float32 of `model.features(ed, es)` in eval mode."""
    with timing.phase("features", items=len(data)):
        out = _eval_batches(model, data, lambda ed, es: model.features(ed, es).float(), batch_size)
    if not out:
        return np.zeros((0, getattr(model, "num_features", 0)), np.float32)
    return torch.cat(out).numpy()


def predict_proba(model: nn.Module, data: SliceSet, *, batch_size: int = 128) -> np.ndarray:
    """Slice class probabilities `(N, K)` float64 (eval mode)."""
    with timing.phase("predict", items=len(data)):
        out = _eval_batches(model, data, lambda ed, es: torch.softmax(model(ed, es).float(), dim=1), batch_size)
    return torch.cat(out).double().numpy()


def head_proba(head: nn.Linear, features: np.ndarray) -> np.ndarray:
    """Slice probabilities `(N, K)` of a linear head on cached features."""
    with torch.no_grad():
        return torch.softmax(head(torch.from_numpy(features)), dim=1).double().numpy()


def _evaluate(probs: np.ndarray, labels: np.ndarray, patient_index: np.ndarray, n_patients: int
              ) -> tuple[float, float, np.ndarray]:
    """(slice cross-entropy, patient macro AUC, patient probabilities) of slice probabilities."""
    p = np.clip(probs[np.arange(labels.size), labels], 1e-12, 1.0)
    loss = float(-np.log(p).mean())
    pp = patient_probabilities(probs, patient_index, n_patients)
    plabels = np.full(n_patients, -1, np.int64)
    plabels[patient_index] = labels
    ok = plabels >= 0
    return loss, macro_auc(plabels[ok], pp[ok]), pp


def batch_bounds(n: int, batch_size: int, *, merge_single: bool = False) -> list[tuple[int, int]]:
    """`(lo, hi)` of each training batch over `n` items; with `merge_single` a last batch of one item joins
    the one before.

    Batch norm in training mode normalises each batch with its own statistics: one image gives one value per
    channel where the feature map is 1 x 1 (DenseNet121 or VGG16 at 32 px: an error), and a one-image
    estimate where it is larger, so networks that train their batch norm never get a batch of one.
    """
    bounds = list(range(0, n, batch_size)) + [n]
    if merge_single and len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        bounds.pop(-2)
    return list(zip(bounds[:-1], bounds[1:]))


def _loop(
    *,
    n_train: int,
    labels: torch.Tensor,
    batch_logits: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    set_train_mode: Callable[[], None],
    state_module: nn.Module,
    val_probs: Callable[[], np.ndarray] | None,
    val_labels: np.ndarray | None,
    val_patient_index: np.ndarray | None,
    val_n_patients: int,
    epochs: int,
    batch_size: int,
    patience: int | None,
    seed: int,
    out_dir: str | Path | None,
    config: dict[str, Any],
    merge_single: bool = False,
) -> FitResult:
    seed_everything(seed)
    gen = order_generator(seed)  # one generator for every epoch's order: saved with the checkpoint
    run = TrainingRun(out_dir, config={**config, "seed": seed, "batch_size": batch_size, "patience": patience,
                                       "n_train": n_train}, may_change=("epochs",), what="classifier",
                      stopping=EarlyStopping(patience, min_delta=1e-6))
    best: dict[str, Any] = {"state": None, "probs": []}  # the best epoch's weights, the per-epoch patient probabilities

    def load(ckpt: dict[str, Any]) -> None:
        state_module.load_state_dict(ckpt["module"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["order_rng"])
        best.update(state=ckpt["best"], probs=[t.numpy() for t in ckpt["val_patient_probs"]])

    state = run.resume({"best_epoch": 0}, load)
    with run:
        while state["epoch"] < epochs and not run.should_stop():
            epoch = state["epoch"] + 1
            set_train_mode()
            order = torch.randperm(n_train, generator=gen)
            total, seen = 0.0, 0
            for lo, hi in batch_bounds(n_train, batch_size, merge_single=merge_single):
                idx = order[lo:hi]
                with timing.phase("forward", items=hi - lo):
                    loss = F.cross_entropy(batch_logits(idx), labels[idx])
                with timing.phase("backward", items=hi - lo):
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                with timing.phase("optimizer"):
                    optimizer.step()
                total += float(loss.detach()) * idx.numel()
                seen += idx.numel()
            row = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": None, "val_auc": None}
            if val_probs is not None:
                with timing.phase("evaluation", items=len(val_labels)):
                    vloss, vauc, pp = _evaluate(val_probs(), val_labels, val_patient_index, val_n_patients)
                best["probs"].append(pp)
                row["val_loss"], row["val_auc"] = vloss, (None if math.isnan(vauc) else vauc)
                if run.improved(vloss):
                    state["best_epoch"], best["state"] = epoch, copy.deepcopy(state_module.state_dict())
            run.record(row)
            state["epoch"] = epoch
            run.save({"module": state_module.state_dict(), "optimizer": optimizer.state_dict(),
                      "order_rng": gen.get_state(), "best": best["state"],
                      "val_patient_probs": [torch.from_numpy(pp) for pp in best["probs"]]})
    if best["state"] is not None:
        state_module.load_state_dict(best["state"])
    else:
        state["best_epoch"] = len(state["history"])
    return FitResult(history=list(state["history"]), best_epoch=state["best_epoch"], stopped_early=run.should_stop(),
                     val_patient_probs=list(best["probs"]))


def fit_head(
    head: nn.Linear,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    lr: float,
    weight_decay: float = 1e-4,
    epochs: int = 30,
    batch_size: int = 32,
    seed: int = 0,
    val: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None,
    patience: int | None = None,
    out_dir: str | Path | None = None,
) -> FitResult:
    """Train `head` (in place) on cached features `(N, F)` with labels `(N,)`.

    `val`: (features (M, F), labels (M,), patient_index (M,), n_patients) for per-epoch validation and
    early stopping. The head ends at its best validation epoch (or the last epoch without `val`).
    `out_dir`: a run folder (last.pt after each epoch, metrics.jsonl) from which a killed fit resumes.
    """
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    val_probs = None
    if val is not None:
        vf = np.ascontiguousarray(val[0], dtype=np.float32)
        val_probs = lambda: head_proba(head, vf)  # noqa: E731
    return _loop(
        n_train=len(y),
        labels=y,
        batch_logits=lambda idx: head(x[idx]),
        optimizer=opt,
        set_train_mode=lambda: head.train(),
        state_module=head,
        val_probs=val_probs,
        val_labels=None if val is None else np.asarray(val[1], np.int64),
        val_patient_index=None if val is None else np.asarray(val[2], np.int64),
        val_n_patients=0 if val is None else int(val[3]),
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        seed=seed,
        out_dir=out_dir,
        config={"fit": "head", "lr": lr, "weight_decay": weight_decay},
    )


def fit_end_to_end(
    model: nn.Module,
    train: SliceSet,
    *,
    mode: str,
    lr: float,
    encoder_lr: float = 1e-5,
    weight_decay: float = 1e-4,
    epochs: int = 30,
    batch_size: int = 32,
    seed: int = 0,
    val: SliceSet | None = None,
    patience: int | None = None,
    out_dir: str | Path | None = None,
) -> FitResult:
    """Train a DiagnosisModel on slice pairs. `mode="linear"`: encoders frozen in eval mode, head only;
    `mode="finetune"`: everything, encoders at `encoder_lr`, head at `lr`. ConfigError for another mode.
    `out_dir`: a run folder (last.pt after each epoch, metrics.jsonl) from which a killed fit resumes."""
    if mode not in ("linear", "finetune"):
        raise ConfigError(f"mode must be 'linear' or 'finetune', got {mode!r}")
    encoders = [model.ed_encoder, model.es_encoder]
    for enc in encoders:
        enc.requires_grad_(mode == "finetune")
    if mode == "linear":
        opt = torch.optim.Adam(model.head.parameters(), lr=lr, weight_decay=weight_decay)
        state_module: nn.Module = model.head

        def set_train_mode() -> None:
            model.eval()
            model.head.train()

    else:
        enc_params = [p for enc in encoders for p in enc.parameters()]
        opt = torch.optim.Adam(
            [{"params": enc_params, "lr": encoder_lr}, {"params": model.head.parameters(), "lr": lr}],
            weight_decay=weight_decay,
        )
        state_module = model

        def set_train_mode() -> None:
            model.train()

    ed = torch.from_numpy(train.ed)
    es = torch.from_numpy(train.es)
    y = torch.from_numpy(train.labels.astype(np.int64))
    return _loop(
        n_train=len(y),
        labels=y,
        batch_logits=lambda idx: model(ed[idx], es[idx]),
        optimizer=opt,
        set_train_mode=set_train_mode,
        state_module=state_module,
        val_probs=None if val is None else (lambda: predict_proba(model, val)),
        val_labels=None if val is None else val.labels,
        val_patient_index=None if val is None else val.patient_index,
        val_n_patients=0 if val is None else val.n_patients,
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        seed=seed,
        out_dir=out_dir,
        config={"fit": mode, "lr": lr, "encoder_lr": encoder_lr if mode == "finetune" else None,
                "weight_decay": weight_decay},
        merge_single=mode == "finetune",
    )


def standardization(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation `(F,)` (float32; sd floored at 1e-6) of `(N, F)` features."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0).astype(np.float32), np.maximum(f.std(0), 1e-6).astype(np.float32)


@torch.no_grad()
def fold_standardization(head: nn.Linear, mean: np.ndarray, sd: np.ndarray) -> None:
    """Make `head(x)` equal the trained `head((x - mean) / sd)` in place: W' = W / sd, b' = b - W' mean.

    The diagnosis model then stays "features -> one fully connected layer" while the output layer was
    trained on standardised features (a usual linear-probe practice; the statistics come from training
    patients only).
    """
    m = torch.from_numpy(np.asarray(mean, np.float32))
    s = torch.from_numpy(np.asarray(sd, np.float32))
    w = head.weight / s
    head.bias.copy_(head.bias - w @ m)
    head.weight.copy_(w)
