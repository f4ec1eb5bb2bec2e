"""A loaded model bundle: `load_bundle(path_or_name)` -> `Bundle`, whose `diagnose(data)` applies it.

Kinds (`KINDS`: each with the version of its description this cmrprior reads; an unknown kind or version is
refused):
- `anatomy`: the study's "Anatomy" model: cardiac measures from the bundle's segmenter -> a tabular classifier;
- `image`: one image cell of the study (`cmrprior.bundle.image.ImageModel`): ED/ES slice pairs made as the
  study made them -> the cell's diagnosis model;
- `hybrid`: an image cell and the Anatomy model, fused as the study's hybrid chose (late fusion weight, or a
  stacking model on the image probabilities and the measures, `cmrprior.classify.hybrid`).
A name instead of a path is a bundle shipped with the package (`SHIPPED`: `acdc`).

The segmenter the bundle's inputs depend on is checked before anything is segmented: its sha256 must be
the one the bundle was trained with (`SegmenterRef`), so that a newer package with another segmenter cannot
silently change a bundle's inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cmrprior.bundle.config import DEFAULT_BUNDLE, SHIPPED
from cmrprior.bundle.format import (
    SEGMENTER_DIR,
    WEIGHTS,
    BundleError,
    bundle_sha256,
    read_bundle_files,
)
from cmrprior.bundle.spec import Limits, SegmenterRef, TrainingDomain
from cmrprior.bundle.tabular import TabularPredictor
from cmrprior.classify.anatomy import feature_matrix, signed_log

if TYPE_CHECKING:  # torch is imported only when an image bundle is loaded
    from cmrprior.bundle.image import ImageModel

# bundle kind -> the version of its description (`kind_version` in bundle.json and the manifest) this cmrprior reads
KINDS = {"anatomy": 1, "image": 1, "hybrid": 1}
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights" / "bundles"


@dataclass(frozen=True)
class Driver:
    """How much one measure pushed the call: the predicted class's probability minus its probability with
    that measure set to the training median (positive: the measure argues for the call)."""

    feature: str
    value: float
    percentile: float
    effect: float


@dataclass(frozen=True, eq=False)
class Bundle:
    root: Path
    name: str
    kind: str
    classes: tuple[str, ...]
    features: tuple[str, ...]  # the measures the model reads (none for an image bundle)
    medians: np.ndarray
    predictor: TabularPredictor | None  # the anatomy model (kinds anatomy and hybrid)
    domain: TrainingDomain
    limits: Limits
    segmenter: SegmenterRef
    estimate: dict  # the study's estimate of this model (free-form JSON, shown in the card and pages)
    spec: dict
    card: str
    sha256: str
    image: ImageModel | None = None  # kinds image and hybrid
    fusion: Fusion | None = None  # kind hybrid

    # ---- the segmenter -------------------------------------------------------------------------------
    def segmenter_model(self) -> Path:
        """The segmenter set folder or weights file the bundle expects, after checking its sha256.

        Raises:
            BundleError: the installed or bundled segmenter differs from the one the bundle was trained with.
        """
        from cmrprior.bundle.segmenter import segmenter_digest, shipped_set

        if self.segmenter.source == "shipped":
            path = shipped_set()
        else:
            path = self.root / SEGMENTER_DIR / self.segmenter.name
        digest = segmenter_digest(path)
        if digest != self.segmenter.sha256:
            raise BundleError(path, f"segmenter sha256 {digest[:12]}... differs from the {self.segmenter.sha256[:12]}... "
                                    f"that bundle {self.name} was trained with; its measures would not be the "
                                    "model's inputs (use the cmrprior version that wrote the bundle)")
        return path

    # ---- the model -----------------------------------------------------------------------------------
    def matrix(self, values: Sequence[Mapping[str, float | None]]) -> np.ndarray:
        """`(P, F)` features, a missing value replaced by the training median (as the study does)."""
        x = feature_matrix(values, self.features)
        return np.where(np.isnan(x), self.medians[None, :], x)

    def _proba(self, x: np.ndarray, image: np.ndarray | None) -> np.ndarray:
        """`(P, n_classes)` of a measures matrix `(P, F)` and, for a hybrid, the image model's `(n_classes,)`."""
        anatomy = self.predictor.predict_proba(x)
        if self.fusion is None:
            return anatomy
        return self.fusion.predict_proba(np.repeat(np.asarray(image, np.float64)[None], len(x), axis=0), anatomy, x)

    def predict_proba(self, values: Sequence[Mapping[str, float | None]] | None = None,
                      image: np.ndarray | None = None) -> np.ndarray:
        """`(P, n_classes)` class probabilities: of patients' measures (`AnatomyMeasures.as_dict()` rows) for an
        anatomy bundle; of the image model's probabilities `(P, n_classes)` for an image bundle; of both (one
        patient) for a hybrid."""
        if self.predictor is None:
            return np.atleast_2d(np.asarray(image, np.float64))
        if self.fusion is not None:
            (one,) = np.asarray(image, np.float64).reshape(1, -1)
            return self._proba(self.matrix(values), one)
        return self._proba(self.matrix(values), None)

    def drivers(self, values: Mapping[str, float | None], k: int = 3, image: np.ndarray | None = None) -> list[Driver]:
        """The `k` measures that pushed this patient's call most (`Driver`), strongest first; none for an image
        bundle. A hybrid's are taken with the image model's probabilities `image` fixed."""
        if self.predictor is None:
            return []
        x = self.matrix([values])
        p = self._proba(x, image)[0]
        c = int(p.argmax())
        copies = np.repeat(x, len(self.features), axis=0)
        copies[np.arange(len(self.features)), np.arange(len(self.features))] = self.medians
        effect = p[c] - self._proba(copies, image)[:, c]
        order = np.argsort(-effect, kind="stable")[:k]
        return [Driver(self.features[i], float(x[0, i]), self.domain.features[self.features[i]].percentile(x[0, i]),
                       float(effect[i])) for i in order]

    def outside_measures(self, values: Mapping[str, float | None]) -> list[str]:
        """The measures of a patient far outside the training range (`Limits.measure_margin`)."""
        out = []
        for f in self.features:
            v = values.get(f)
            rng = self.domain.features.get(f)
            if rng is not None and v is not None and np.isfinite(v) and rng.far_outside(float(v), self.limits.measure_margin):
                out.append(f"{f} = {float(v):.4g} far outside the training range {rng.minimum:.4g}-{rng.maximum:.4g}")
        return out

    def missing_measures(self, values: Mapping[str, float | None]) -> list[str]:
        return [f for f in self.features if values.get(f) is None or not np.isfinite(values[f])]

    def trained_on(self, fingerprints: Sequence[str]) -> bool:
        """Whether an image with one of these fingerprints was in the bundle's training cohort."""
        return bool(set(fingerprints) & set(self.spec.get("training_fingerprints", ())))

    def diagnose(self, data: str | Path, out: str | Path | None = None, **kwargs):
        """Apply the bundle to the cohort at `data` (`cmrprior.bundle.diagnose.diagnose`); returns a
        `DiagnosisTable` (`.rows`, `.to_frame()` when pandas is installed)."""
        from cmrprior.bundle.diagnose import diagnose

        return diagnose(self, data, out, **kwargs)


