"""Write fitted models as bundles (`cmrprior.bundle.format`): the study's export and the shipped ACDC bundle
both come through `export_anatomy_bundle`; a study's image cells and hybrids through `export_image_bundle`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import cmrprior
from cmrprior.bundle.format import FORMAT_VERSION, write_bundle_files
from cmrprior.bundle.segmenter import segmenter_digest, segmenter_files, shipped_set
from cmrprior.bundle.spec import Acquisition, FeatureRange, Interval, Limits, SegmenterRef, TrainingDomain
from cmrprior.bundle.tabular import to_arrays
from cmrprior.classify.anatomy import AnatomyModel, usable_features
from cmrprior.classify.hybrid import Fusion
from cmrprior.segmentation.folds import load_segmenter_set


def segmenter_for_bundle(model: str | Path | None) -> tuple[SegmenterRef, dict[str, Path]]:
    """(reference, files to copy) for the segmenter that made the training measures: the shipped set by
    reference; a given weights file, or a given set's full model, copied into the bundle."""
    if model is None:
        return SegmenterRef("shipped", segmenter_digest(shipped_set()), "shipped segmenter set"), {}
    path = Path(model)
    weights = load_segmenter_set(path).full.weights if path.is_dir() else path
    files = segmenter_files(weights)
    return SegmenterRef("bundle", segmenter_digest(weights), weights.name), files


def training_domain(values: Sequence[Mapping[str, float | None]], labels: Sequence[str],
                    acquisitions: Sequence[Acquisition], features: Sequence[str]) -> TrainingDomain:
    return TrainingDomain(
        n_patients=len(labels), class_counts=dict(sorted(Counter(labels).items())),
        pixel_spacing_mm=Interval.of([a.pixel_spacing_mm for a in acquisitions]),
        slice_spacing_mm=Interval.of([a.slice_spacing_mm for a in acquisitions]),
        fov_mm=Interval.of([a.fov_mm for a in acquisitions]),
        features={f: FeatureRange.of([v.get(f) for v in values]) for f in features})


def _spec(kind: str, *, name: str, classes: Sequence[str], domain: TrainingDomain, limits: Limits, ref: SegmenterRef,
          estimate: Mapping | None, made_by: str, training_fingerprints: Sequence[str]) -> dict:
    """What every kind's bundle.json holds besides its model."""
    from cmrprior.bundle.model import KINDS

    return {
        "format_version": FORMAT_VERSION, "name": name, "kind": kind, "kind_version": KINDS[kind],
        "classes": list(classes), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cmrprior_version": cmrprior.__version__, "training": domain.to_dict(), "limits": limits.to_dict(),
        "segmenter": ref.to_dict(), "estimate": _clean(dict(estimate or {})), "made_by": made_by,
        "training_fingerprints": sorted(set(training_fingerprints)),
    }


def _anatomy_model(model: AnatomyModel) -> tuple[dict, dict[str, np.ndarray]]:
    spec_est, arrays = to_arrays(model.estimator, "anatomy")
    return {"features": list(model.features), "medians": [float(m) for m in model.medians],
            "estimator": spec_est, "chosen": model.chosen.describe(),
            "importance": {k: _finite(v) for k, v in model.importance.items()},
            "importance_method": model.importance_method}, arrays


def export_anatomy_bundle(target: str | Path, model: AnatomyModel, *, name: str, classes: Sequence[str],
                          train_values: Sequence[Mapping[str, float | None]], train_labels: Sequence[str],
                          acquisitions: Sequence[Acquisition], segmenter: str | Path | None,
                          estimate: Mapping | None = None, made_by: str = "", limits: Limits = Limits(),
                          training_fingerprints: Sequence[str] = ()) -> Path:
    """Write `model` (fitted on the patients whose measures are `train_values`) as a bundle at `target`.

    `training_fingerprints`: the image fingerprints of the training patients (`cmrprior.io.fingerprint`), so that
    `diagnose` can say when a patient it judges was one of them (its call is then in-sample).
    `segmenter`: the `masks.model` the measures came from (None: the shipped set). `estimate`: the study's
    figures for this model (shown in the card). `made_by`: the command that made it, for the card.
    """
    model_spec, arrays = _anatomy_model(model)
    ref, seg_files = segmenter_for_bundle(segmenter)
    domain = training_domain(train_values, train_labels, acquisitions, model.features)
    spec = {**_spec("anatomy", name=name, classes=classes, domain=domain, limits=limits, ref=ref, estimate=estimate,
                    made_by=made_by, training_fingerprints=training_fingerprints), "model": model_spec}
    return write_bundle_files(target, spec=spec, arrays=arrays, card=model_card(spec), segmenter_files=seg_files)


