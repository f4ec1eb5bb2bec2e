"""SimCLR pre-training of a backbone on unlabeled CMR slices (the study's second stage).

`pretrain(train_images, config, out_dir, val_images=None)` reads top to bottom like nanoGPT's
train.py: set-up, model, optimizer, resume, then the loop (views -> encoder+projection -> NT-Xent ->
Adam), a held-out NT-Xent per epoch, early stopping, atomic checkpoints.

Run folder `out_dir`:
  last.pt        full state (config, model args, backbone + head, optimizer, step, epoch, history,
                 early-stopping state, RNG states); written atomically every epoch (and every
                 `checkpoint_every_steps` steps); a new call with the same config resumes from it.
  best.pt        the encoder of the epoch with the lowest held-out loss (model args + backbone).
  metrics.jsonl  one JSON line per finished epoch (rewritten atomically from the history).

Randomness: the model init uses `seed`; the slice order of epoch e and the views of global step s
come from generators seeded with `derive_seed(seed, ...)`, so an interrupted and resumed run makes
exactly the same steps as an uninterrupted one. Held-out views use a fixed seed, so epochs compare.

Distributed (torchrun): the global batch `batch_size` is split over ranks, negatives are gathered
over all ranks (`nt_xent_loss(gather=True)`), DDP averages gradients; rank 0 writes the files.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmrprior.errors import ConfigError, DataError
from cmrprior.models.heads import ProjectionHead
from cmrprior.models.registry import create_backbone
from cmrprior.ssl import distributed as D
from cmrprior.ssl.augment import AugmentConfig, two_views
from cmrprior.ssl.loss import nt_xent_loss
from cmrprior.utils import atomic
from cmrprior.utils.seeding import derive_seed, seed_everything, torch_generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """SimCLR pre-training settings. Defaults follow the study (Adam 1e-4, tau 0.1, early stopping)."""

    backbone: str = "vgg16"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # start from "imagenet" or a weights file (None: random init)
    image_size: int = 128  # views are resampled to image_size x image_size
    batch_size: int = 128  # global batch (split over ranks); the study's grid is 64-256
    lr: float = 1e-4
    weight_decay: float = 0.0
    temperature: float = 0.1
    epochs: int = 100
    patience: int = 10  # epochs without held-out improvement before stopping (0: never stop early)
    min_delta: float = 0.0
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    proj_batch_norm: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_batch_size: int = 64  # fixed, so held-out losses compare across training batch sizes
    # "auto": bf16 autocast on CUDA, fp32 on CPU (measured: on a CPU without native bf16 (AVX2 only)
    # bf16 convolutions are ~70x slower than fp32; see bench/pretrain_throughput.py) | "bf16" | "fp32".
    precision: str = "auto"
    # None = auto = on, CPU and CUDA. Measured on this 2-core AVX2 CPU (bench/pretrain_throughput.py,
    # round-robin against NCHW): resnet18 1.22-1.25x, densenet121 1.20x, tiny 1.19x, vgg16 1.02x faster;
    # much of it is the single-channel stem convolution, whose NCHW backward is ~3x slower here.
    channels_last: bool | None = None
    compile: bool = False
    sync_batchnorm: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    seed: int = 0
    checkpoint_every_steps: int = 0  # 0: only at the end of each epoch
    max_steps: int | None = None  # stop (with a checkpoint) after this many global steps
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"PretrainConfig.precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"PretrainConfig.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("image_size", "batch_size", "epochs", "val_batch_size", "proj_hidden_dim", "proj_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("PretrainConfig.batch_size must be >= 2 (negatives come from the batch)")
        if not (self.lr > 0 and self.temperature > 0):
            raise ConfigError("PretrainConfig.lr and temperature must be > 0")
        if self.patience < 0 or self.checkpoint_every_steps < 0:
            raise ConfigError("PretrainConfig.patience and checkpoint_every_steps must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        d = dict(d)
        aug = d.pop("augment", None)
        if isinstance(aug, dict):
            aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
        return cls(**d, **({"augment": aug} if aug is not None else {}))


# Fields that may change between a run and its resumption (they do not change what a step computes).
_RESUMABLE_CHANGES = {"epochs", "patience", "min_delta", "max_steps", "checkpoint_every_steps", "progress", "compile",
                      "device"}


@dataclass(frozen=True)
class PretrainResult:
    checkpoint: Path  # best.pt when held-out images were given, else last.pt
    history: list[dict[str, Any]]
    best_val_loss: float | None
    stopped_early: bool = False
    finished: bool = True  # False when max_steps ended the run before the last epoch


class SimCLRModel(nn.Module):
    """Encoder f (a registry backbone) + projection head g: `(B, C, H, W)` -> `(B, proj_dim)`."""

    def __init__(self, encoder: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.forward_features(x))


def build_model(model_args: dict[str, Any]) -> SimCLRModel:
    """Rebuild the model from the `model_args` stored in a checkpoint."""
    enc = create_backbone(model_args["backbone"], in_chans=model_args["in_chans"], **model_args["backbone_kwargs"])
    head = ProjectionHead(enc.num_features, model_args["proj_hidden_dim"], model_args["proj_dim"],
                          batch_norm=model_args["proj_batch_norm"])
    return SimCLRModel(enc, head)


def load_encoder(checkpoint: str | Path) -> nn.Module:
    """The pre-trained backbone stored in `checkpoint` (best.pt or last.pt), on CPU, in eval mode.

    Raises DataError when the file is missing or not a cmrprior pre-training checkpoint.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.is_file():
        raise DataError(path, "pre-training checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(path, f"cannot read checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "encoder" not in ckpt:
        raise DataError(path, "not a cmrprior pre-training checkpoint (no model_args/encoder)")
    args = ckpt["model_args"]
    enc = create_backbone(args["backbone"], in_chans=args["in_chans"], **args["backbone_kwargs"])
    enc.load_state_dict(ckpt["encoder"])
    return enc.eval()


def _as_tensor(images: np.ndarray, name: str) -> torch.Tensor:
    """`(N, H, W)` float array -> float32 tensor `(N, 1, H, W)` (a copy; the input is untouched)."""
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise ConfigError(f"pretrain: {name} must be (N, H, W), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"pretrain: {name} contains non-finite values")
    return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)).unsqueeze(1)


