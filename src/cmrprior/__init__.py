"""cmrprior: anatomic priors and self-supervised contrastive learning for cardiac MRI diagnosis.

Implements Nakashima et al., "Interaction of a priori anatomic knowledge with self-supervised
contrastive learning in cardiac MRI", end to end: heart segmentation, SimCLR pre-training on full or
heart-masked images, an ED/ES two-branch diagnosis model, and patient-level evaluation with
confidence intervals.

The Python API (the same functions the CLI calls; names are resolved on first use, so `import cmrprior`
stays fast and imports no torch):

    generate_phantom(out, n_patients, seed, ...) -> Path     synthetic CMR cohort, ACDC layout
    open_cohort(path) -> Cohort                               ACDC-layout folder or manifest CSV (records, not images)
    load_config(path_or_name, overrides=None) -> StudyConfig YAML file or built-in name ("cpu", "paper"), + dotted-key overrides
    StudyConfig                                               the study's config; `StudyConfig.from_dict({...})`
    run_study(data, out, config, *, test_data=None) -> StudyResult   the whole study into run folder `out`
    run_demo(out, *, data=None, config=None, n_patients=60, seed=0) -> StudyResult   phantom + study
    segment(data, out, *, model_path=None) -> list[dict]      heart masks (NIfTI) + QC for every patient of a cohort
    run_saliency(run_dir, config=SaliencyConfig()) -> SaliencyOutputs   saliency of a finished study run
    build_report(run_dir) -> Path                             RUN/report/index.html
    RunFolder(run_dir)                                        paths and typed records of a study run folder
    load_bundle(path_or_name="acdc") -> Bundle                a model bundle; `.diagnose(data, out=None)` -> table

Progress is reported through `logging` (logger "cmrprior"): in a notebook, `logging.basicConfig(level=logging.INFO)`
shows the "cells: k/N done, ~ETA left" lines. See README.md for an example.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); imported on first access (PEP 562)
_API: dict[str, tuple[str, str]] = {
    "run_study": ("cmrprior.experiments.study", "run_study"),
    "StudyResult": ("cmrprior.experiments.study", "StudyResult"),
    "load_config": ("cmrprior.experiments.config", "load_config"),
    "StudyConfig": ("cmrprior.experiments.config", "StudyConfig"),
    "run_demo": ("cmrprior.experiments.demo", "run_demo"),
    "generate_phantom": ("cmrprior.data.phantom", "generate_phantom"),
    "open_cohort": ("cmrprior.io.cohort", "open_cohort"),
    "segment": ("cmrprior.segmentation.cohort_predict", "predict_cohort"),
    "run_saliency": ("cmrprior.saliency.run", "run_saliency"),
    "SaliencyConfig": ("cmrprior.saliency.config", "SaliencyConfig"),
    "build_report": ("cmrprior.report", "build_report"),
    "RunFolder": ("cmrprior.runs", "RunFolder"),
    "load_bundle": ("cmrprior.bundle.model", "load_bundle"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'cmrprior' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
