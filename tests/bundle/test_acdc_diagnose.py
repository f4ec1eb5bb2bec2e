"""The shipped bundle on real scanner data: ACDC patients (images only) are judged, not refused, and a patient
the bundle was trained on is segmented by the fold model that never saw it."""

import os
from pathlib import Path

import pytest

from cmrprior.bundle import load_bundle

from experiments.cohort_copies import acdc_copy

ACDC_ROOT = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "../shared/data/acdc/training"))


@pytest.mark.acdc
@pytest.mark.skipif(not ACDC_ROOT.is_dir(), reason="ACDC training folder not found")
def test_shipped_bundle_judges_acdc_patients(tmp_path, one_torch_thread):
    data = acdc_copy(ACDC_ROOT, tmp_path / "blind", only=("patient001", "patient041"))  # DCM, HCM; no _gt files
    table = load_bundle("acdc").diagnose(data, tmp_path / "out", pages=False)
    assert [p.status for p in table.patients] == ["ok", "ok"], [p.reason for p in table.patients]
    assert all(p.segmenter.startswith("fold_") for p in table.patients)  # out of sample for its segmentation
    assert {p.predicted_label for p in table.patients} <= set(load_bundle("acdc").classes)
    # ACDC's training patients are the bundle's own: every call says it is in-sample
    assert all(any(w.startswith("IN-SAMPLE") for w in p.warnings) for p in table.patients)