def _resolve_device(name: str, info: D.DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("PretrainConfig.device='cuda' but no CUDA device is available")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def resolve_auto(config: PretrainConfig, device: torch.device) -> PretrainConfig:
    """Replace the "auto" precision / channels-last settings by the choice for `device`."""
    cuda = device.type == "cuda"
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = True if config.channels_last is None else config.channels_last
    return dataclasses.replace(config, precision=precision, channels_last=channels_last)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def simclr_loss(model: nn.Module, v1: torch.Tensor, v2: torch.Tensor, *, temperature: float, precision: str,
                gather: bool = False) -> torch.Tensor:
    """Forward both views in one batch `(2b, C, H, W)`, NT-Xent (float32) of the two halves."""
    with _autocast(v1.device, precision):
        z = model(torch.cat([v1, v2], dim=0))
    b = v1.shape[0]
    return nt_xent_loss(z[:b], z[b:], temperature=temperature, gather=gather)


@torch.no_grad()
def heldout_loss(model: nn.Module, images: torch.Tensor, config: PretrainConfig, device: torch.device) -> float:
    """Mean NT-Xent of held-out images `(N, 1, H, W)` with fixed-seed views, batches of `val_batch_size`.

    Computed as in training: batch norm uses the batch's statistics (on a copy of `model`, so its running
    statistics are untouched). Measured on ACDC/resnet18 (lr 1e-3): after 2 epochs the eval-mode
    (running-statistics) loss was 4.91 on held-out AND on training images, worse than the untrained
    network's 4.70, while the batch-statistics loss fell to 4.54 (held-out) / 4.26 (training): running
    statistics lag a fast-changing network and would make early stopping pick the wrong epoch. Before
    eval-mode feature extraction use `recalibrate_batchnorm`. A last batch of one image is merged into the
    previous one.
    """
    model = copy.deepcopy(model).train()
    g = torch_generator(derive_seed(config.seed, "heldout-views"))
    n = images.shape[0]
    bounds = list(range(0, n, config.val_batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        bounds.pop(-2)
    total, count = 0.0, 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        x = images[lo:hi].to(device)
        v1, v2 = two_views(x, config.augment, g, out_size=config.image_size)
        if config.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        total += simclr_loss(model, v1, v2, temperature=config.temperature, precision=config.precision).item() * (hi - lo)
        count += hi - lo
    return total / count


@torch.no_grad()
def recalibrate_batchnorm(encoder: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> nn.Module:
    """Re-estimate the running statistics of every BatchNorm of `encoder` (in place) as the exact average
    over `images (N, C, H, W)` (momentum None, "precise BN"), then return it in eval mode.

    Use before eval-mode feature extraction from an encoder whose running statistics lag its weights.
    """
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    for lo in range(0, images.shape[0], batch_size):
        encoder(images[lo : lo + batch_size])
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return encoder.eval()


def _check_resumable(saved: dict[str, Any], config: PretrainConfig, path: Path) -> None:
    now = config.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(
            f"{path}: the run folder holds a run with a different configuration ({', '.join(diff)}); "
            "use a new --out folder or the same settings to resume"
        )


def pretrain(
    train_images: np.ndarray,
    config: PretrainConfig,
    out_dir: str | Path,
    val_images: np.ndarray | None = None,
    extra_unlabeled: np.ndarray | None = None,
) -> PretrainResult:
    """SimCLR pre-training on `train_images (N, H, W)` float32 (+ `extra_unlabeled (M, H, W)`).

    `val_images (V, H', W')`: held-out slices (other patients) for the per-epoch NT-Xent and early
    stopping. Resumes from `out_dir/last.pt` when present (same config required, except
    epochs/patience/max_steps/checkpoint interval/progress/compile/device).
    Raises ConfigError (bad config or arrays), DataError (unreadable checkpoint).
    """
    # ---- set-up -------------------------------------------------------------------------------
    out_dir = Path(out_dir)
    info = D.init_distributed(None if config.device == "auto" else config.device)
    device = _resolve_device(config.device, info)
    config = resolve_auto(config, device)
    data = _as_tensor(train_images, "train_images")
    if extra_unlabeled is not None and len(extra_unlabeled):
        extra = _as_tensor(extra_unlabeled, "extra_unlabeled")
        if extra.shape[2:] != data.shape[2:]:
            raise ConfigError(f"pretrain: extra_unlabeled images are {tuple(extra.shape[2:])}, train images {tuple(data.shape[2:])}")
        data = torch.cat([data, extra])
    val = _as_tensor(val_images, "val_images") if val_images is not None else None
    if val is not None and val.shape[0] < 2:
        raise ConfigError("pretrain: val_images needs at least 2 images")
    global_batch = min(config.batch_size, data.shape[0])
    if global_batch < 2:
        raise ConfigError(f"pretrain: need at least 2 training images, got {data.shape[0]}")
    if global_batch % info.world_size:
        raise ConfigError(f"pretrain: batch size {global_batch} is not divisible by {info.world_size} processes")
    local_batch = global_batch // info.world_size
    steps_per_epoch = data.shape[0] // global_batch  # drop the last partial batch (NT-Xent wants full batches)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    # ---- model and optimizer -----------------------------------------------------------------
    seed_everything(config.seed)
    model_args = {
        "backbone": config.backbone,
        "in_chans": 1,
        "backbone_kwargs": dict(config.backbone_kwargs),
        "proj_hidden_dim": config.proj_hidden_dim,
        "proj_dim": config.proj_dim,
        "proj_batch_norm": config.proj_batch_norm,
    }
    model = build_model(model_args)
    if config.weights is not None:
        model.encoder = create_backbone(config.backbone, in_chans=1, weights=config.weights, **config.backbone_kwargs)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    # ---- resume -------------------------------------------------------------------------------
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = {"epoch": 0, "step": 0, "step_in_epoch": 0, "loss_sum": 0.0, "history": [], "best_val_loss": None,
             "bad_epochs": 0, "stopped_early": False, "images_seen": 0}
    if last_path.exists():
        try:
            ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(last_path, f"cannot read checkpoint to resume ({exc.__class__.__name__}: {exc})") from exc
        _check_resumable(ckpt["config"], config, last_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        log.info("resumed %s at epoch %d step %d", last_path, state["epoch"], state["step"])
    raw_model = model
    if config.compile:
        model = torch.compile(model)
    model = D.wrap_ddp(model, sync_batchnorm=config.sync_batchnorm, device=device)

    def save(path_last: Path) -> None:
        if not info.is_main:
            return
        ckpt = {
            "config": config.to_dict(),
            "model_args": model_args,
            "model": raw_model.state_dict(),
            "encoder": raw_model.encoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": dict(state),
            "rng": {"torch": torch.get_rng_state()},
        }
        atomic.save_torch(path_last, ckpt)

    def write_metrics() -> None:
        if info.is_main:
            lines = "".join(json.dumps(h, sort_keys=True) + "\n" for h in state["history"])
            atomic.write_text(out_dir / "metrics.jsonl", lines)

    # ---- training loop ------------------------------------------------------------------------
    from tqdm.auto import tqdm

    gather = info.enabled
    finished = True
    while state["epoch"] < config.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        perm = torch.randperm(data.shape[0], generator=torch_generator(derive_seed(config.seed, "epoch-order", epoch)))
        model.train()
        t0 = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{config.epochs}",
                   file=sys.stderr, disable=not (config.progress and info.is_main), leave=False, unit="step")
        images_at_start = state["images_seen"]
        while state["step_in_epoch"] < steps_per_epoch:
            if config.max_steps is not None and state["step"] >= config.max_steps:
                finished = False
                break
            i = state["step_in_epoch"]
            idx = perm[i * global_batch + info.rank * local_batch : i * global_batch + (info.rank + 1) * local_batch]
            x = data[idx].to(device, non_blocking=True)
            g = torch_generator(derive_seed(config.seed, "views", state["step"], info.rank))
            with torch.no_grad():
                v1, v2 = two_views(x, config.augment, g, out_size=config.image_size)
            if config.channels_last:
                v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            loss = simclr_loss(model, v1, v2, temperature=config.temperature, precision=config.precision, gather=gather)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = D.all_reduce_mean(loss.item(), device)
            if not math.isfinite(loss_value):
                raise ConfigError(f"pretrain: loss became {loss_value} at step {state['step']} (lower lr or use fp32)")
            state["loss_sum"] += loss_value
            state["step"] += 1
            state["step_in_epoch"] += 1
            state["images_seen"] += global_batch
            bar.update(1)
            rate = (state["images_seen"] - images_at_start) / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}")
            if config.checkpoint_every_steps and state["step"] % config.checkpoint_every_steps == 0:
                save(last_path)
        bar.close()
        if not finished:
            break
        # ---- end of epoch: held-out loss, early stopping, checkpoint ---------------------------
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": state["loss_sum"] / max(steps_per_epoch, 1),
            "seconds": time.perf_counter() - t0,
            "batch_size": global_batch,
            "world_size": info.world_size,
        }
        if val is not None:
            # averaged over ranks: BatchNorm buffers may differ slightly between ranks (DDP broadcasts them at the
            # next forward), and every rank must take the same early-stopping decision
            vloss = D.all_reduce_mean(heldout_loss(raw_model, val, config, device), device)
            record["val_loss"] = vloss
            best = state["best_val_loss"]
            if best is None or vloss < best - config.min_delta:
                state["best_val_loss"], state["bad_epochs"] = vloss, 0
                if info.is_main:
                    atomic.save_torch(best_path, {"model_args": model_args, "encoder": raw_model.encoder.state_dict(),
                                                  "config": config.to_dict(), "epoch": epoch + 1, "val_loss": vloss})
            else:
                state["bad_epochs"] += 1
                if config.patience and state["bad_epochs"] >= config.patience:
                    state["stopped_early"] = True
        log.info("epoch %s", record)
        state["history"] = state["history"] + [record]
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        state["loss_sum"] = 0.0
        save(last_path)
        write_metrics()
    if not finished:
        save(last_path)
    D.barrier()
    if info.is_main and val is None and finished:
        atomic.save_torch(best_path, {"model_args": model_args, "encoder": raw_model.encoder.state_dict(),
                                      "config": config.to_dict(), "epoch": state["epoch"], "val_loss": None})
    return PretrainResult(
        checkpoint=best_path if best_path.exists() else last_path,
        history=list(state["history"]),
        best_val_loss=state["best_val_loss"],
        stopped_early=bool(state["stopped_early"]),
        finished=finished,
    )


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
