"""Study configuration: one frozen dataclass per component, composed here, filled from YAML at the edge.

Each component's settings live next to the component (`data.prepare.PrepareConfig`,
`ssl.config.PretrainConfig`, `ssl.teacher.TeacherConfig`, `data.splits.ProtocolConfig`, `vocab.ImagesConfig`, `classify.config.ClassifierConfig` and `AnatomyConfig`, `evaluate.config.EvaluationConfig`);
this module adds what only the study has (masks, the pre-training grid) and
composes them. Each default is defined once, in its dataclass. Unknown keys anywhere are an error that
names the key and the file, so a typo cannot silently fall back to a default.

`configs/paper.yaml` holds the study's settings (vgg16 + densenet121, 224 px, the full grid, 5 splits);
`configs/cpu.yaml` a small backbone and resolution that finishes on 2 CPU cores.

Overrides (`load_config(name, overrides=...)`, CLI `--set KEY=VALUE`, repeatable) change single settings of a
loaded config by dotted key, `{"protocol.n_splits": 1, "pretrain.augment.rotation_deg": 5}`, merged into the
YAML form (`pretrain.epochs`: SimCLR settings sit beside `pretrain.batch_sizes` there) and validated as the
YAML is: an unknown key is a ConfigError that names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cmrprior.bundle.config import ExportConfig
from cmrprior.classify.config import AnatomyConfig, ClassifierConfig
from cmrprior.data.prepare import PrepareConfig
from cmrprior.data.splits import ProtocolConfig
from cmrprior.errors import ConfigError
from cmrprior.evaluate.config import EvaluationConfig
from cmrprior.experiments.config_values import StrictLoader, coerce, field_types
from cmrprior.experiments.executor_config import ExecutorConfig
from cmrprior.segmentation.inference import SegInference
from cmrprior.ssl.config import PretrainConfig
from cmrprior.ssl.teacher import TeacherConfig
from cmrprior.utils.tracking import TrackingConfig
from cmrprior.vocab import ANATOMY, ImageSpec, ImagesConfig, get_pretext, pretexts

MASK_SOURCES: tuple[str, ...] = ("segmenter", "ground_truth")


@dataclass(frozen=True)
class MasksConfig:
    """Where the heart masks of segmented images come from: `segmenter` (weights `model`, None = the
    shipped model) or `ground_truth` (the cohort's expert masks: an oracle setting)."""

    source: str = "segmenter"
    # a weights file (its training patients known where a set index lists it), or a segmenter-set folder
    # (`segment index-folds`); None: the shipped set
    model: str | None = None
    # Refuse to segment a patient with a model trained on it (no out-of-sample mask): the study's numbers
    # would rest on masks a user cannot have. False runs anyway, and every table says "IN-SAMPLE".
    require_out_of_sample: bool = True
    # The engine that runs the segmenter (torch | onnx | auto, `cmrprior.segmentation.inference`).
    inference: SegInference = field(default_factory=SegInference)

    def __post_init__(self) -> None:
        if self.source not in MASK_SOURCES:
            raise ConfigError(f"masks.source must be one of {list(MASK_SOURCES)}, got {self.source!r}")


# PretrainConfig fields that the study sets itself for every pre-training run.
STUDY_SET_PRETRAIN_FIELDS = ("backbone", "image_size", "batch_size", "seed", "progress")


@dataclass(frozen=True)
class PretrainGrid:
    """SimCLR in the study: `batch_sizes` is the grid chosen from by downstream CV on the training part;
    `simclr` every other pre-training setting (YAML: its fields sit beside `batch_sizes`)."""

    batch_sizes: tuple[int, ...] = (64,)
    simclr: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 2:
            raise ConfigError(f"pretrain.batch_sizes must be a non-empty list of sizes >= 2, got {self.batch_sizes}")

    def for_run(self, *, backbone: str, batch_size: int, seed: int, image_size: int) -> PretrainConfig:
        return dataclasses.replace(self.simclr, backbone=backbone, batch_size=batch_size, seed=seed,
                                   image_size=image_size, progress=False)

    def to_dict(self) -> dict:
        simclr = {k: v for k, v in _plain(self.simclr).items() if k not in STUDY_SET_PRETRAIN_FIELDS}
        return {"batch_sizes": list(self.batch_sizes), **simclr}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "PretrainGrid":
        data = dict(data)
        owned = sorted(set(data) & set(STUDY_SET_PRETRAIN_FIELDS))
        if owned:
            raise ConfigError(f"{where}: {owned} are set by the study for each pre-training run; remove them")
        grid = {"batch_sizes": data.pop("batch_sizes")} if "batch_sizes" in data else {}
        grid = _build_fields(cls, grid, where, skip=("simclr",))
        return cls(**grid, simclr=_build(PretrainConfig, data, where))


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    # The primary analysis, fixed before any result: "anatomy" (the Anatomy model) or one cell of the grid,
    # "backbone/init/images". The summary, the tables' notes and the recommended bundle report it first; None:
    # no primary analysis (the summary says so, and every best-of-grid figure is labelled as chosen afterwards).
    primary: str | None = None
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    masks: MasksConfig = field(default_factory=MasksConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    pretrain: PretrainGrid = field(default_factory=PretrainGrid)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # the Seg-teacher init's pre-training
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    export: ExportConfig = field(default_factory=ExportConfig)  # model bundles under RUN/models/
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where the pieces run; not in digest()
    # trackers (TensorBoard, MLflow) that also receive every training run's epoch records; not in the digest
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # The sections of registered pretexts that bring their own settings (`Pretext.settings`): section name ->
    # settings; each sits at the top level of the YAML form, like the sections above.
    methods: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _method_sections(self.methods))
        if self.primary is None:
            return
        if self.primary == ANATOMY:
            if not self.anatomy.enabled:
                raise ConfigError("primary: 'anatomy' names the Anatomy model, but anatomy.enabled is false")
            return
        c = self.classifier
        cells = [f"{b}/{i}/{k}" for b in c.backbones for i in c.inits for k in c.images]
        if self.primary not in cells:
            raise ConfigError(f"primary: {self.primary!r} is not 'anatomy' nor a cell of the grid "
                              f"(backbone/init/images): {cells[:6]}{' ...' if len(cells) > 6 else ''}")

    def image_spec(self, images: str) -> ImageSpec:
        return self.images.spec(images)

    def pretext_settings(self, pretext: str) -> Any:
        """The settings of a registered pretext: its config section (`pretrain`, `teacher`, `vicreg`, ...)."""
        section = get_pretext(pretext).section
        return self.methods[section] if section in self.methods else getattr(self, section)

    # ---- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self, *, every_section: bool = False) -> dict:
        """The YAML form; a registered method's own section only where it is used or set (`every_section`:
        always, for addressing its settings)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "methods" or (f.name == "tracking" and not self.tracking.sinks and not every_section):
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, PretrainGrid) else _plain(value)
        for p in pretexts():  # a method's section only where the grid uses the method or it was set: configs
            # that do neither read (and hash) as they did before the method was registered
            settings = self.methods.get(p.section)
            if settings is not None and (every_section or settings != p.settings_type()()
                                         or any(i.name in self.classifier.inits for i in p.inits)):
                out[p.section] = _plain(settings)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """What ties a run folder to its config: every setting that changes a result. Left out: `executor` (where
        the pieces run, so a study started locally may be finished on a cluster) and `tracking` (where the epoch
        records are also sent)."""
        settings = {k: v for k, v in self.to_dict().items() if k not in ("executor", "tracking")}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "StudyConfig":
        data = dict(data or {})
        pretrain = data.pop("pretrain", None)
        methods = {}
        for p in pretexts():
            if p.settings is not None and p.section in data:
                if not isinstance(data[p.section], dict):
                    raise ConfigError(f"{source}: {p.section} must be a mapping")
                methods[p.section] = _build(p.settings_type(), data.pop(p.section), f"{source}: {p.section}")
        kwargs = _build_fields(cls, data, source, skip=("pretrain", "methods"))
        kwargs["methods"] = methods
        if pretrain is not None:
            if not isinstance(pretrain, dict):
                raise ConfigError(f"{source}: pretrain must be a mapping")
            kwargs["pretrain"] = PretrainGrid.from_dict(pretrain, f"{source}: pretrain")
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StudyConfig":
        path = Path(path)
        try:
            with open(path, encoding="utf-8") as fh:  # an open file: errors name it
                data = yaml.load(fh, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from exc
        if data is None:  # built-in defaults would run a study neither `cpu` nor `paper` describes
            raise ConfigError(f"{path}: the config file is empty; give settings, or a built-in config "
                              "(--config cpu or --config paper)")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        return cls.from_dict(data, source=str(path))

    def replace(self, **sections: Any) -> "StudyConfig":
        """A copy with nested fields replaced: `cfg.replace(protocol={"n_splits": 2})`."""
        data = self.to_dict(every_section=True)
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return StudyConfig.from_dict(data)


def _method_sections(given: dict[str, Any]) -> dict[str, Any]:
    """The settings of every registered pretext with a section of its own: those `given`, defaults for the
    others. ConfigError for a section no registered pretext owns, or settings of the wrong type."""
    owned = {p.section: p for p in pretexts() if p.settings is not None}
    unknown = sorted(set(given) - set(owned))
    if unknown:
        raise ConfigError(f"config: no registered pretext has the section(s) {unknown}")
    out = {}
    for section, p in owned.items():
        kind = p.settings_type()
        value = given.get(section, None)
        if value is None:
            value = kind()
        if not isinstance(value, kind):
            raise ConfigError(f"config: section {section} must be a {kind.__name__}, got {type(value).__name__}")
        out[section] = value
    return out


def _plain(obj: Any) -> Any:
    """JSON-ready form of a config dataclass (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj))


