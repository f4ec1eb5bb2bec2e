"""Settings of the diagnosis model's training (one frozen dataclass, filled from YAML or the CLI at the edge)."""

from __future__ import annotations

from dataclasses import dataclass

from cmrprior.errors import ConfigError
from cmrprior.vocab import DEFAULT_BACKBONE, IMAGES, INIT_NAMES

TRAINING_MODES: tuple[str, ...] = ("linear", "finetune")


@dataclass(frozen=True)
class ClassifierConfig:
    """The grid of diagnosis models and how each is trained.

    backbones x inits x images is the grid. mode: `linear` (frozen encoders, output layer searched by CV)
    or `finetune`. input_size: px, images are resized to it before every encoder (pre-training too).
    lrs: output-layer learning rates searched by CV (finetune: the first is used). encoder_lr: finetune
    only. patience: finetune early stopping. standardize: linear mode trains the output layer on
    standardised features (statistics of the training part), folded into the layer afterwards.
    """

    backbones: tuple[str, ...] = (DEFAULT_BACKBONE,)
    inits: tuple[str, ...] = INIT_NAMES
    images: tuple[str, ...] = IMAGES
    mode: str = "linear"
    input_size: int = 64
    lrs: tuple[float, ...] = (1e-3, 1e-2)
    max_epochs: int = 40
    batch_size: int = 64
    weight_decay: float = 1e-4
    encoder_lr: float = 1e-5
    patience: int = 5
    feature_batch_size: int = 128
    standardize: bool = True

    def __post_init__(self) -> None:
        bad = [i for i in self.inits if i not in INIT_NAMES]
        if bad:
            raise ConfigError(f"classifier.inits: unknown {bad}; expected a subset of {list(INIT_NAMES)}")
        bad = [i for i in self.images if i not in IMAGES]
        if bad:
            raise ConfigError(f"classifier.images: unknown {bad}; expected a subset of {list(IMAGES)}")
        if self.mode not in TRAINING_MODES:
            raise ConfigError(f"classifier.mode must be one of {list(TRAINING_MODES)}, got {self.mode!r}")
        if not self.lrs or not self.backbones or not self.inits or not self.images:
            raise ConfigError("classifier.lrs, backbones, inits and images must not be empty")
        if self.input_size < 8 or self.max_epochs < 1 or self.batch_size < 1 or self.feature_batch_size < 1:
            raise ConfigError(f"classifier: input_size >= 8, max_epochs, batch_size, feature_batch_size >= 1 ({self})")
