"""SimCLR pre-training of a backbone on unlabeled CMR slices (the study's second stage).

`pretrain(train_images, config, out_dir, val_images=None)` reads top to bottom like nanoGPT's
train.py: set-up, model, optimizer, resume, then the loop (views -> encoder+projection -> NT-Xent ->
Adam), a held-out NT-Xent per epoch, early stopping, atomic checkpoints. The settings live in
`cmrprior.ssl.config`, the network in `cmrprior.ssl.model`, the run-folder files (last.pt, best.pt,
metrics.jsonl) in `cmrprior.ssl.checkpoint`; resume, early stopping, seeding and the epoch record are the
shared `cmrprior.utils.training` helpers; a new call with the same config resumes from last.pt.

Randomness: the model init uses `seed`; the slice order of epoch e and the views of global step s
come from generators seeded with `derive_seed(seed, ...)`, so an interrupted and resumed run makes
exactly the same steps as an uninterrupted one. Held-out views use a fixed seed, so epochs compare.

Distributed (torchrun): the global batch `batch_size` is split over ranks, negatives are gathered
over all ranks (`nt_xent_loss(gather=True)`), DDP averages gradients; rank 0 writes the files.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cmrprior.errors import ConfigError
from cmrprior.models.registry import create_backbone
from cmrprior.ssl import checkpoint
from cmrprior.ssl import distributed as D
from cmrprior.ssl.augment import two_views
from cmrprior.ssl.config import RESUMABLE_CHANGES, PretrainConfig, resolve_auto, resolve_device
from cmrprior.ssl.model import build_model, model_args_of, simclr_loss
from cmrprior.utils import timing
from cmrprior.utils.seeding import derive_seed, seed_everything, torch_generator
from cmrprior.utils.training import EarlyStopping, TrainingRun, order_generator, saved_config

log = logging.getLogger(__name__)

# A pretext's loss of the two views' projections `(b, D)` each, in place of NT-Xent (see `pretrain`).
Objective = Any


@dataclass(frozen=True)
class PretrainResult:
    checkpoint: Path  # best.pt when held-out images were given, else last.pt
    history: list[dict[str, Any]]
    best_val_loss: float | None
    precision: str  # what the run computed in ("fp32" | "bf16" | "fp16"), "auto" resolved
    channels_last: bool
    stopped_early: bool = False
    finished: bool = True  # False when max_steps ended the run before the last epoch


def _as_tensor(images: np.ndarray, name: str) -> torch.Tensor:
    """`(N, H, W)` float array -> float32 tensor `(N, 1, H, W)` (a copy; the input is untouched)."""
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise ConfigError(f"pretrain: {name} must be (N, H, W), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"pretrain: {name} contains non-finite values")
    return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)).unsqueeze(1)


def _training_tensors(train_images: np.ndarray, val_images: np.ndarray | None,
                      extra_unlabeled: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Training slices `(N + M, 1, H, W)` (train then extra) and held-out slices `(V, 1, H', W')` or None."""
    data = _as_tensor(train_images, "train_images")
    if extra_unlabeled is not None and len(extra_unlabeled):
        extra = _as_tensor(extra_unlabeled, "extra_unlabeled")
        if extra.shape[2:] != data.shape[2:]:
            raise ConfigError(f"pretrain: extra_unlabeled images are {tuple(extra.shape[2:])}, train images {tuple(data.shape[2:])}")
        data = torch.cat([data, extra])
    val = _as_tensor(val_images, "val_images") if val_images is not None else None
    if val is not None and val.shape[0] < 2:
        raise ConfigError("pretrain: val_images needs at least 2 images")
    return data, val