def _build_fields(cls: type, data: dict, where: str, skip: tuple[str, ...] = ()) -> dict:
    """Constructor arguments of dataclass `cls` from a mapping, each value checked against its field's type
    (`config_values.coerce`); unknown keys and values of the wrong type raise ConfigError naming them."""
    names = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    hints = field_types(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name} must be a mapping")
            kwargs[name] = _build(hint, value, f"{where}: {name}")
        else:
            kwargs[name] = coerce(value, hint, f"{where}: {name}")
    return kwargs


def _build(cls: type, data: dict, where: str) -> Any:
    try:
        return cls(**_build_fields(cls, data, where))
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def builtin_config_path(name: str) -> Path:
    """Path of a config shipped with the package (`paper`, `cpu`)."""
    ref = resources.files("cmrprior") / "configs" / f"{name}.yaml"
    if not ref.is_file():
        raise ConfigError(f"no built-in config {name!r} (looked for {ref})")
    return Path(str(ref))


def load_config(path_or_name: str | Path | None, default: str = "cpu",
                overrides: Mapping[str, Any] | None = None) -> StudyConfig:
    """A YAML file path, or the name of a built-in config (`paper`, `cpu`); None = `default`; then
    `overrides` (dotted keys, see `apply_overrides`)."""
    if path_or_name is None:
        config = StudyConfig.from_yaml(builtin_config_path(default))
    else:
        p = Path(path_or_name)
        if p.suffix in (".yaml", ".yml") or p.exists():
            if not p.exists():
                raise ConfigError(f"{p}: config file not found")
            config = StudyConfig.from_yaml(p)
        else:
            config = StudyConfig.from_yaml(builtin_config_path(str(path_or_name)))
    return apply_overrides(config, overrides) if overrides else config


