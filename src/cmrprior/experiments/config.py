"""Study configuration: frozen dataclasses, filled from YAML at the edge (`StudyConfig.from_yaml`).

`configs/paper.yaml` holds the study's settings (vgg16 + densenet121, 224 px, the full grid, 5 splits);
`configs/cpu.yaml` a small backbone and resolution that finishes on 2 CPU cores. Unknown keys are an
error (ConfigError naming the key), so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cmrprior.errors import ConfigError


@dataclass(frozen=True)
class MasksSettings:
    """Where the heart masks of segmented images come from."""

    source: str = "segmenter"  # "segmenter" (default; shipped model) | "ground_truth"
    model: str | None = None  # segmenter weights; None = the shipped model


@dataclass(frozen=True)
class ImageSettings:
    segmented_mode: str = "mask"  # the anatomy image mode used for "segmented": mask | crop | mask+crop
    margin_mm: float = 5.0  # heart-mask dilation


@dataclass(frozen=True)
class ProtocolSettings:
    n_splits: int = 5  # repeated patient-level stratified splits
    test_fraction: float = 0.3
    seed: int = 0
    cv_folds: int = 3  # k-fold CV inside the training part (hyperparameters)
    val_fraction: float = 0.2  # inner validation part (pre-training early stopping; finetune mode)


@dataclass(frozen=True)
class PretrainSettings:
    """SimCLR settings; `batch_sizes` is the grid chosen from by downstream CV on the training part."""

    epochs: int = 10
    batch_sizes: tuple[int, ...] = (64,)
    temperature: float = 0.1
    lr: float = 1e-4
    patience: int = 3
    extra: dict = field(default_factory=dict)  # passed to cmrprior.ssl.config.PretrainConfig as is


@dataclass(frozen=True)
class ClassifierSettings:
    backbones: tuple[str, ...] = ("resnet18",)
    inits: tuple[str, ...] = ("none", "imagenet", "full_sscl", "segmented_sscl")
    images: tuple[str, ...] = ("full", "segmented")
    mode: str = "linear"  # linear | finetune
    input_size: int = 64  # px, images resized to this before every encoder (pre-training too)
    lrs: tuple[float, ...] = (1e-3, 1e-2)  # output-layer learning rates searched by CV
    max_epochs: int = 40
    batch_size: int = 64
    weight_decay: float = 1e-4
    encoder_lr: float = 1e-5  # finetune mode only
    patience: int = 5  # finetune mode early stopping
    feature_batch_size: int = 128
    standardize: bool = True  # linear mode: train the output layer on standardised features (folded in after)


@dataclass(frozen=True)
class EvaluationSettings:
    n_boot: int = 1000
    level: float = 0.95


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    prepare: dict = field(default_factory=dict)  # cmrprior.data.prepare.PrepareConfig fields
    masks: MasksSettings = field(default_factory=MasksSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    protocol: ProtocolSettings = field(default_factory=ProtocolSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)

    def __post_init__(self) -> None:
        c = self.classifier
        from cmrprior.classify.model import INITS

        bad = [i for i in c.inits if i not in INITS]
        if bad:
            raise ConfigError(f"classifier.inits: unknown {bad}; expected a subset of {INITS}")
        bad = [i for i in c.images if i not in ("full", "segmented")]
        if bad:
            raise ConfigError(f"classifier.images: unknown {bad}; expected full and/or segmented")
        if c.mode not in ("linear", "finetune"):
            raise ConfigError(f"classifier.mode must be linear or finetune, got {c.mode!r}")
        if self.masks.source not in ("segmenter", "ground_truth"):
            raise ConfigError(f"masks.source must be segmenter or ground_truth, got {self.masks.source!r}")
        if self.images.segmented_mode not in ("mask", "crop", "mask+crop"):
            raise ConfigError(f"images.segmented_mode must be mask, crop or mask+crop, got {self.images.segmented_mode!r}")
        p = self.protocol
        if p.n_splits < 1 or not 0 < p.test_fraction < 1 or p.cv_folds < 2 or not 0 < p.val_fraction < 1:
            raise ConfigError(f"protocol: invalid values {p}")
        if not self.pretrain.batch_sizes or not c.lrs or not c.backbones:
            raise ConfigError("pretrain.batch_sizes, classifier.lrs and classifier.backbones must not be empty")

    # ---- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "StudyConfig":
        return _build(cls, data or {}, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StudyConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        return cls.from_dict(data or {}, source=str(path))

    def replace(self, **sections: Any) -> "StudyConfig":
        """A copy with whole sections or nested fields replaced: `cfg.replace(protocol={"n_splits": 2})`."""
        data = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in ("prepare",):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return StudyConfig.from_dict(data)


def _build(cls: type, data: dict, where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        f = names[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name} must be a mapping")
            kwargs[name] = _build(type(default), value, f"{where}: {name}")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        elif isinstance(default, float) and isinstance(value, (int, float, str)):
            try:
                kwargs[name] = float(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {name} must be a number, got {value!r}") from exc
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def builtin_config_path(name: str) -> Path:
    """Path of a config shipped with the package (`paper`, `cpu`)."""
    ref = resources.files("cmrprior") / "configs" / f"{name}.yaml"
    if not ref.is_file():
        raise ConfigError(f"no built-in config {name!r} (looked for {ref})")
    return Path(str(ref))


def load_config(path_or_name: str | Path | None, default: str = "cpu") -> StudyConfig:
    """A YAML file path, or the name of a built-in config (`paper`, `cpu`); None = `default`."""
    if path_or_name is None:
        return StudyConfig.from_yaml(builtin_config_path(default))
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"{p}: config file not found")
        return StudyConfig.from_yaml(p)
    return StudyConfig.from_yaml(builtin_config_path(str(path_or_name)))
