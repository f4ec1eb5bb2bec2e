"""SimCLR pre-training settings: the `PretrainConfig` dataclass, its checks, and the per-device
resolution of its "auto" choices (device, precision, channels-last), and the views' `ViewAugmentConfig`.

This module imports torch only inside the functions that need it: the command line reads the defaults of
these classes when it builds its parser, and `cmrprior --help` must stay fast.

A run folder holds one configuration: a resume under different settings is refused (the pre-training loop's
`cmrprior.utils.training.TrainingRun`), except for the fields in `RESUMABLE_CHANGES`, which do not change what a
step computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cmrprior.errors import ConfigError
from cmrprior.vocab import DEFAULT_BACKBONE

if TYPE_CHECKING:
    import torch

    from cmrprior.ssl.distributed import DistInfo


@dataclass(frozen=True)
class ViewAugmentConfig:
    """Probabilities and ranges of the SimCLR view transforms (images only, two views per image).
    Intensities assume roughly unit-range images. Not the segmenter's augmentation
    (`cmrprior.segmentation.config.SegAugmentConfig`), which moves a mask with the image."""

    crop_prob: float = 1.0
    crop_scale: tuple[float, float] = (0.35, 1.0)  # fraction of the image area
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height
    hflip_prob: float = 0.5
    vflip_prob: float = 0.5
    rotate_prob: float = 0.5
    rotate_degrees: float = 45.0  # uniform in [-d, d]
    brightness_prob: float = 0.8
    brightness: float = 0.2  # additive shift uniform in [-b, b] times the image's std
    contrast_prob: float = 0.8
    contrast: tuple[float, float] = (0.6, 1.4)  # multiplicative around the image mean
    gamma_prob: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.1)  # times the image's std

    def __post_init__(self) -> None:
        for name in ("crop_prob", "hflip_prob", "vflip_prob", "rotate_prob", "brightness_prob", "contrast_prob",
                     "gamma_prob", "noise_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"ViewAugmentConfig.{name} must be in [0, 1], got {p}")
        for name in ("crop_scale", "crop_ratio", "contrast", "gamma", "noise_std"):
            lo, hi = getattr(self, name)
            if not (lo <= hi) or lo < 0:
                raise ConfigError(f"ViewAugmentConfig.{name} must be a range (lo <= hi, lo >= 0), got {(lo, hi)}")
        if not 0 < self.crop_scale[0] or self.crop_scale[1] > 1:
            raise ConfigError(f"ViewAugmentConfig.crop_scale must lie in (0, 1], got {self.crop_scale}")
        if self.crop_ratio[0] <= 0 or self.gamma[0] <= 0:
            raise ConfigError("ViewAugmentConfig.crop_ratio and gamma must be positive")

    @classmethod
    def none(cls) -> "ViewAugmentConfig":
        """All probabilities 0: views are the input unchanged."""
        return cls(crop_prob=0, hflip_prob=0, vflip_prob=0, rotate_prob=0, brightness_prob=0, contrast_prob=0,
                   gamma_prob=0, noise_prob=0)


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
    augment: ViewAugmentConfig = field(default_factory=ViewAugmentConfig)
    val_batch_size: int = 64  # fixed, so held-out losses compare across training batch sizes
    # "auto": bf16 autocast on CUDA; on a CPU, float32 unless the CPU has native bf16 and a measured training step
    # of this network is faster in bf16 (`cmrprior.utils.cpu_precision`: without native bf16, e.g. AVX2 only, bf16
    # convolutions are ~70x slower; see bench/pretrain_throughput.py) | "bf16" | "fp32".
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
            aug = ViewAugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
        return cls(**d, **({"augment": aug} if aug is not None else {}))


# Fields that may change between a run and its resumption (they do not change what a step computes).
RESUMABLE_CHANGES = {"epochs", "patience", "min_delta", "max_steps", "checkpoint_every_steps", "progress", "compile",
                     "device"}


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """The device for `name` ("auto" | "cpu" | "cuda"; CUDA: this rank's local device).

    Raises ConfigError when CUDA is asked for but not available.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("PretrainConfig.device='cuda' but no CUDA device is available")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def resolve_auto(config: PretrainConfig, device: torch.device,
                 cpu_step: Callable[[str], None] | None = None) -> tuple[PretrainConfig, str]:
    """Replace the "auto" precision / channels-last settings by the choice for `device`, and say why.

    On a CPU, "auto" precision times `cpu_step(precision)` (one training step of the run's network) in both
    precisions when the CPU has native bf16 (`cmrprior.utils.cpu_precision`); without `cpu_step` there it stays
    float32, said so in the reason."""
    import torch

    from cmrprior.utils.cpu_precision import choose_cpu_precision, cpu_flags, native_bf16

    cuda = device.type == "cuda"
    precision, reason = config.precision, f"precision {config.precision} (set)"
    if precision == "auto" and cuda:
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        reason = f"{precision} on CUDA"
    elif precision == "auto" and cpu_step is None:
        found = native_bf16(cpu_flags())
        precision, reason = "fp32", ("float32: no training step given to time against bf16" if found
                                     else "float32: no native bf16 on this CPU")
    elif precision == "auto":
        choice = choose_cpu_precision(cpu_step)
        precision, reason = choice.precision, choice.reason
    channels_last = True if config.channels_last is None else config.channels_last
    return dataclasses.replace(config, precision=precision, channels_last=channels_last), reason