def apply_overrides(config: StudyConfig, overrides: Mapping[str, Any], *, source: str = "overrides") -> StudyConfig:
    """A copy of `config` with each dotted key of `overrides` set: `{"classifier.input_size": 32}`.

    Keys address the YAML form of the config (`StudyConfig.to_dict`); a value replaces the setting whole
    (a list replaces a list), and a mapping-valued key can be addressed inside (`classifier.modes.none`).
    Raises ConfigError naming the key: unknown section or setting, a key below a plain value, a bad value.
    """
    data = config.to_dict(every_section=True)
    for key, value in overrides.items():
        parts = str(key).split(".")
        if not all(parts):
            raise ConfigError(f"{source}: bad key {key!r} (dotted names, e.g. protocol.n_splits)")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                where = ".".join(parts[:depth + 1])
                raise ConfigError(f"{source}: {key!r}: {where!r} is " + (
                    "not a setting of the config" if part not in node else "a value, not a section"))
            node = child
        node[parts[-1]] = value
    return StudyConfig.from_dict(data, source=source)


class _ValueLoader(StrictLoader):
    """YAML 1.1 reads `1e-3` (no dot) as a string; on a command line it is meant as a number."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_set_options(items: Sequence[str]) -> dict[str, Any]:
    """CLI `--set KEY=VALUE` strings -> overrides; each VALUE is read as YAML (`3`, `1e-3`, `[vgg16]`, `false`).

    Raises ConfigError for an item without `=` or with a value that is not YAML.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set protocol.n_splits=1")
        try:
            out[key.strip()] = yaml.load(text, Loader=_ValueLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
    return out