def export_image_bundle(target: str | Path, image: tuple[dict, dict[str, np.ndarray]], *, name: str,
                        classes: Sequence[str], train_values: Sequence[Mapping[str, float | None]],
                        train_labels: Sequence[str], acquisitions: Sequence[Acquisition], segmenter: str | Path | None,
                        anatomy: AnatomyModel | None = None, fusion: Fusion | None = None, fusion_choice: str = "",
                        estimate: Mapping | None = None, made_by: str = "", limits: Limits = Limits(),
                        training_fingerprints: Sequence[str] = ()) -> Path:
    """Write an image cell's model (`image`: `cmrprior.bundle.image.image_spec` of its saved classifier) as an
    `image` bundle at `target`, or, with `anatomy` and `fusion` (the study's hybrid of that cell, fitted on the
    same patients), as a `hybrid` bundle. `train_values`: the training patients' measures (their ranges are
    shown beside a new patient's; a hybrid also refuses a patient far outside them); other arguments as
    `export_anatomy_bundle`.
    """
    image_desc, arrays = image
    ref, seg_files = segmenter_for_bundle(segmenter)
    kind = "image" if fusion is None else "hybrid"
    if kind == "hybrid":
        if anatomy is None:
            raise ValueError("a hybrid bundle needs its anatomy model")
        model_spec, anatomy_arrays = _anatomy_model(anatomy)
        arrays = {**arrays, **anatomy_arrays}
        features = anatomy.features
    else:
        model_spec, features = None, usable_features(train_values) if train_values else ()
    domain = training_domain(train_values, train_labels, acquisitions, features)
    spec = {**_spec(kind, name=name, classes=classes, domain=domain, limits=limits, ref=ref, estimate=estimate,
                    made_by=made_by, training_fingerprints=training_fingerprints), "image": image_desc}
    if kind == "hybrid":
        fusion_spec, fusion_arrays = _fusion(fusion)
        spec.update(model=model_spec, fusion={**fusion_spec, "choice": fusion_choice})
        arrays = {**arrays, **fusion_arrays}
    return write_bundle_files(target, spec=spec, arrays=arrays, card=model_card(spec), segmenter_files=seg_files)