@dataclass(frozen=True)
class _Batches:
    """This rank's share of each global batch; the last partial batch is dropped (NT-Xent wants full batches)."""

    data: torch.Tensor  # (N, 1, H, W), every rank holds all of it
    global_batch: int
    rank: int
    world_size: int

    @classmethod
    def of(cls, data: torch.Tensor, batch_size: int, info: D.DistInfo) -> "_Batches":
        global_batch = min(batch_size, data.shape[0])
        if global_batch < 2:
            raise ConfigError(f"pretrain: need at least 2 training images, got {data.shape[0]}")
        if global_batch % info.world_size:
            raise ConfigError(f"pretrain: batch size {global_batch} is not divisible by {info.world_size} processes")
        return cls(data, global_batch, info.rank, info.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.data.shape[0] // self.global_batch

    def local(self, perm: torch.Tensor, i: int) -> torch.Tensor:
        """The slices of step `i` of the epoch with slice order `perm`, this rank's part: `(b, 1, H, W)`."""
        local_batch = self.global_batch // self.world_size
        lo = i * self.global_batch + self.rank * local_batch
        return self.data[perm[lo : lo + local_batch]]


def _views(x: torch.Tensor, config: PretrainConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The two augmented views of `x (B, 1, H, W)`, `(B, 1, S, S)` each, channels-last when configured."""
    v1, v2 = two_views(x, config.augment, g, out_size=config.image_size)
    if config.channels_last:
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    return v1, v2


@torch.no_grad()
def heldout_loss(model: nn.Module, images: torch.Tensor, config: PretrainConfig, device: torch.device,
                 objective: Objective | None = None) -> float:
    """Mean NT-Xent (or `objective`) of held-out images `(N, 1, H, W)` with fixed-seed views, batches of `val_batch_size`.

    Computed as in training: batch norm uses the batch's statistics (on a copy of `model`, so its running
    statistics are untouched). Measured on ACDC/resnet18 (lr 1e-3): after 2 epochs the eval-mode
    (running-statistics) loss was 4.91 on held-out AND on training images, worse than the untrained
    network's 4.70, while the batch-statistics loss fell to 4.54 (held-out) / 4.26 (training): running
    statistics lag a fast-changing network and would make early stopping pick the wrong epoch. Before
    eval-mode feature extraction use `cmrprior.ssl.model.recalibrate_batchnorm`. A last batch of one image
    is merged into the previous one.
    """
    model = copy.deepcopy(model).train()
    g = torch_generator(derive_seed(config.seed, "heldout-views"))
    n = images.shape[0]
    bounds = list(range(0, n, config.val_batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        bounds.pop(-2)
    total, count = 0.0, 0
    with timing.phase("evaluation", items=n):
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            v1, v2 = _views(images[lo:hi].to(device), config, g)
            total += simclr_loss(model, v1, v2, temperature=config.temperature,
                                 precision=config.precision,
                                 objective=objective).item() * (hi - lo)
            count += hi - lo
    return total / count


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: _Batches, state: dict[str, Any],
                 config: PretrainConfig, device: torch.device, save_last, objective: Objective | None) -> bool:
    """Run the remaining steps of epoch `state["epoch"]`, updating `state` in place; False when `max_steps`
    stopped it first. Calls `save_last()` every `checkpoint_every_steps` steps."""
    epoch, steps = state["epoch"], batches.steps_per_epoch
    perm = torch.randperm(batches.data.shape[0], generator=order_generator(config.seed, "epoch-order", epoch))
    model.train()
    t0, images_at_start = time.perf_counter(), state["images_seen"]
    bar = tqdm(total=steps, initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{config.epochs}", file=sys.stderr,
               disable=not (config.progress and batches.rank == 0), leave=False, unit="step")
    with bar:
        while state["step_in_epoch"] < steps:
            if config.max_steps is not None and state["step"] >= config.max_steps:
                return False
            with timing.phase("views"):
                x = batches.local(perm, state["step_in_epoch"]).to(device, non_blocking=True)
                g = torch_generator(derive_seed(config.seed, "views", state["step"], batches.rank))
                with torch.no_grad():
                    v1, v2 = _views(x, config, g)
            with timing.phase("forward", items=len(x)):
                loss = simclr_loss(model, v1, v2, temperature=config.temperature, precision=config.precision,
                                   gather=batches.world_size > 1, objective=objective)
            with timing.phase("backward", items=len(x)):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            with timing.phase("optimizer"):
                optimizer.step()
            loss_value = D.all_reduce_mean(loss.item(), device)
            if not math.isfinite(loss_value):
                raise ConfigError(f"pretrain: loss became {loss_value} at step {state['step']} (lower lr or use fp32)")
            state["loss_sum"] += loss_value
            state["step"] += 1
            state["step_in_epoch"] += 1
            state["images_seen"] += batches.global_batch
            bar.update(1)
            rate = (state["images_seen"] - images_at_start) / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}")
            if config.checkpoint_every_steps and state["step"] % config.checkpoint_every_steps == 0:
                save_last()
    return True


def _epoch_record(state: dict[str, Any], batches: _Batches, seconds: float) -> dict[str, Any]:
    """The record of the epoch just trained (`metrics.jsonl`); the held-out loss is added to it."""
    return {"epoch": state["epoch"] + 1, "step": state["step"],
            "train_loss": state["loss_sum"] / max(batches.steps_per_epoch, 1), "seconds": seconds,
            "batch_size": batches.global_batch, "world_size": batches.world_size}


def _network(config: PretrainConfig, device: torch.device) -> tuple[dict[str, Any], nn.Module]:
    """The seeded encoder + projection head of `config` on `device`, and its `model_args`."""
    seed_everything(config.seed)
    model_args = model_args_of(config)
    raw_model = build_model(model_args)
    if config.weights is not None:
        raw_model.encoder = create_backbone(config.backbone, in_chans=1, weights=config.weights, **config.backbone_kwargs)
    raw_model.to(device)
    if config.channels_last:
        raw_model.to(memory_format=torch.channels_last)
    return model_args, raw_model


def _precision_step(config: PretrainConfig, device: torch.device, shape: tuple[int, ...]) -> Callable[[str], None]:
    """One SimCLR training step (forward of both views, NT-Xent, backward) of a throwaway copy of `config`'s network
    at its batch size, in a given precision: what "auto" precision times on a CPU. Built on first use, from random
    numbers of its own, so the run's initialisation and draws are those of a run that does not measure."""
    parts: dict[str, Any] = {}

    def step(precision: str) -> None:
        if not parts:
            with torch.random.fork_rng(devices=[]):
                g = torch.Generator().manual_seed(0)
                model = build_model(model_args_of(config)).to(device)
                x = torch.rand((2 * config.batch_size, *shape), generator=g).to(device)
            if config.channels_last is not False:
                model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            parts.update(model=model.train(), x=x)
        model, x = parts["model"], parts["x"]
        model.zero_grad(set_to_none=True)
        b = len(x) // 2
        simclr_loss(model, x[:b], x[b:], temperature=config.temperature, precision=precision).backward()

    return step


def _resolved(config: PretrainConfig, device: torch.device, info: D.DistInfo, shape: tuple[int, ...],
              last: Path) -> tuple[PretrainConfig, str]:
    """`resolve_auto` for this run, and why its precision: a resumed run keeps what it chose; on a CPU "auto" times
    `_precision_step`; the processes of a distributed run agree (bf16 only where every one timed it faster)."""
    saved = saved_config(last) if config.precision == "auto" else None
    if saved is not None and saved.get("precision") in ("fp32", "bf16"):
        config = dataclasses.replace(config, precision=saved["precision"])
    measured = config.precision == "auto" and device.type == "cpu"
    config, why = resolve_auto(config, device, _precision_step(config, device, shape))
    if saved is not None and not measured:
        why = f"{config.precision}, as chosen when the run being resumed started"
    if measured and info.enabled:
        everyone = D.all_reduce_mean(float(config.precision == "bf16"), device) == 1.0
        if config.precision == "bf16" and not everyone:
            config, why = dataclasses.replace(config, precision="fp32"), why + "; float32: another process timed it faster"
    return config, why


def pretrain(
    train_images: np.ndarray,
    config: PretrainConfig,
    out_dir: str | Path,
    val_images: np.ndarray | None = None,
    extra_unlabeled: np.ndarray | None = None,
    objective: Objective | None = None,
    trackers: Sequence[str] = (),
) -> PretrainResult:
    """SimCLR pre-training on `train_images (N, H, W)` float32 (+ `extra_unlabeled (M, H, W)`).

    `objective`: a loss in place of NT-Xent (`objective(z1, z2, gather=)`, `.describe()` recorded and checked
    on resume; `cmrprior.ssl.vicreg.VICRegObjective`). `trackers`: epoch records also to these (`utils.tracking`).

    `val_images (V, H', W')`: held-out slices (other patients) for the per-epoch NT-Xent and early
    stopping. Resumes from `out_dir/last.pt` when present (same images and same config required, except
    epochs/patience/max_steps/checkpoint interval/progress/compile/device). Raises ConfigError (bad config or
    arrays, a resume on other images), DataError (unreadable checkpoint).
    """
    # ---- set-up -------------------------------------------------------------------------------
    out_dir = Path(out_dir)
    info = D.init_distributed(None if config.device == "auto" else config.device)
    device = resolve_device(config.device, info)
    data, val = _training_tensors(train_images, val_images, extra_unlabeled)
    config, why = _resolved(config, device, info, tuple(data.shape[1:]), out_dir / "last.pt")
    batches = _Batches.of(data, config.batch_size, info)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = True

    # ---- model, optimizer, resume -------------------------------------------------------------
    model_args, raw_model = _network(config, device)
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_path = out_dir / "best.pt"
    objective_info = checkpoint.NT_XENT if objective is None else objective.describe()
    data_print = checkpoint.data_fingerprint(data, val)
    run = TrainingRun(out_dir, config=config.to_dict(), may_change=RESUMABLE_CHANGES, trackers=trackers,
                      stopping=EarlyStopping(config.patience, config.min_delta), main=info.is_main)
    state = run.resume(checkpoint.new_state(), lambda ckpt: checkpoint.check_and_load(
        ckpt, run.path, raw_model, optimizer, data_print, objective_info))
    if info.is_main:
        log.info("pre-training precision: %s", why)
    model = torch.compile(raw_model) if config.compile else raw_model
    model = D.wrap_ddp(model, sync_batchnorm=config.sync_batchnorm, device=device)

    def save_last() -> None:
        run.save(checkpoint.last_payload(data=data_print, model_args=model_args, model=raw_model, optimizer=optimizer,
                                         objective=objective_info))

    # ---- training loop ------------------------------------------------------------------------
    finished = True
    with run:
        while state["epoch"] < config.epochs and not run.should_stop():
            t0 = time.perf_counter()
            finished = _train_epoch(model, optimizer, batches, state, config, device, save_last, objective)
            if not finished:
                save_last()
                break
            # ---- end of epoch: held-out loss, early stopping, record, checkpoint -----------------
            record = _epoch_record(state, batches, time.perf_counter() - t0)
            if val is not None:
                # averaged over ranks: BatchNorm buffers may differ slightly between ranks (DDP broadcasts them at
                # the next forward), and every rank must take the same early-stopping decision
                record["val_loss"] = D.all_reduce_mean(heldout_loss(raw_model, val, config, device, objective), device)
                if run.improved(record["val_loss"]) and info.is_main:
                    checkpoint.save_best(best_path, config=config, model_args=model_args, encoder=raw_model.encoder,
                                         epoch=state["epoch"] + 1, val_loss=record["val_loss"])
            log.info("pre-training epoch %d: train loss %.4f%s (batch %d, %.0f s)", record["epoch"],
                     record["train_loss"], f", val loss {record['val_loss']:.4f}" if "val_loss" in record else "",
                     record["batch_size"], record["seconds"])
            run.record(record)
            state.update(epoch=state["epoch"] + 1, step_in_epoch=0, loss_sum=0.0)
            save_last()
    D.barrier()
    if info.is_main and val is None and finished:
        checkpoint.save_best(best_path, config=config, model_args=model_args, encoder=raw_model.encoder,
                             epoch=state["epoch"], val_loss=None)
    return PretrainResult(checkpoint=best_path if best_path.exists() else run.path, history=list(state["history"]),
                          best_val_loss=state["best_val_loss"], precision=config.precision,
                          channels_last=bool(config.channels_last), stopped_early=run.should_stop(), finished=finished)


def select_batch_size(
    train_images: np.ndarray,
    val_images: np.ndarray,
    config: PretrainConfig,
    out_dir: str | Path,
    grid: tuple[int, ...] = (64, 128, 256),
    extra_unlabeled: np.ndarray | None = None,
) -> tuple[int, dict[int, PretrainResult]]:
    """The study's batch-size grid search: pre-train once per batch size (capped by the number of
    training images; duplicates dropped) in `out_dir/bs<B>`, pick the lowest best held-out NT-Xent
    (computed with the fixed `val_batch_size`, so values compare). Returns (best size, results)."""
    n = len(train_images) + (0 if extra_unlabeled is None else len(extra_unlabeled))
    sizes = sorted({min(int(b), n) for b in grid})
    results: dict[int, PretrainResult] = {}
    for b in sizes:
        results[b] = pretrain(train_images, dataclasses.replace(config, batch_size=b), Path(out_dir) / f"bs{b}",
                              val_images=val_images, extra_unlabeled=extra_unlabeled)
    best = min(sizes, key=lambda b: (results[b].best_val_loss if results[b].best_val_loss is not None else math.inf))
    return best, results
