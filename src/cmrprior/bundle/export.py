"""Write a fitted anatomy model as a bundle (`cmrprior.bundle.format`): the study's export and the shipped
ACDC bundle both come through `export_anatomy_bundle`.
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
from cmrprior.classify.anatomy import AnatomyModel
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
        n_patients=len(values), class_counts=dict(sorted(Counter(labels).items())),
        pixel_spacing_mm=Interval.of([a.pixel_spacing_mm for a in acquisitions]),
        slice_spacing_mm=Interval.of([a.slice_spacing_mm for a in acquisitions]),
        fov_mm=Interval.of([a.fov_mm for a in acquisitions]),
        features={f: FeatureRange.of([v.get(f) for v in values]) for f in features})


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
    spec_est, arrays = to_arrays(model.estimator, "anatomy")
    ref, seg_files = segmenter_for_bundle(segmenter)
    domain = training_domain(train_values, train_labels, acquisitions, model.features)
    spec = {
        "format_version": FORMAT_VERSION, "name": name, "kind": "anatomy", "classes": list(classes),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cmrprior_version": cmrprior.__version__,
        "model": {"features": list(model.features), "medians": [float(m) for m in model.medians],
                  "estimator": spec_est, "chosen": model.chosen.describe(),
                  "importance": {k: _finite(v) for k, v in model.importance.items()},
                  "importance_method": model.importance_method},
        "training": domain.to_dict(), "limits": limits.to_dict(), "segmenter": ref.to_dict(),
        "estimate": _clean(dict(estimate or {})), "made_by": made_by,
        "training_fingerprints": sorted(set(training_fingerprints)),
    }
    return write_bundle_files(target, spec=spec, arrays=arrays, card=model_card(spec), segmenter_files=seg_files)


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


def model_card(spec: Mapping) -> str:
    """The bundle's MODEL_CARD.md, from its own description (nothing else)."""
    t, m, est = spec["training"], spec["model"], spec.get("estimate", {})
    lines = [
        f"# Model card: {spec['name']} ({spec['kind']} bundle, format {spec['format_version']})", "",
        f"Written by cmrprior {spec['cmrprior_version']} on {spec['created']}.", "",
        "## Intended use",
        "Research on cardiac MRI cohorts: a diagnosis suggestion with its measures and reasons, for studies and "
        "method development. **Not for clinical decisions**; not a medical device.", "",
        "## What it does",
        f"Short-axis ED and ES frames -> heart masks by the segmenter (sha256 `{spec['segmenter']['sha256'][:16]}...`, "
        f"{spec['segmenter']['source']}) -> cardiac measures -> `{m['chosen']}` over {len(m['features'])} measures -> "
        f"probabilities of {', '.join(spec['classes'])}.", "",
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
    lines += [
        "", "## Refusals and limitations",
        "- A patient is refused (no diagnosis, a reason instead) when the segmentation fails its plausibility "
        "checks, a phase is missing, the acquisition lies outside the training ranges above by more than a factor "
        f"{lim['acquisition_factor']:g}, or a measure lies more than {lim['measure_margin']:g} x the training range's "
        "width outside that range.",
        "- The measures depend on the segmenter: the bundle refuses to run with any other one.",
        "- Trained on one cohort; other scanners, populations and disease mixes may differ. The classes are only "
        "those above: a patient with another disease gets one of them.",
        "- Missing height or weight: indexed measures are replaced by the training median (the reason column says so).",
        "", f"## How it was made\n{spec.get('made_by') or 'cmrprior study (RUN/models/)'}", "",
    ]
    return "\n".join(lines)