def _fusion(fusion: Fusion) -> tuple[dict, dict[str, np.ndarray]]:
    """A hybrid's fitted fusion as JSON and arrays (`cmrprior.bundle.model.Fusion` reads them)."""
    if fusion.stacker is None:
        return {"kind": "late", "image_weight": float(fusion.image_weight)}, {}
    spec_est, arrays = to_arrays(fusion.stacker, "fusion")
    return {"kind": "stacking", "estimator": {**spec_est, "transform": "identity"}}, arrays


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _clean(obj):
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return _finite(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _pipeline(spec: Mapping) -> str:
    """The "What it does" line of the card: from frames to probabilities, as this kind goes."""
    seg = f"heart masks by the segmenter (sha256 `{spec['segmenter']['sha256'][:16]}...`, {spec['segmenter']['source']})"
    probs = f"probabilities of {', '.join(spec['classes'])}"
    m = spec.get("model")
    anatomy = None if m is None else f"cardiac measures -> `{m['chosen']}` over {len(m['features'])} measures"
    if spec["kind"] == "anatomy":
        return f"Short-axis ED and ES frames -> {seg} -> {anatomy} -> {probs}."
    im = spec["image"]
    prep = im["preparation"]
    pp = prep["prepare"]
    images = ("full images (the whole field of view)" if prep["mode"] == "full" else
              f"segmented images (mode {prep['mode']}, heart mask dilated by {prep['margin_mm']:g} mm)")
    image = (f"the slices with heart at ED and ES, resampled to {pp['pixel_spacing_mm']:g} mm, "
             f"{pp['size']} px crops, intensities windowed to the {pp['low_percentile']:g}-{pp['high_percentile']:g} "
             f"percentiles -> {images} at {prep['input_size']} px -> the study's {im['backbone']} ED/ES model "
             f"(init {im['init']}, {im['mode']}, "
             + ("slice probabilities averaged per patient" if im["pooling"] == "slices" else
                f"slice features pooled per patient ({im['position_bins']} base-to-apex parts)")
             + (", ED-ES motion features" if im["motion"] else "") + ")")
    if spec["kind"] == "image":
        return f"Short-axis ED and ES frames -> {seg} -> {image} -> {probs}; Grad-CAM saliency on the patient page."
    fusion = spec["fusion"]
    how = (f"late fusion, image weight {fusion['image_weight']:g}" if fusion["kind"] == "late"
           else "a stacking logistic regression on the image model's log-probabilities and the measures")
    return (f"Short-axis ED and ES frames -> {seg}; (a) {image}; (b) {anatomy}; (a) and (b) combined by {how} "
            f"(chosen by the study's CV on the training patients: {fusion.get('choice', '')}) -> {probs}.")


def model_card(spec: Mapping) -> str:
    """The bundle's MODEL_CARD.md, from its own description (nothing else)."""
    t, est = spec["training"], spec.get("estimate", {})
    lines = [
        f"# Model card: {spec['name']} ({spec['kind']} bundle, format {spec['format_version']})", "",
        f"Written by cmrprior {spec['cmrprior_version']} on {spec['created']}.", "",
        "## Intended use",
        "Research on cardiac MRI cohorts: a diagnosis suggestion with its measures and reasons, for studies and "
        "method development. **Not for clinical decisions**; not a medical device.", "",
        "## What it does", _pipeline(spec), "",
        "## Training cohort",
        f"{t['n_patients']} patients: " + ", ".join(f"{k} {v}" for k, v in t["class_counts"].items()) + ".",
        f"Pixel spacing {t['pixel_spacing_mm'][0]:.3g}-{t['pixel_spacing_mm'][1]:.3g} mm, slice spacing "
        f"{t['slice_spacing_mm'][0]:.3g}-{t['slice_spacing_mm'][1]:.3g} mm, field of view "
        f"{t['fov_mm'][0]:.0f}-{t['fov_mm'][1]:.0f} mm.", "",
        "## How well it does (estimated before this model was fitted, on patients each estimate's models never saw)",
    ]
    if est:
        for k, v in est.items():
            lines.append(f"- {k}: {v}")
    else:
        lines.append("- no estimate recorded")
    lim = spec["limits"]
    measures = spec["kind"] != "image"
    lines += [
        "", "## Refusals and limitations",
        "- A patient is refused (no diagnosis, a reason instead) when the segmentation fails its plausibility "
        "checks, a phase is missing, the acquisition lies outside the training ranges above by more than a factor "
        f"{lim['acquisition_factor']:g}" + (f", or a measure lies more than {lim['measure_margin']:g} x the training "
                                            "range's width outside that range." if measures else "."),
        "- The " + ("measures depend" if measures else "images depend") + " on the segmenter: the bundle refuses to "
        "run with any other one.",
        "- Trained on one cohort; other scanners, populations and disease mixes may differ. The classes are only "
        "those above: a patient with another disease gets one of them.",
    ]
    if measures:
        lines.append("- Missing height or weight: indexed measures are replaced by the training median (the reason "
                     "column says so).")
    if spec["kind"] != "anatomy":
        lines += [
            "- An image model reads pixel intensities: another scanner, sequence or contrast can change its call "
            "where the measures would not, and nothing in its inputs says so. Its measures' ranges are shown, "
            "not checked" + (" (the hybrid's anatomy part checks them)." if measures else "."),
            "- Its probabilities are the study's held-out model's; they are not calibrated for another cohort's "
            "disease mix.",
            "- The saliency map shows where the model's evidence lies in the images (Grad-CAM), not why; a map "
            "outside the heart is a reason to distrust the call.",
        ]
    lines += ["", f"## How it was made\n{spec.get('made_by') or 'cmrprior study (RUN/models/)'}", ""]
    return "\n".join(lines)
