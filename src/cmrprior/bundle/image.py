"""The image model of a bundle (kinds `image` and `hybrid`): one cell of the study, its ED/ES diagnosis model
(encoders and output layer, as safetensors), and how a new patient's images are made for it.

A new patient goes the way the study's held-out patients went, through the same functions:

1. the heart located by the bundle's segmenter (`cmrprior.bundle.diagnose`, as `locate_cohort` does);
2. the ED/ES pair prepared by `cmrprior.data.prepare.prepare_cohort` with the study's `PrepareConfig`
   (spacing, size, intensity window, slice choice) and that location;
3. slice pairs made by `cmrprior.classify.inputs.build_slice_set` with the cell's `ImageSpec` (full or
   segmented images, segmented mode, margin) at its input size, positions from base to apex included;
4. scored by `cmrprior.classify.scoring.score_patients` as the cell scored its test patients (linear or
   fine-tuned, slice mean or patient pooling, motion features: all in the rebuilt model).

The output layer of a linear cell holds the feature standardisation folded into it
(`cmrprior.classify.train.fold_standardization`) and patient pooling has no parameters, so the state dict is
the whole model. Saliency on the patient page: Grad-CAM (`cmrprior.saliency`) of the call on a few slices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cmrprior.classify.data import SliceSet
from cmrprior.classify.inputs import build_slice_set
from cmrprior.classify.model import DiagnosisModel, PooledDiagnosisModel, classifier_from_state
from cmrprior.classify.scoring import score_patients
from cmrprior.data.prepare import prepare_cohort
from cmrprior.data.prepare_config import PrepareConfig
from cmrprior.data.prepared import HeartLocation, PreparedCohort
from cmrprior.bundle.format import BundleError
from cmrprior.errors import ConfigError
from cmrprior.io.records import Cohort
from cmrprior.vocab import ImageSpec

PREFIX = "image."  # the image model's arrays in weights.safetensors
SALIENCY_SLICES = 3
SALIENCY_MARGIN_MM = 5.0


@dataclass(frozen=True)
class Preparation:
    """How the study made the images this model was trained and scored on."""

    prepare: PrepareConfig
    spec: ImageSpec
    input_size: int

    def to_dict(self) -> dict:
        return {"prepare": asdict(self.prepare), "images": self.spec.images, "mode": self.spec.mode,
                "margin_mm": self.spec.margin_mm, "input_size": self.input_size}

    @classmethod
    def from_dict(cls, d: Mapping) -> Preparation:
        return cls(PrepareConfig(**d["prepare"]), ImageSpec(d["images"], d["mode"], float(d["margin_mm"])),
                   int(d["input_size"]))


@dataclass(frozen=True, eq=False)
class ImageModel:
    """A cell's trained diagnosis model and its preparation. `mode`: "linear" | "finetune" (how the cell
    computed its slice probabilities); `batch_size`: slice pairs per forward pass (the cell's)."""

    backbone: str
    init: str
    mode: str
    preparation: Preparation
    batch_size: int
    net: DiagnosisModel

    @property
    def cell(self) -> str:
        return f"{self.backbone}/{self.init}/{self.preparation.spec.images}"

    # ---- a patient's inputs and probabilities ------------------------------------------------------------
    def prepared(self, cohort: Cohort, location: HeartLocation) -> PreparedCohort:
        """The prepared slices of the one patient of `cohort` (images only) with its heart `location`."""
        (rec,) = cohort.patients
        blind = dataclasses.replace(cohort, patients=(dataclasses.replace(rec, ed_mask=None, es_mask=None),))
        return prepare_cohort(blind, self.preparation.prepare, locations={rec.patient_id: location}, progress=False)

    def slices(self, prepared: PreparedCohort) -> SliceSet:
        p = self.preparation
        return build_slice_set(prepared, p.spec, p.input_size, labels=False)

    def predict_proba(self, slices: SliceSet) -> np.ndarray:
        """`(P, K)` probabilities of the patients of `slices`."""
        with torch.no_grad():
            return score_patients(self.net, slices, linear=self.mode == "linear", batch_size=self.batch_size)

    def saliency_png(self, prepared: PreparedCohort, slices: SliceSet, target: int) -> tuple[bytes, float]:
        """(PNG of Grad-CAM of class `target` on up to `SALIENCY_SLICES` slice pairs from base to apex, with the
        dilated heart outline; the mean share of positive saliency inside the heart, NaN when none)."""
        from cmrprior.saliency.cell import panel_title, saliency_maps, select_slices
        from cmrprior.saliency.geometry import heart_masks_for, heart_on_input_grid
        from cmrprior.saliency.overlays import OverlayPanel, grid_png
        from cmrprior.saliency.score import in_heart_share

        rows = select_slices(slices.patient_index, SALIENCY_SLICES)
        net = self.net.one_slice_model() if isinstance(self.net, PooledDiagnosisModel) else self.net
        maps = saliency_maps(net, slices.ed[rows], slices.es[rows], np.full(rows.size, target, np.int64),
                             method="gradcam", batch_size=8, ig_steps=1)
        spec = self.preparation.spec
        ed_m, es_m, spacing = heart_masks_for(prepared, rows, spec.mode)
        kw = dict(margin_mm=SALIENCY_MARGIN_MM, pixel_spacing_mm=spacing, image_mode=spec.mode,
                  image_margin_mm=spec.margin_mm, input_size=self.preparation.input_size,
                  groups=prepared.patient_index[rows])
        heart_ed, heart_es = heart_on_input_grid(ed_m, **kw), heart_on_input_grid(es_m, **kw)
        share_ed, share_es = in_heart_share(maps.ed, heart_ed), in_heart_share(maps.es, heart_es)
        panels = [[OverlayPanel(slices.ed[r], maps.ed[i], heart_ed[i], panel_title("ED", share_ed[i])),
                   OverlayPanel(slices.es[r], maps.es[i], heart_es[i], panel_title("ES", share_es[i]))]
                  for i, r in enumerate(rows)]
        both = np.concatenate([share_ed, share_es])
        share = float(np.nanmean(both)) if np.isfinite(both).any() else float("nan")
        return grid_png(panels, [f"slice {int(prepared.slice_index[r])}" for r in rows]), share

    # ---- bundle files -----------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, d: Mapping, arrays: Mapping[str, np.ndarray], n_classes: int, where: Path) -> ImageModel:
        """The model `image_spec` described, with its weights from `arrays`; BundleError naming `where` (the
        weights file) when they do not fit its architecture."""
        state = {k[len(PREFIX):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(PREFIX)}
        if not state:
            raise BundleError(where, "the bundle's weights hold no image model")
        try:
            net = classifier_from_state(d["model_args"], state, n_classes=n_classes, pooling=d["pooling"],
                                        motion=bool(d["motion"]), position_bins=int(d["position_bins"]))
        except (RuntimeError, ConfigError, KeyError, TypeError) as exc:
            raise BundleError(where, f"the image model's weights do not fit its description ({type(exc).__name__}: "
                                   f"{str(exc)[:300]})") from None
        return cls(str(d["backbone"]), str(d["init"]), str(d["mode"]), Preparation.from_dict(d["preparation"]),
                   int(d["batch_size"]), net)


def image_spec(payload: Mapping, *, init: str, mode: str, preparation: Preparation, batch_size: int
               ) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON description, named arrays) of a saved classifier (`cmrprior.classify.model.save_classifier`'s
    payload) for a bundle; `mode`: how its cell scored ("linear" | "finetune")."""
    if mode not in ("linear", "finetune"):
        raise ConfigError(f"mode must be linear or finetune, got {mode!r}")
    spec = {"backbone": payload["backbone"], "init": init, "mode": mode, "model_args": payload["model_args"],
            "pooling": payload.get("pooling", DiagnosisModel.pooling), "motion": bool(payload.get("motion", False)),
            "position_bins": int(payload.get("position_bins", 0)), "batch_size": int(batch_size),
            "preparation": preparation.to_dict(),
            "hyperparameters": dict(payload.get("meta", {}).get("hyperparameters", {}))}
    arrays = {PREFIX + k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in payload["state_dict"].items()}
    return spec, arrays
