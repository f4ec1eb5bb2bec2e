"""Model bundles: a study's fitted models as self-describing folders (safetensors + JSON, sha256 manifest, model
card) that load without executing code, and `diagnose`, which applies one to new patients.

    load_bundle(path_or_name) -> Bundle        check and load (`"acdc"`: the shipped ACDC bundle)
    Bundle.diagnose(data, out=None) -> DiagnosisTable
"""

from cmrprior.bundle.format import BundleError
from cmrprior.bundle.model import Bundle, load_bundle

__all__ = ["Bundle", "BundleError", "load_bundle"]
