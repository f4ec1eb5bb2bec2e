"""The registry of pre-training methods ("pretexts"): one entry per method; the grid derives from it.

A pretext pre-trains the encoders of one or more initialisations ("inits") of the diagnosis model: SimCLR
(the study's contrastive pre-training: Full-SSCL and Segmented-SSCL), the Seg-teacher (the encoder learns to
draw the study's heart masks) and VICReg (non-contrastive: Full-VICReg and Segmented-VICReg). Its entry,
a `Pretext`, holds every fact the rest of the toolkit needs about it:

* `inits`: the inits it pre-trains, each with its table label and the images its pre-training sees;
* `learns_from`: `images` (the views of the images alone) or `masks` (the images and their heart masks);
* `default_mode`: how the diagnosis model trains its inits unless `classifier.modes` says otherwise;
* `folder`: the segment of its runs in a study folder, `pretrain/<images>/<backbone>/<folder>_bs<B>`
  (`batch_grid`: one run per size of its section's `batch_sizes`) or `.../<folder>`;
* `section`: the study config's section with its settings; `settings` the dataclass of that section
  (None for the study's own sections, `pretrain` and `teacher`, which `StudyConfig` declares itself);
* `train`: the study's training step of one run (`cmrprior.experiments.pretraining.PretrainJob` ->
  `cmrprior.runs.PretrainRecord`), a callable or its `"module:function"` path (this module is below the
  layers that train, so built-in methods name theirs);
* `comparisons`: the pairs of inits (A, B) whose paired difference A - B the tables test on the same
  training images; `table3_label`: its rows of Table 3 (pre-training images - training images).

From the registry come: the inits and their labels and order (`inits`, `init_label`, `init_rank`), the
classifier's default modes, the study's pre-training runs and their folders, the progress counts, the rows
of Tables 1-3 and the paired comparisons, the report's summary and Figure 1's colours.

Adding a method: one module with its training step (and its settings dataclass when it has its own
section), and one `register_pretext(Pretext(...))` (built-in methods: `BUILTIN` at the end of this file).
A user's method registers from its own code before the config is loaded; `registered(...)` does it for a
`with` block (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from cmrprior.errors import ConfigError

# The images a model is trained on (Nakashima et al., "Images for training"); pre-training uses the same words.
IMAGES: tuple[str, ...] = ("full", "segmented")
TRAINING_MODES: tuple[str, ...] = ("linear", "finetune")  # how the diagnosis model trains an init's encoders
LEARNS_FROM: tuple[str, ...] = ("images", "masks")


@dataclass(frozen=True)
class Init:
    """One initialisation of the grid: its config name, its label in tables, the images its pre-training runs
    on (`None`: no pre-training) and the pretext that pre-trains it (`None`: none; set by `Pretext`)."""

    name: str
    label: str
    pretrain_images: str | None
    pretext: str | None = None


# The inits without pre-training, first in every table; then those of the registered pretexts, in order.
BASE_INITS: tuple[Init, ...] = (Init("none", "None", None), Init("imagenet", "ImageNet", None))


@dataclass(frozen=True)
class Pretext:
    """One pre-training method (see the module doc for each field). Raises ConfigError on an invalid entry."""

    name: str
    label: str
    inits: tuple[Init, ...]
    learns_from: str
    default_mode: str
    folder: str
    section: str
    train: Callable[..., Any] | str
    settings: type | str | None = None
    batch_grid: bool = False
    comparisons: tuple[tuple[str, str], ...] = ()
    table3_label: str = "{label} {pre}-{train}"
    legacy_folder: str | None = None  # an older name of its run folders, still read (`RunFolder.pretrain_dir`)

    def __post_init__(self) -> None:
        where = f"pretext {self.name!r}"
        if not self.name.isidentifier() or not self.folder.isidentifier() or not self.section.isidentifier():
            raise ConfigError(f"{where}: name, folder and section must be identifiers "
                              f"({self.name!r}, {self.folder!r}, {self.section!r})")
        if self.learns_from not in LEARNS_FROM:
            raise ConfigError(f"{where}: learns_from must be one of {list(LEARNS_FROM)}, got {self.learns_from!r}")
        if self.default_mode not in TRAINING_MODES:
            raise ConfigError(f"{where}: default_mode must be one of {list(TRAINING_MODES)}, got {self.default_mode!r}")
        if not self.inits:
            raise ConfigError(f"{where}: it pre-trains no init")
        bad = [i.name for i in self.inits if i.pretrain_images not in IMAGES]
        if bad:
            raise ConfigError(f"{where}: inits {bad} need pre-training images, one of {list(IMAGES)}")
        if len({i.pretrain_images for i in self.inits}) != len(self.inits):
            raise ConfigError(f"{where}: one init per kind of pre-training images")
        own = {i.name for i in self.inits}
        if any(a not in own for a, _ in self.comparisons):
            raise ConfigError(f"{where}: each comparison (A, B) must have one of its own inits as A")
        object.__setattr__(self, "inits", tuple(replace(i, pretext=self.name) for i in self.inits))

    def init_on(self, images: str) -> Init | None:
        """Its init pre-trained on `images`, None when it has none."""
        return next((i for i in self.inits if i.pretrain_images == images), None)

    def table3_rows(self) -> tuple[tuple[str, str, str], ...]:
        """(label, init, training images) of its Table 3 rows: every pre-training images x training images,
        for a method pre-trained on more than one kind of images (else none: Table 1 and 2 say it all)."""
        if len(self.inits) < 2:
            return ()
        return tuple((self.table3_label.format(label=self.label, pre=i.pretrain_images.capitalize(),
                                               train=t.capitalize()), i.name, t)
                     for i in self.inits for t in IMAGES)

    def train_function(self) -> Callable[..., Any]:
        """`train` as a callable (a `"module:function"` path is imported here)."""
        return _resolve(self.train, f"pretext {self.name!r}: train")

    def settings_type(self) -> type | None:
        return None if self.settings is None else _resolve(self.settings, f"pretext {self.name!r}: settings")


def _resolve(ref: Any, what: str) -> Any:
    if not isinstance(ref, str):
        return ref
    import importlib

    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what}: cannot import {ref!r} ({exc})") from exc


def contrastive_comparisons(full: str, segmented: str) -> tuple[tuple[str, str], ...]:
    """The study's questions of a method with a full and a segmented init, in the tables' order: does each
    beat no pre-training and ImageNet, and does pre-training on segmented images beat full images."""
    return ((full, "none"), (full, "imagenet"), (segmented, "none"), (segmented, "imagenet"), (segmented, full))


_REGISTRY: dict[str, Pretext] = {}


def register_pretext(pretext: Pretext) -> Pretext:
    """Add `pretext` to the registry; ConfigError when its name, an init name, its folder or its section is
    already taken by another method."""
    taken_inits = {i.name: "a base init" for i in BASE_INITS}
    for p in _REGISTRY.values():
        taken_inits.update({i.name: f"pretext {p.name!r}" for i in p.inits})
        for what, mine, theirs in (("name", pretext.name, p.name), ("folder", pretext.folder, p.folder),
                                   ("section", pretext.section, p.section)):
            if mine == theirs:
                raise ConfigError(f"pretext {pretext.name!r}: {what} {mine!r} is already used by pretext {p.name!r}")
    for i in pretext.inits:
        if i.name in taken_inits:
            raise ConfigError(f"pretext {pretext.name!r}: init {i.name!r} is already {taken_inits[i.name]}'s")
    _REGISTRY[pretext.name] = pretext
    return pretext


def unregister_pretext(name: str) -> None:
    """Remove a registered pretext (a test's toy method); ConfigError when none has that name."""
    get_pretext(name)
    del _REGISTRY[name]


@contextmanager
def registered(pretext: Pretext) -> Iterator[Pretext]:
    """`pretext` registered for the `with` block only."""
    register_pretext(pretext)
    try:
        yield pretext
    finally:
        _REGISTRY.pop(pretext.name, None)


def pretexts() -> tuple[Pretext, ...]:
    """The registered pretexts, in registration order (the order of their inits in tables)."""
    return tuple(_REGISTRY.values())


def get_pretext(name: str) -> Pretext:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown pretext {name!r}; registered: {list(_REGISTRY)}")
    return _REGISTRY[name]


def inits() -> tuple[Init, ...]:
    """Every init: the base ones, then each registered pretext's, in registration order."""
    return BASE_INITS + tuple(i for p in _REGISTRY.values() for i in p.inits)


def init_names() -> tuple[str, ...]:
    return tuple(i.name for i in inits())


def get_init(name: str) -> Init:
    """The `Init` called `name`; raises ConfigError for an unknown name."""
    for i in inits():
        if i.name == name:
            return i
    raise ConfigError(f"unknown init {name!r}; expected one of {list(init_names())}")


def init_label(name: str) -> str:
    """Table label of an init (`full_sscl` -> `Full-SSCL`); an unknown name is shown as is."""
    return next((i.label for i in inits() if i.name == name), name)


def init_rank(name: str) -> int:
    """Position of an init in the tables' order (unknown names last)."""
    names = init_names()
    return names.index(name) if name in names else len(names)


# ---- the built-in methods ----------------------------------------------------------------------------------
_STEPS = "cmrprior.experiments.pretraining"
BUILTIN: tuple[Pretext, ...] = (
    Pretext("simclr", "SimCLR", (Init("full_sscl", "Full-SSCL", "full"), Init("segmented_sscl", "Segmented-SSCL", "segmented")),
            learns_from="images", default_mode="linear", folder="simclr", section="pretrain", batch_grid=True,
            train=f"{_STEPS}:simclr_step", comparisons=contrastive_comparisons("full_sscl", "segmented_sscl"),
            table3_label="{pre}-{train}", legacy_folder="bs{batch_size}"),
    # not one of the study's: an encoder that learned to segment the heart on the training part's segmented
    # images (the anatomic prior taught directly, instead of through SimCLR on segmented images)
    Pretext("masks", "Seg-teacher", (Init("seg_teacher", "Seg-teacher", "segmented"),), learns_from="masks",
            default_mode="linear", folder="teacher", section="teacher", train=f"{_STEPS}:teacher_step",
            comparisons=(("seg_teacher", "none"), ("seg_teacher", "segmented_sscl"))),
    # non-contrastive (Bardes et al. 2022): no negatives, so no dependence on the batch's other images
    Pretext("vicreg", "VICReg", (Init("full_vicreg", "Full-VICReg", "full"),
                                 Init("segmented_vicreg", "Segmented-VICReg", "segmented")),
            learns_from="images", default_mode="linear", folder="vicreg", section="vicreg", batch_grid=True,
            train=f"{_STEPS}:vicreg_step", settings="cmrprior.ssl.vicreg:VICRegConfig",
            comparisons=contrastive_comparisons("full_vicreg", "segmented_vicreg")
            + (("full_vicreg", "full_sscl"), ("segmented_vicreg", "segmented_sscl"))),
)
for _p in BUILTIN:
    register_pretext(_p)
