"""Training of the heart segmenter on prepared slices (every ED and ES slice with a mask is a sample).

Reads top to bottom: split patients (train / validation), build the network, then per epoch: a seeded
permutation, seeded augmentation per step, Dice+CE loss, AdamW with a cosine learning rate; after each
epoch the validation Dice (MONAI `DiceMetric`, 3D per patient and phase, mean over RV, MYO, LV) decides
early stopping. A run starts from random weights, or from trained ones (`SegTrainConfig.init`: fine-tuning, or
a further cosine cycle). Checkpoints (`checkpoint.pt`, atomic) hold the model arguments, the full config, the
optimizer, the epoch/step, the early-stopping state and the epoch records (resume, early stopping, seeding and
the records are the shared `cmrprior.utils.training` helpers); the validation patients derive from `config.seed`,
every random value of the training from `config.training_seed` and the step or epoch number, so a killed run
resumed from its checkpoint continues exactly as an uninterrupted run would.

Run folder (`out_dir`):
    checkpoint.pt       latest state (resume from here)
    best.safetensors    best weights so far (+ best.json: model args, config, validation Dice)
    model.safetensors   final model = best weights (+ model.json), written when training ends
    log.jsonl           one line per epoch (loss, validation Dice, slices/s, peak memory), rewritten from the
                        checkpoint's records (a run killed before its checkpoint writes no line twice)
    split.json          train and validation patient ids
"""

from __future__ import annotations

import json
import logging
import math
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmrprior.data.prepared import PreparedCohort
from cmrprior.data.splits import stratified_split
from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation.config import ADDED_LATER, RUN_SETTINGS, SegAugmentConfig, SegTrainConfig, UNetArgs  # noqa: F401 - re-exported
from cmrprior.segmentation.augment import augment_batch, normalise_slices
from cmrprior.segmentation.losses import make_seg_loss
from cmrprior.segmentation.network import build_unet, load_segmenter, save_segmenter
from cmrprior.segmentation.context import gather
from cmrprior.segmentation.predict import file_sha256, input_slices, predict_slices, prepared_context
from cmrprior.utils import atomic
from cmrprior.utils.seeding import derive_seed, seed_everything, torch_generator
from cmrprior.utils.training import EarlyStopping, TrainingRun, order_generator

log = logging.getLogger(__name__)

# config fields that may change between a killed run and its resumption
MODEL_FILE = "model.safetensors"  # a finished training run's weights, in its run folder
_RESUMABLE_CHANGES = RUN_SETTINGS


def split_patients(prepared: PreparedCohort, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Patient-level train/validation split: stratified by class (`cmrprior.data.splits`) when the labels
    allow it, else a seeded random split of patients (unlabelled or single-class cohorts, tiny classes)."""
    ids = prepared.patient_ids
    if val_fraction <= 0 or len(ids) < 2:
        return list(ids), []
    labels = [p.label for p in prepared.patients]
    try:
        split = stratified_split(ids, labels, test_fraction=val_fraction, seed=seed)
        return list(split.train), list(split.test)
    except ConfigError:
        pass
    n_val = min(len(ids) - 1, max(1, int(round(val_fraction * len(ids)))))
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(order[:n_val].tolist())
    return [ids[i] for i in range(len(ids)) if i not in set(val)], [ids[i] for i in val]


def stack_samples(prepared: PreparedCohort, k: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ED and ES slices of a cohort as samples: float32 `(2N, H, W)` images, uint8 `(2N, H, W)` masks,
    and the `(2N, k)` context index of each sample's input slices (its neighbours in its own stack).

    Raises:
        DataError: the cohort has no masks.
    """
    if prepared.ed_mask is None or prepared.es_mask is None:
        raise DataError(None, "segmenter training needs ground-truth masks; the prepared cohort has none")
    images = np.concatenate([prepared.ed, prepared.es]).astype(np.float32, copy=False)
    masks = np.concatenate([prepared.ed_mask, prepared.es_mask]).astype(np.uint8, copy=False)
    ctx = prepared_context(prepared, k)
    return images, masks, np.concatenate([ctx, ctx + len(prepared.ed)])


def volume_dice(model: torch.nn.Module, prepared: PreparedCohort, *, bf16: bool = False) -> np.ndarray:
    """Per patient and phase 3D Dice of RV, MYO, LV with MONAI `DiceMetric`: float `(2P, 3)` (NaN where
    both prediction and truth lack a structure). Raw argmax predictions, no post-processing."""
    from monai.metrics import DiceMetric  # imported here: MONAI takes seconds to import

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    rows = []
    context = prepared_context(prepared, input_slices(model))
    for phase in ("ed", "es"):
        images = getattr(prepared, phase)
        truth = getattr(prepared, f"{phase}_mask")
        pred = predict_slices(model, images, bf16=bf16, context=context)
        for p in range(len(prepared.patients)):
            idx = np.flatnonzero(prepared.patient_index == p)
            if idx.size == 0:
                continue
            onehot = lambda a: torch.nn.functional.one_hot(torch.from_numpy(a[idx].astype(np.int64)), 4).permute(3, 0, 1, 2)[None]  # noqa: E731
            rows.append(metric(onehot(pred), onehot(truth))[0].numpy())
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def learning_rate(step: int, total_steps: int, config: SegTrainConfig) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to 1% of `lr` at `total_steps`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    t = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _new_state() -> dict:
    """The loop state of a run that has not made a step yet (stored under "state" in checkpoint.pt). No best score
    yet: the first epoch's is the best so far, whatever its value (minus a training loss above 1 without
    validation patients, too)."""
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": None, "best_epoch": -1,
            "bad_epochs": 0, "done": False, "epoch_loss_sum": 0.0, "epoch_seconds": 0.0}