def resolve(path_or_name: str | Path) -> Path:
    """A bundle folder from a path or a shipped name; BundleError naming the known names otherwise."""
    p = Path(path_or_name)
    if p.exists():
        return p
    if str(path_or_name) in SHIPPED:
        return SHIPPED_DIR / str(path_or_name)
    raise BundleError(p, f"no such bundle folder, and not a shipped bundle name (shipped: {', '.join(SHIPPED)})")


def load_bundle(path_or_name: str | Path = DEFAULT_BUNDLE) -> Bundle:
    """Load and check a bundle (`cmrprior.bundle.format`: manifest, sha256 of every file, format version).

    Raises:
        BundleError: see `read_bundle_files`; an unknown kind or kind version; a bundle inconsistent with itself.
    """
    root = resolve(path_or_name)
    spec, arrays, card, manifest = read_bundle_files(root)
    where = root / "bundle.json"
    kind = spec.get("kind")
    if kind not in KINDS:
        raise BundleError(where, f"unknown bundle kind {kind!r} (this cmrprior reads {list(KINDS)})")
    # anatomy bundles written before kinds had versions carry none: they are version 1
    version = spec.get("kind_version", 1)
    if version != KINDS[kind]:
        raise BundleError(where, f"{kind} bundle description version {version!r} is not known to this cmrprior "
                                 f"(it reads version {KINDS[kind]}); use the cmrprior that wrote it")
    if "kind" in manifest and (manifest.get("kind"), manifest.get("kind_version")) != (kind, version):
        raise BundleError(root / "manifest.json", f"kind {manifest.get('kind')!r} version "
                                                  f"{manifest.get('kind_version')!r} differs from bundle.json's")
    image = fusion = predictor = None
    features, medians = (), np.zeros(0)
    try:
        classes = tuple(spec["classes"])
        if kind in ("anatomy", "hybrid"):
            model = spec["model"]
            features = tuple(model["features"])
            medians = np.asarray(model["medians"], dtype=np.float64)
            predictor = TabularPredictor.from_arrays(model["estimator"], arrays, len(classes), where=str(root / WEIGHTS))
        if kind in ("image", "hybrid"):
            from cmrprior.bundle.image import ImageModel

            image = ImageModel.from_spec(spec["image"], arrays, len(classes), root / WEIGHTS)
        if kind == "hybrid":
            fusion = Fusion.from_spec(spec["fusion"], arrays, len(classes), root / WEIGHTS)
        domain = TrainingDomain.from_dict(spec["training"])
        limits = Limits(**spec.get("limits", {}))
        segmenter = SegmenterRef.from_dict(spec["segmenter"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(where, f"incomplete or malformed bundle description ({type(exc).__name__}: {exc})") from None
    if len(medians) != len(features) or set(features) - set(domain.features):
        raise BundleError(where, "features, medians and training ranges do not agree")
    return Bundle(root, str(spec.get("name", root.name)), kind, classes, features, medians, predictor, domain, limits,
                  segmenter, dict(spec.get("estimate", {})), spec, card, bundle_sha256(root), image, fusion)


@dataclass(frozen=True, eq=False)
class Fusion:
    """A hybrid bundle's fusion (`cmrprior.classify.hybrid.Fusion`, from arrays): `w * p_image + (1 - w) *
    p_anatomy`, or a stacking model (`TabularPredictor`, inputs as they are) on `stack_features(p_image,
    signed_log(measures))`."""

    image_weight: float | None
    stacker: TabularPredictor | None

    def predict_proba(self, image: np.ndarray, anatomy: np.ndarray, x: np.ndarray) -> np.ndarray:
        """`(P, K)` of the image and anatomy probabilities `(P, K)` and the measures matrix `(P, F)`."""
        if self.stacker is None:
            return self.image_weight * image + (1 - self.image_weight) * anatomy
        from cmrprior.classify.hybrid import stack_features

        return self.stacker.predict_proba(stack_features(image, signed_log(x)))

    @classmethod
    def from_spec(cls, d: Mapping, arrays: Mapping[str, np.ndarray], n_classes: int, where: Path) -> Fusion:
        if d["kind"] == "late":
            return cls(float(d["image_weight"]), None)
        if d["kind"] == "stacking":
            return cls(None, TabularPredictor.from_arrays(d["estimator"], arrays, n_classes, where=str(where)))
        raise BundleError(where.with_name("bundle.json"), f"unknown fusion {d['kind']!r} (late, stacking)")
