"""SimCLR pre-training settings: the `PretrainConfig` dataclass, its checks, and the per-device
resolution of its "auto" choices (device, precision, channels-last).

A run folder holds one configuration: `check_resumable` refuses to resume a run under different
settings, except for the fields in `RESUMABLE_CHANGES`, which do not change what a step computes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cmrprior.errors import ConfigError
from cmrprior.ssl.augment import AugmentConfig
from cmrprior.ssl.distributed import DistInfo
from cmrprior.vocab import DEFAULT_BACKBONE


@dataclass(frozen=True)
class PretrainConfig:
    """SimCLR pre-training settings. Defaults follow the study (Adam 1e-4, tau 0.1, early stopping).

    Raises ConfigError on an invalid value.
    """

    backbone: str = DEFAULT_BACKBONE
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
RESUMABLE_CHANGES = {"epochs", "patience", "min_delta", "max_steps", "checkpoint_every_steps", "progress", "compile",
                     "device"}


def check_resumable(saved: dict[str, Any], config: PretrainConfig, path: Path) -> None:
    """Raise ConfigError when `config` differs from the `saved` config dict of the run in `path` in a
    field outside `RESUMABLE_CHANGES`."""
    now = config.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(
            f"{path}: the run folder holds a run with a different configuration ({', '.join(diff)}); "
            "use a new --out folder or the same settings to resume"
        )


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """The device for `name` ("auto" | "cpu" | "cuda"; CUDA: this rank's local device).

    Raises ConfigError when CUDA is asked for but not available.
    """
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