def _load_init(config: SegTrainConfig, model: nn.Module) -> None:
    """Copy `config.init`'s weights into `model`.

    Raises:
        DataError: the file changed since the config was made (sha256), is an ensemble, or was trained with
            other network arguments.
    """
    path = Path(config.init)
    if file_sha256(path) != config.init_sha256:
        raise DataError(path, f"initial weights changed: sha256 is no longer {config.init_sha256[:12]}...")
    init_model, init_args, meta = load_segmenter(path)
    if "members" in meta:
        raise DataError(path, "an ensemble cannot initialise a single U-Net")
    if init_args != config.unet:
        raise DataError(path, f"initial weights have network arguments {init_args.to_json()}, the run "
                              f"{config.unet.to_json()}")
    model.load_state_dict(init_model.state_dict())


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, images: np.ndarray,
                masks: np.ndarray, step: int, lr: float, config: SegTrainConfig, crop: int | None) -> float:
    """One optimizer step on the inputs `images[i]` (`(b, k, H, W)`, k adjacent slices) and the masks of
    their centre slices `masks[i]` (`(b, H, W)`) of global step `step`; returns the loss."""
    x = normalise_slices(torch.from_numpy(images))
    y = torch.from_numpy(masks.astype(np.int64))
    x, y = augment_batch(x, y, config.augment, torch_generator(derive_seed(config.training_seed, "aug", step)), out_size=crop)
    torch.manual_seed(derive_seed(config.training_seed, "step", step))  # dropout, if any
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
        logits = model(x)
    loss = loss_fn(logits.float(), y[:, None])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _epoch_record(state: dict, n: int, steps_per_epoch: int, lr: float) -> dict:
    """The log.jsonl record of the epoch just trained on `n` slices (validation Dice added by `_score_epoch`)."""
    return {"epoch": state["epoch"], "step": state["global_step"], "train_loss": state["epoch_loss_sum"] / steps_per_epoch,
            "train_seconds": state["epoch_seconds"], "slices_per_s": n / max(state["epoch_seconds"], 1e-9), "lr": lr,
            "peak_rss_mb": _peak_rss_mb()}


def _log_line(record: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                     for k, v in record.items())


def _score_epoch(model: nn.Module, val_set: PreparedCohort | None, record: dict, bf16: bool) -> float:
    """The epoch's model-selection score: mean validation Dice (added to `record`), or minus the training
    loss without validation patients."""
    if val_set is None:
        return float(-record["train_loss"])
    per = np.nanmean(volume_dice(model, val_set, bf16=bf16), axis=0)
    score = float(np.nanmean(per))
    record.update({"val_dice_rv": per[0], "val_dice_myo": per[1], "val_dice_lv": per[2], "val_dice": score})
    return score


