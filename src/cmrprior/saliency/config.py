"""Settings of the saliency stage (`cmrprior.saliency.run.run_saliency`)."""

from __future__ import annotations

from dataclasses import dataclass

from cmrprior.errors import ConfigError
from cmrprior.vocab import SALIENCY_METHODS


@dataclass(frozen=True)
class SaliencyConfig:
    """Settings of `run_saliency`.

    methods: subset of `vocab.SALIENCY_METHODS`. target: "predicted" (each slice's predicted class), "true"
    (the patient's label) or a class name of the run (e.g. "DCM": every map explains that class).
    margin_mm: heart-mask dilation for the score (mm).
    slices_per_patient: slices scored per test patient (evenly spaced from base to apex; None = all).
    ig_steps: quadrature points of integrated gradients (baseline: zero image); IG costs about
    3 x ig_steps Grad-CAMs, so it runs on the first `ig_splits` splits (and the held-out cells) and on
    `ig_slices_per_patient` slices per patient only. batch_size: slice pairs per forward pass.
    overlay_patients / overlay_splits: how many test patients / splits get overlay images.
    n_boot, level, seed: the score summary's bootstrap (see `cmrprior.saliency.score`).
    """

    methods: tuple[str, ...] = tuple(SALIENCY_METHODS)
    target: str = "predicted"
    margin_mm: float = 5.0
    slices_per_patient: int | None = 3
    ig_steps: int = 8
    ig_splits: int = 1
    ig_slices_per_patient: int = 1
    batch_size: int = 32
    overlay_patients: int = 4
    overlay_splits: int = 1
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        known = tuple(SALIENCY_METHODS)
        bad = [m for m in self.methods if m not in known]
        if bad or not self.methods:
            raise ConfigError(f"saliency methods must be a non-empty subset of {known}, got {self.methods}")
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"saliency target must be 'predicted', 'true' or a class name, got {self.target!r}")
        if (self.margin_mm < 0 or self.ig_steps < 1 or self.batch_size < 1 or self.ig_slices_per_patient < 1
                or (self.slices_per_patient is not None and self.slices_per_patient < 1)):
            raise ConfigError(f"invalid saliency settings: {self}")

    def methods_for(self, split: str, ig_splits: set[str]) -> list[str]:
        """The methods computed on a cell of `split`: integrated gradients only on `ig_splits`."""
        return [m for m in self.methods if m != "integrated_gradients" or split in ig_splits]

    def slices_for(self, method: str) -> int | None:
        """Slices scored per test patient by `method`."""
        return self.ig_slices_per_patient if method == "integrated_gradients" else self.slices_per_patient
