"""The study's vocabulary, defined once: initialisations, training images, image modes, saliency methods.

Every module that names an initialisation, a kind of training images or a saliency method imports it from
here, so the order of table rows and the labels in tables, figures and the report cannot drift apart.

Words used across code, configs, folders and tables:

* `init`: how the diagnosis model's encoders start (`inits()`); `pretext`: the method that pre-trains the
  encoders of an init (`cmrprior.vocab.pretexts`, a registry);
* `images`: the images a model is trained on, `full` or `segmented` (Nakashima et al., "Images for
  training"); SimCLR pre-training uses the same word for the images it sees;
* `mode`: how an `images` kind is made from a prepared slice (`ImageSpec.mode`): `full` keeps the slice,
  `mask` zeroes everything outside the dilated heart, `crop` crops a square box around it, `mask+crop` both.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmrprior.errors import ConfigError
from cmrprior.vocab.pretexts import (  # the registry of pre-training methods, and what derives from it
    BASE_INITS, IMAGES, TRAINING_MODES, Init, Pretext, get_init, get_pretext, init_label, init_names, init_rank,
    inits, pretexts, register_pretext, registered, unregister_pretext,
)


DEFAULT_BACKBONE = "vgg16"  # the study's; every default backbone (CLI, configs, pre-training) is this one
STUDY_INITS: tuple[str, ...] = ("none", "imagenet", "full_sscl", "segmented_sscl")  # the study's grid: the default

# mask labels, ACDC convention (0 is background)
RV_LABEL, MYO_LABEL, LV_LABEL = 1, 2, 3

# The "Anatomy" model (a tabular classifier on cardiac measures, not an image model): its row in the tables
# and its key in the run folder (backbone = init = ANATOMY, images = ANATOMY_INPUTS).
ANATOMY = "anatomy"
ANATOMY_LABEL = "Anatomy"
ANATOMY_INPUTS = "measures"
# The hybrid of one image configuration with the measures: the image cell's key with images + HYBRID_SUFFIX.
HYBRID_SUFFIX = "+measures"
HYBRID_LABEL = "Hybrid"


def hybrid_images(images: str) -> str:
    """The `images` of the hybrid of an image configuration trained on `images`."""
    return images + HYBRID_SUFFIX


def hybrid_base(images: str) -> str | None:
    """The training images of a hybrid's image configuration; None when `images` is not a hybrid's."""
    return images[: -len(HYBRID_SUFFIX)] if images.endswith(HYBRID_SUFFIX) else None

SEGMENTED_MODES: tuple[str, ...] = ("mask", "crop", "mask+crop")
IMAGE_MODES: tuple[str, ...] = ("full",) + SEGMENTED_MODES

SALIENCY_METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients"}


def method_label(name: str) -> str:
    return SALIENCY_METHODS.get(name, name)


def method_rank(name: str) -> int:
    names = list(SALIENCY_METHODS)
    return names.index(name) if name in names else len(names)


@dataclass(frozen=True)
class ImageSpec:
    """How the training images called `images` are made from prepared slices.

    `mode` is `full` for full images, else one of SEGMENTED_MODES; `margin_mm` is the heart-mask dilation
    (mm) that the segmented modes use.
    """

    images: str
    mode: str
    margin_mm: float

    def __post_init__(self) -> None:
        if self.images not in IMAGES:
            raise ConfigError(f"images must be one of {list(IMAGES)}, got {self.images!r}")
        allowed = ("full",) if self.images == "full" else SEGMENTED_MODES
        if self.mode not in allowed:
            raise ConfigError(f"{self.images} images: mode must be one of {list(allowed)}, got {self.mode!r}")
        if self.margin_mm < 0:
            raise ConfigError(f"margin_mm must be >= 0, got {self.margin_mm}")

    @classmethod
    def of(cls, images: str, *, segmented_mode: str, margin_mm: float) -> "ImageSpec":
        """The spec of `images` given the study's segmented mode and margin."""
        return cls(images, "full" if images == "full" else segmented_mode, float(margin_mm))


@dataclass(frozen=True)
class ImagesConfig:
    """How segmented images are made: `segmented_mode` (mask | crop | mask+crop), heart dilation `margin_mm`."""

    segmented_mode: str = "mask"
    margin_mm: float = 5.0

    def __post_init__(self) -> None:
        if self.segmented_mode not in SEGMENTED_MODES:
            raise ConfigError(f"images.segmented_mode must be one of {list(SEGMENTED_MODES)}, got {self.segmented_mode!r}")

    def spec(self, images: str) -> "ImageSpec":
        return ImageSpec.of(images, segmented_mode=self.segmented_mode, margin_mm=self.margin_mm)