def train_segmenter(prepared: PreparedCohort, config: SegTrainConfig, out_dir: str | Path) -> Path:
    """Train a U-Net on `prepared` (needs masks); returns the path of the final `model.safetensors`.

    Resumes from `out_dir/checkpoint.pt` when present (the config must match, except `max_steps` and
    `num_threads`). When `config.max_steps` is reached first, returns the path of `checkpoint.pt` instead.

    Raises:
        DataError: no masks. ConfigError: checkpoint written with another config.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    final, ckpt_path = out_dir / MODEL_FILE, out_dir / "checkpoint.pt"
    train_ids, val_ids = split_patients(prepared, config.val_fraction, derive_seed(config.seed, "val-split"))
    val_set = prepared.select_patients(val_ids) if val_ids else None
    atomic.write_json(out_dir / "split.json", {"train": train_ids, "val": val_ids, "seed": config.seed})
    images, masks, context = stack_samples(prepared.select_patients(train_ids), config.unet.in_channels)
    n = images.shape[0]
    crop = config.train_crop if config.train_crop and config.train_crop < images.shape[-1] else None
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.max_epochs

    seed_everything(derive_seed(config.training_seed, "init"))
    model = build_unet(config.unet)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = make_seg_loss(dice_over=config.dice_over, boundary_weight=config.ce_boundary)
    run = TrainingRun(out_dir, config=config.to_json(), may_change=_RESUMABLE_CHANGES, what="segmenter",
                      checkpoint="checkpoint.pt", metrics="log.jsonl",
                      stopping=EarlyStopping(config.patience, mode="max", keys=("best_score", "bad_epochs", "done")),
                      defaults=dict(ADDED_LATER))

    def load(ckpt: dict) -> None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])

    if not ckpt_path.exists() and config.init is not None:  # a killed run resumes from its checkpoint, not the init
        _load_init(config, model)
    state = run.resume(_new_state(), load)

    def save_checkpoint() -> None:
        run.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "unet_args": config.unet.to_json()})

    meta = {"config": config.to_json(), "train_patients": len(train_ids), "val_patients": len(val_ids)}
    with run:
        while not run.should_stop() and state["epoch"] < config.max_epochs:
            epoch = state["epoch"]
            perm = torch.randperm(n, generator=order_generator(config.training_seed, "perm", epoch)).numpy()
            model.train()
            t0 = time.perf_counter()
            for s in range(state["step_in_epoch"], steps_per_epoch):
                if config.max_steps is not None and state["global_step"] >= config.max_steps:
                    state["epoch_seconds"] += time.perf_counter() - t0
                    save_checkpoint()
                    return ckpt_path
                step, idx = state["global_step"], perm[s * config.batch_size : (s + 1) * config.batch_size]
                state["epoch_loss_sum"] += _train_step(model, optimizer, loss_fn, gather(images, context[idx]),
                                                       masks[idx], step, learning_rate(step, total_steps, config),
                                                       config, crop)
                state["global_step"], state["step_in_epoch"] = step + 1, s + 1
                if state["global_step"] % config.checkpoint_every == 0:
                    save_checkpoint()
            state["epoch_seconds"] += time.perf_counter() - t0
            record = _epoch_record(state, n, steps_per_epoch, learning_rate(state["global_step"], total_steps, config))
            score = _score_epoch(model, val_set, record, config.bf16)
            if run.improved(score, may_stop=epoch + 1 >= config.min_epochs):
                state["best_epoch"] = epoch
                save_segmenter(model, config.unet, out_dir / "best.safetensors",
                               {**meta, "epoch": epoch, "val_dice": record.get("val_dice")})
            record["best_epoch"] = state["best_epoch"]
            run.record(record)
            log.info("segmenter epoch %d: %s", epoch, _log_line(record))
            state.update(epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_seconds=0.0)
            save_checkpoint()

    with atomic.atomic_path(final) as tmp:
        shutil.copyfile(out_dir / "best.safetensors", tmp)
    best_meta = json.loads((out_dir / "best.json").read_text())
    atomic.write_json(final.with_suffix(".json"), {**best_meta, "stopped_epoch": state["epoch"] - 1})
    return final
