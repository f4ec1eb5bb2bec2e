"""Model bundles: a study's fitted models as self-describing folders (safetensors + JSON, sha256 manifest, model
card) that load without executing code, and `diagnose`, which applies one to new patients.

    load_bundle(path_or_name) -> Bundle        check and load (`"acdc"`: the shipped ACDC bundle)
    Bundle.diagnose(data, out=None) -> DiagnosisTable

Names are resolved on first use, so that importing the package (as the CLI does to register its commands)
imports neither torch nor scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {"Bundle": "cmrprior.bundle.model", "load_bundle": "cmrprior.bundle.model",
        "BundleError": "cmrprior.bundle.format"}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'cmrprior.bundle' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
