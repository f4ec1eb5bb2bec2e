"""What a bundle knows besides its weights, as typed records read from and written to `bundle.json`.

- `FeatureRange`: one measure's training distribution (min, max and the 0..100th percentiles), for the
  refusal of a patient far outside it and for the percentile a clinician reads.
- `TrainingDomain`: the training cohort's size, classes and acquisition ranges (pixel spacing, slice
  spacing, field of view), and every measure's range.
- `SegmenterRef`: the segmenter set the bundle's measures came from, by sha256 (the shipped set, or a copy
  inside the bundle).

Refusal rules (`Limits`, stored in the bundle so that the rule travels with the model): a measure is far
outside the training range when it lies more than `measure_margin` times the training range's width below
its minimum or above its maximum; an acquisition value is outside the domain when it lies below
`min / acquisition_factor` or above `max * acquisition_factor`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cmrprior.errors import DataError

PERCENTILES = tuple(range(101))


@dataclass(frozen=True)
class FeatureRange:
    minimum: float
    maximum: float
    percentiles: tuple[float, ...]  # value at each of PERCENTILES

    @classmethod
    def of(cls, values: Sequence[float]) -> FeatureRange:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
        if v.size == 0:
            raise DataError(None, "no finite training value to describe a measure's range")
        return cls(float(v.min()), float(v.max()), tuple(float(x) for x in np.percentile(v, PERCENTILES)))

    def percentile(self, x: float) -> float:
        """Where `x` lies in the training distribution, 0-100: the share of the stored percentiles below it
        (ties count half), so a value below the training minimum is 0 and above the maximum 100."""
        p = np.asarray(self.percentiles)
        return float(100.0 * (np.count_nonzero(p < x) + 0.5 * np.count_nonzero(p == x)) / p.size)

    def far_outside(self, x: float, margin: float) -> bool:
        width = self.maximum - self.minimum
        return bool(x < self.minimum - margin * width or x > self.maximum + margin * width)

    def to_dict(self) -> dict:
        return {"min": self.minimum, "max": self.maximum, "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureRange:
        return cls(float(d["min"]), float(d["max"]), tuple(float(x) for x in d["percentiles"]))


@dataclass(frozen=True)
class Limits:
    measure_margin: float = 0.5
    acquisition_factor: float = 1.5

    def to_dict(self) -> dict:
        return {"measure_margin": self.measure_margin, "acquisition_factor": self.acquisition_factor}


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, x: float, factor: float) -> bool:
        return self.low / factor <= x <= self.high * factor

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        return cls(float(min(values)), float(max(values)))


@dataclass(frozen=True)
class TrainingDomain:
    n_patients: int
    class_counts: dict[str, int]
    pixel_spacing_mm: Interval  # in-plane, the larger of the two
    slice_spacing_mm: Interval
    fov_mm: Interval  # in-plane field of view, the smaller side
    features: dict[str, FeatureRange] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"n_patients": self.n_patients, "class_counts": dict(self.class_counts),
                "pixel_spacing_mm": [self.pixel_spacing_mm.low, self.pixel_spacing_mm.high],
                "slice_spacing_mm": [self.slice_spacing_mm.low, self.slice_spacing_mm.high],
                "fov_mm": [self.fov_mm.low, self.fov_mm.high],
                "features": {k: v.to_dict() for k, v in self.features.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainingDomain:
        return cls(int(d["n_patients"]), {str(k): int(v) for k, v in d["class_counts"].items()},
                   Interval(*d["pixel_spacing_mm"]), Interval(*d["slice_spacing_mm"]), Interval(*d["fov_mm"]),
                   {k: FeatureRange.from_dict(v) for k, v in d["features"].items()})


@dataclass(frozen=True)
class Acquisition:
    """What the domain check reads of a patient's ED image."""

    pixel_spacing_mm: float
    slice_spacing_mm: float
    fov_mm: float

    @classmethod
    def of(cls, shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> Acquisition:
        return cls(float(max(spacing_zyx[1:])), float(spacing_zyx[0]),
                   float(min(shape_zyx[1] * spacing_zyx[1], shape_zyx[2] * spacing_zyx[2])))

    def outside(self, domain: TrainingDomain, limits: Limits) -> list[str]:
        """Reasons this acquisition lies outside what the bundle was trained on (empty: inside)."""
        f = limits.acquisition_factor
        out = []
        for name, value, rng, unit in (("pixel spacing", self.pixel_spacing_mm, domain.pixel_spacing_mm, "mm"),
                                       ("slice spacing", self.slice_spacing_mm, domain.slice_spacing_mm, "mm"),
                                       ("field of view", self.fov_mm, domain.fov_mm, "mm")):
            if not rng.contains(value, f):
                out.append(f"{name} {value:.3g} {unit} outside the training range {rng.low:.3g}-{rng.high:.3g} {unit}"
                           f" (x/÷{f:g})")
        return out


@dataclass(frozen=True)
class SegmenterRef:
    """`source`: "shipped" (the package's segmenter set) or "bundle" (a copy under `segmenter/`)."""

    source: str
    sha256: str
    name: str = ""

    def to_dict(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "name": self.name}

    @classmethod
    def from_dict(cls, d: Mapping) -> SegmenterRef:
        return cls(str(d["source"]), str(d["sha256"]), str(d.get("name", "")))
