"""Seg-teacher pre-training: the encoder learns to draw the heart (LV cavity, myocardium, RV) from the image.

The study's masks are the teacher. Its encoder (any registered backbone) feeds a small decoder through its last
spatial feature map (the backbone's `gradcam_layer`), and the pair is trained with cross-entropy to predict
each pixel's label; the decoder is then thrown away. A frozen encoder trained this way has features that
measure the heart's structures (how much cavity, how thick a wall), which is what tells the diagnoses apart
and what SimCLR's crop-invariant features lose. At test time the classifier sees images only.

Only the split's training patients are used (as for SimCLR), and their masks are the study's own (the
segmenter's out-of-sample masks, or expert masks in the oracle setting the outputs name).

Files (`out_dir`), written atomically:
  best.pt        the encoder of the best held-out epoch, in SimCLR's best.pt format (`load_encoder` reads it);
  last.pt        {"config", "model", "optimizer", "state", "rng"} after each epoch: a killed run resumes there
                 (`cmrprior.utils.training.TrainingRun`, as every training loop of the toolkit);
  metrics.jsonl  one line per epoch.
Each epoch draws its augmentation and order from a generator seeded by (seed, epoch), so a resumed run
computes what an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmrprior.errors import ConfigError, InputError
from cmrprior.models.registry import create_backbone
from cmrprior.utils import atomic, cpu_precision, timing
from cmrprior.utils.seeding import seed_everything
from cmrprior.utils.training import EarlyStopping, TrainingRun, order_generator, saved_config

log = logging.getLogger(__name__)

N_LABELS = 4  # background, RV, myocardium, LV cavity (ACDC labels)
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class TeacherConfig:
    """Seg-teacher settings (YAML: the study's `teacher` section). Raises ConfigError on an invalid value."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without held-out improvement before stopping (0: never stop early)
    decoder_width: int = 64  # channels of the decoder's first block (halved at each of the following two)
    # upsampling blocks: 3 draws the masks at the input size; 2 or 1 draw them at 1/2 or 1/4 of it (the logits
    # resized to the input). The blocks at the highest resolution cost most: with the tiny CNN at 64 px a forward
    # pass is 24 MFLOP with 1 block, 62 with 2, 100 with 3.
    decoder_blocks: int = 3
    # the model and its inputs in channels-last memory format (oneDNN's NHWC convolutions); None: channels-last when the
    # teacher computes in bf16, where oneDNN's bf16 kernels are fast in it, the default layout in float32. In float32
    # it is the same computation in another order, its batch norms less precise, and an epoch of the tiny CNN's
    # teacher at 64 px took 3.9-4.2 CPU s instead of 6.3 (AVX2); not the float32 default: over development seeds
    # 1, 4 and 5 the Seg-teacher cell on full images fell by 0.025 on average, past the rule fixed before the runs
    # (README, the seed-1 rows); PyTorch's CPU batch norm is less precise in this layout (`bench/teacher_layout.py`)
    channels_last: bool | None = None
    # "fp32"; "bf16": forward under bf16 autocast (the loss and the weights in float32); "auto": bf16 when the CPU has
    # native bf16 and a timed teacher step (in the layout each precision takes) is faster in it
    # (`cmrprior.utils.cpu_precision`), else float32. float32 by default: bf16 is judged by the three-draw rule
    # (README, the teacher rows)
    precision: str = "fp32"
    shift_px: int = 4  # random translation of image and mask together, in pixels at the input size
    intensity_jitter: float = 0.2  # intensity x U(1 - j, 1 + j) + U(-j / 2, j / 2), image only

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "decoder_width"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"teacher.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"teacher.lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if int(self.decoder_blocks) not in (1, 2, 3):
            raise ConfigError(f"teacher.decoder_blocks must be 1, 2 or 3, got {self.decoder_blocks}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"teacher.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.patience < 0 or self.shift_px < 0 or not 0 <= self.intensity_jitter < 1:
            raise ConfigError("teacher.patience and shift_px must be >= 0, intensity_jitter in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# what a setting missing from an older checkpoint's config was: its default as resolved in float32
_BEFORE_SETTINGS = {**TeacherConfig().to_dict(), "channels_last": False}


@dataclass(frozen=True)
class TeacherResult:
    checkpoint: Path  # best.pt
    history: list[dict[str, Any]]
    best_val_loss: float | None
    stopped_early: bool
    precision: str  # what the run computed in ("fp32" | "bf16"), "auto" resolved
    channels_last: bool


class SegmentationPretext(nn.Module):
    """`encoder` + a decoder from its last spatial map (`encoder.gradcam_layer`) to `N_LABELS` logits at the
    input size: `blocks` (3) conv3x3-BN-ReLU blocks, each after a 2x bilinear upsampling, a 1x1 conv, and a final
    bilinear resize to the input (for encoders whose map is not 1/8 of it, or fewer blocks)."""

    def __init__(self, encoder: nn.Module, *, width: int = 64, blocks: int = 3) -> None:
        super().__init__()
        self.encoder = encoder
        self._layer_name = str(encoder.gradcam_layer)  # a name, not the module: it would be registered twice
        with torch.no_grad():
            was = encoder.training
            encoder.eval()
            channels = self._map(torch.zeros(1, int(encoder.in_chans), 32, 32)).shape[1]
            encoder.train(was)
        layers: list[nn.Module] = []
        prev = channels
        for w in (width, max(1, width // 2), max(1, width // 4))[:blocks]:
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            prev = w
        self.decoder = nn.Sequential(*layers, nn.Conv2d(prev, N_LABELS, 1))

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's last spatial feature map for `x` (B, C, H, W)."""
        out: list[torch.Tensor] = []
        handle = self.encoder.get_submodule(self._layer_name).register_forward_hook(lambda _m, _i, o: out.append(o))
        try:
            self.encoder.forward_features(x)
        finally:
            handle.remove()
        return out[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self._map(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _check_pairs(images: np.ndarray, masks: np.ndarray, what: str) -> None:
    if images.ndim != 3 or images.shape != masks.shape:
        raise InputError(f"teacher {what}: images {images.shape} and masks {masks.shape} must both be (N, S, S)")
    if len(images) == 0:
        raise InputError(f"teacher {what}: no images")
    if masks.size and (int(masks.min()) < 0 or int(masks.max()) >= N_LABELS):
        raise InputError(f"teacher {what}: mask labels must be in [0, {N_LABELS}), got {int(masks.min())}..{int(masks.max())}")


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` (B, ..., H, W) moved by (dy, dx) pixels, zeros coming in (no wrap-around)."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _shift_and_jitter(x: torch.Tensor, y: torch.Tensor, config: TeacherConfig, g: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """One random shift for the batch (image and mask together) and an intensity change per image."""
    j = config.intensity_jitter
    if j > 0:
        scale = 1 + (torch.rand(len(x), 1, 1, 1, generator=g) * 2 - 1) * j
        x = x * scale + (torch.rand(len(x), 1, 1, 1, generator=g) - 0.5) * j
    if config.shift_px > 0:
        dy, dx = (torch.randint(-config.shift_px, config.shift_px + 1, (2,), generator=g)).tolist()
        x, y = _shift(x, dy, dx), _shift(y, dy, dx)
    return x, y


def _logits(model: nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """The model's logits for `x`, computed under bf16 autocast when `precision` is "bf16", in float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(x)
    return out.float()


def _val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, precision: str) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            total += float(F.cross_entropy(_logits(model, x[i:i + batch_size], precision), y[i:i + batch_size],
                                           reduction="sum"))
    return total / y.numel()


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 config: TeacherConfig, g: torch.Generator) -> float:
    """One pass over (x, y) in the order and with the augmentation that `g` draws; the mean training loss."""
    model.train()
    order = torch.randperm(len(x), generator=g)
    loss_sum = 0.0
    for i in range(0, len(x), config.batch_size):
        idx = order[i:i + config.batch_size]
        if len(idx) < 2 and i > 0:  # batch norm cannot train on one image: it sits this epoch out
            continue
        with timing.phase("augment"):
            xb, yb = _shift_and_jitter(x[idx], y[idx], config, g)
            if config.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
        with timing.phase("forward", items=len(idx)):
            loss = F.cross_entropy(_logits(model, xb, config.precision), yb)
        with timing.phase("backward", items=len(idx)):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with timing.phase("optimizer"):
            opt.step()
        loss_sum += loss.item() * len(idx)
    return loss_sum / len(x)


def _resolve(config: TeacherConfig, backbone: str, size: int, saved: dict[str, Any] | None
             ) -> tuple[TeacherConfig, str]:
    """`config` with the precision the run computes in ("fp32" | "bf16") and its layout, and why the precision: the
    configured one, the one a resumed "auto" run chose, or for "auto" the faster of one timed teacher step (a
    throwaway model at the run's batch size, in each precision's layout, from random numbers of its own) on a CPU
    with native bf16."""
    def layout(precision: str) -> bool:
        return precision == "bf16" if config.channels_last is None else bool(config.channels_last)

    def resolved(precision: str, why: str) -> tuple[TeacherConfig, str]:
        return dataclasses.replace(config, precision=precision, channels_last=layout(precision)), why

    if config.precision != "auto":
        return resolved(config.precision, f"{config.precision} (set)")
    if saved is not None and saved.get("precision") in ("fp32", "bf16"):
        return resolved(saved["precision"], f"{saved['precision']}, as chosen when the run being resumed started")
    parts: dict[str, Any] = {}

    def step(precision: str) -> None:
        if precision not in parts:
            with torch.random.fork_rng(devices=[]):
                g = torch.Generator().manual_seed(0)
                model = SegmentationPretext(create_backbone(backbone, in_chans=1, weights=None),
                                            width=config.decoder_width, blocks=config.decoder_blocks).train()
                x = torch.rand((config.batch_size, 1, size, size), generator=g)
                y = torch.randint(0, N_LABELS, (config.batch_size, size, size), generator=g)
            if layout(precision):
                model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            parts[precision] = (model, x, y)
        model, x, y = parts[precision]
        model.zero_grad(set_to_none=True)
        F.cross_entropy(_logits(model, x, precision), y).backward()

    choice = cpu_precision.choose_cpu_precision(step)
    return resolved(choice.precision, choice.reason)


def pretrain_teacher(
    images: np.ndarray,
    masks: np.ndarray,
    config: TeacherConfig,
    out_dir: str | Path,
    *,
    backbone: str,
    seed: int,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    trackers: Sequence[str] = (),
) -> TeacherResult:
    """Train (or resume, or return a finished) Seg-teacher encoder of architecture `backbone` on `images`
    float32 `(N, S, S)` with their labels `masks` uint8 `(N, S, S)`; `val` (images, masks) chooses the epoch and
    stops early (without it, the last epoch is kept). See the module docstring for the files; `trackers`: the
    epoch records also go there (`cmrprior.utils.tracking`).

    A run resumes from `out_dir/last.pt` when one exists; only `epochs` may differ from the run that wrote it (a
    longer run continues a shorter one).

    Raises InputError (shapes or labels), DataError (an unreadable last.pt), ConfigError (last.pt of another
    configuration).
    """
    _check_pairs(images, masks, "training")
    if val is not None:
        _check_pairs(*val, "validation")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    asked = config.precision
    saved = saved_config(out / "last.pt") if asked == "auto" else None  # only "auto" needs the earlier choice
    config, why = _resolve(config, backbone, int(images.shape[-1]), saved)
    run_config = {**config.to_dict(), "backbone": backbone, "seed": int(seed), "image_size": int(images.shape[-1])}
    seed_everything(seed)
    encoder = create_backbone(backbone, in_chans=1, weights=None)
    model = SegmentationPretext(encoder, width=config.decoder_width, blocks=config.decoder_blocks)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    run = TrainingRun(out, config=run_config, may_change=("epochs",), what="teacher", trackers=trackers,
                      stopping=EarlyStopping(config.patience), defaults=_BEFORE_SETTINGS)

    def load(ckpt: dict[str, Any]) -> None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])

    state = run.resume({"best_val_loss": None, "bad_epochs": 0, "stopped_early": False}, load)
    if config.precision != "fp32" or asked != "fp32":
        log.info("teacher precision: %s%s", why, ", channels-last" if config.channels_last else "")
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    y = torch.from_numpy(np.asarray(masks, dtype=np.int64))
    xv = yv = None
    if val is not None:
        xv = torch.from_numpy(np.ascontiguousarray(val[0], dtype=np.float32))[:, None]
        yv = torch.from_numpy(np.asarray(val[1], dtype=np.int64))
        if config.channels_last:
            xv = xv.contiguous(memory_format=torch.channels_last)
    with run:
        while state["epoch"] < config.epochs and not run.should_stop():
            t0 = time.time()
            epoch = state["epoch"] + 1
            train_loss = _train_epoch(model, opt, x, y, config, order_generator(int(seed) * 100_003 + epoch))
            with timing.phase("evaluation", items=0 if xv is None else len(xv)):
                vl = None if xv is None else _val_loss(model, xv, yv, 2 * config.batch_size, config.precision)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": vl, "seconds": round(time.time() - t0, 2)}
            if run.improved(vl):
                atomic.save_torch(out / "best.pt", {"model_args": encoder.model_args, "encoder": encoder.state_dict(),
                                                    "config": run_config, "epoch": epoch, "val_loss": vl})
            log.info("teacher epoch %d: train loss %.4f, val loss %s (%.0f s)", epoch, train_loss,
                     "n/a" if vl is None else f"{vl:.4f}", row["seconds"])
            run.record(row)
            state["epoch"] = epoch
            run.save({"model": model.state_dict(), "optimizer": opt.state_dict()})
    return TeacherResult(checkpoint=out / "best.pt", history=list(state["history"]),
                         best_val_loss=state["best_val_loss"], stopped_early=run.should_stop(),
                         precision=config.precision, channels_last=bool(config.channels_last))
