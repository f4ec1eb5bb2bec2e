"""Settings of the segmentation stage as plain dataclasses: the network's arguments (`UNetArgs`), the training
augmentation (`SegAugmentConfig`), a training run (`SegTrainConfig`) and the inference engine (`SegInference`).

This module imports no torch: the command line reads its defaults from these classes when it builds its parser
(`cmrprior --help` stays fast), and the modules that use them (`network`, `augment`, `train`, `inference`)
re-export them under their former names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from cmrprior.errors import ConfigError, DataError

N_CLASSES = 4
# SegTrainConfig fields that change how a run proceeds, not what its steps compute: a killed run may resume under
# other values, and the recipe digest leaves them out
RUN_SETTINGS = frozenset({"max_steps", "num_threads"})
# how the loss's Dice term pools (`losses.make_seg_loss`): over the whole batch, or per slice then averaged
DICE_OVER: tuple[str, ...] = ("batch", "slice")
# SegTrainConfig fields added after models were shipped, with the value that computes what a run did before them:
# a checkpoint without the field resumes under it, and the recipe digest leaves the field out at that value
ADDED_LATER: dict[str, object] = {"dice_over": "batch", "ce_boundary": 0.0, "draw_seed": None}


@dataclass(frozen=True)
class UNetArgs:
    """Arguments of `monai.networks.nets.UNet` (spatial_dims=2). Input `(B, in_channels, H, W)` with H, W
    divisible by prod(strides); output logits `(B, out_channels, H, W)`."""

    in_channels: int = 1
    out_channels: int = N_CLASSES
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # the shipped segmenter (1.6M parameters)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.0
    norm: str = "instance"

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise ConfigError(f"need len(strides) == len(channels) - 1 >= 1, got {self.channels}, {self.strides}")
        if any(c < 1 for c in self.channels) or any(s < 1 for s in self.strides):
            raise ConfigError("channels and strides must be positive")
        if self.in_channels < 1 or self.out_channels < 2:
            raise ConfigError("in_channels must be >= 1 and out_channels >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def divisor(self) -> int:
        """H and W of the input must be multiples of this."""
        d = 1
        for s in self.strides:
            d *= s
        return d

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "UNetArgs":
        known = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in obj.items() if k in known}
        return cls(**kw)


@dataclass(frozen=True)
class SegAugmentConfig:
    """Ranges of the segmenter's training augmentation (image and mask moved together): affine, flips, then
    intensity. Angles in degrees; translation as a fraction of the image side. A different augmentation from
    the SimCLR views' (`cmrprior.ssl.config.ViewAugmentConfig`) and the Seg-teacher's shift and intensity
    jitter (`cmrprior.ssl.teacher.TeacherConfig`), each tuned for its own training; named apart so that
    none is taken for another."""

    rotate_deg: float = 30.0
    scale_min: float = 0.85
    scale_max: float = 1.2
    translate: float = 0.12
    flip_prob: float = 0.1
    gamma_max: float = 1.5  # gamma drawn log-uniformly in [1/gamma_max, gamma_max]
    contrast: float = 0.15  # multiplier in [1 - c, 1 + c]
    brightness: float = 0.1  # offset in [-b, b]
    noise_std_max: float = 0.05
    prob: float = 0.9  # probability that a sample is augmented at all

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError("need 0 < scale_min <= scale_max")
        if self.gamma_max < 1:
            raise ConfigError("gamma_max must be >= 1")
        for name in ("flip_prob", "prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1]")


BACKENDS: tuple[str, ...] = ("torch", "onnx", "auto")


@dataclass(frozen=True)
class SegInference:
    """How the segmenter runs at inference. `threads`: ONNX Runtime intra-op threads (None: torch's
    current `torch.get_num_threads()`, which `--threads` sets). `rotations`: test-time rotation averaging,
    the in-plane angles in degrees of the extra passes on the heart window (`segmentation.tta`; () = one
    pass)."""

    backend: str = "torch"
    threads: int | None = None
    rotations: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"segmenter backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"segmenter inference threads must be >= 1, got {self.threads}")
        for d in self.rotations:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not 0 < abs(d) <= 90:
                raise ConfigError(f"segmenter test-time rotations must be angles in degrees, 0 < |angle| <= 90, "
                                  f"got {d!r} in {list(self.rotations)}")
        if len(set(self.rotations)) != len(self.rotations):
            raise ConfigError(f"segmenter test-time rotations repeat an angle: {list(self.rotations)}")


@dataclass(frozen=True)
class SegTrainConfig:
    """Everything that defines a segmenter training run (stored in every checkpoint)."""

    seed: int = 0
    # another draw of the same training (initialisation, augmentation, batch order) on the same folds and validation
    # patients, which `seed` alone decides; None: `seed` draws them too (one training per fold, as shipped)
    draw_seed: int | None = None
    unet: UNetArgs = field(default_factory=UNetArgs)
    augment: SegAugmentConfig = field(default_factory=SegAugmentConfig)
    max_epochs: int = 60
    batch_size: int = 8
    # random square crop (pixels) of each augmented training slice; None = the whole prepared window, the view
    # inference segments (96 px crops: held-out RV Dice 0.004-0.031 lower on each of 5 ACDC folds)
    train_crop: int | None = None
    lr: float = 2e-3
    # Dice + CE loss; "slice": each slice's Dice counts alike, so small structures (an end-systolic cavity) weigh more
    dice_over: str = "batch"
    # the cross-entropy of pixels on a boundary between labels counts 1 + ce_boundary times (`losses`)
    ce_boundary: float = 0.0
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    val_fraction: float = 0.1
    patience: int = 20  # epochs without improvement of validation Dice before stopping
    min_epochs: int = 5
    bf16: bool = False
    max_steps: int | None = None  # stop (with a checkpoint) after this many optimizer steps in total
    checkpoint_every: int = 200  # steps; a checkpoint is also written after every epoch
    num_threads: int | None = None  # torch.set_num_threads when set
    # start from these segmenter weights (a `.safetensors` of the same `unet` arguments) instead of a random
    # initialisation: fine-tuning, or a further cosine cycle of a trained model; its sha256 is `init_sha256`
    init: str | None = None
    init_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_epochs < 1:
            raise ConfigError("batch_size and max_epochs must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.dice_over not in DICE_OVER:
            raise ConfigError(f"dice_over must be one of {list(DICE_OVER)}, got {self.dice_over!r}")
        if not self.ce_boundary >= 0:
            raise ConfigError(f"ce_boundary must be >= 0, got {self.ce_boundary}")
        if (self.init is None) != (self.init_sha256 is None):
            raise ConfigError("init and init_sha256 go together (use `with_init`)")

    @property
    def training_seed(self) -> int:
        """The seed of the initialisation, augmentation and batch order (`draw_seed`, else `seed`)."""
        return self.seed if self.draw_seed is None else int(self.draw_seed)

    def with_init(self, weights: str | Path | None) -> "SegTrainConfig":
        """This config starting from `weights` (None: from a random initialisation), with their sha256.

        Raises DataError when the file does not exist."""
        if weights is None:
            return dataclasses.replace(self, init=None, init_sha256=None)
        from cmrprior.segmentation.predict import file_sha256  # imports torch: only when a run starts from weights

        path = Path(weights)
        if not path.is_file():
            raise DataError(path, "initial segmenter weights not found")
        return dataclasses.replace(self, init=str(path), init_sha256=file_sha256(path))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "SegTrainConfig":
        obj = dict(obj)
        obj["unet"] = UNetArgs.from_json(obj.get("unet", {}))
        aug_fields = {f.name for f in dataclasses.fields(SegAugmentConfig)}
        obj["augment"] = SegAugmentConfig(**{k: v for k, v in obj.get("augment", {}).items() if k in aug_fields})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


def recipe_digest(config_json: dict) -> str:
    """sha256 naming a training recipe: `config_json` (a `SegTrainConfig.to_json()`, as stored in a model's JSON)
    without its `RUN_SETTINGS` and its `ADDED_LATER` fields at their earlier value, and with its initial weights
    reduced to whether there were any (each fold of an `--init-cv` run starts from another file under the same
    recipe). Models of one recipe and one code version
    differ only by their training patients."""
    recipe = {k: v for k, v in config_json.items() if k not in RUN_SETTINGS | {"init", "init_sha256"}
              and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    recipe["init"] = config_json.get("init") is not None
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
