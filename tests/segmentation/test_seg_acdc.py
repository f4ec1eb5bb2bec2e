"""The shipped segmenter on real ACDC patients (skipped without the ACDC folder or the shipped weights).

Both tests are `slow`: run with `pytest -m "acdc and slow" tests/segmentation`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cmrprior.segmentation.predict import SHIPPED_MODEL

ACDC_ROOT = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "../shared/data/acdc/training"))
pytestmark = [
    pytest.mark.acdc,
    pytest.mark.slow,
    pytest.mark.skipif(not ACDC_ROOT.is_dir(), reason="ACDC training folder absent"),
    pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="no shipped segmenter"),
]
PATIENTS = ("patient001", "patient041", "patient081")  # DCM, MINF (ACDC groups of 20), RV


@pytest.fixture(scope="module")
def small_acdc(tmp_path_factory):
    root = tmp_path_factory.mktemp("acdc")
    for p in PATIENTS:
        shutil.copytree(ACDC_ROOT / p, root / p)
    return root


def test_segment_prepared_agrees_with_ground_truth(small_acdc, tmp_path):
    from cmrprior.data.prepare import prepare_cohort
    from cmrprior.io.cohort import open_cohort
    from cmrprior.segmentation.predict import segment_prepared
    from cmrprior.segmentation.qc import evaluate_prepared

    truth = prepare_cohort(open_cohort(small_acdc))
    rows = evaluate_prepared(segment_prepared(truth), truth)
    # a floor that a broken pipeline (flipped geometry, wrong labels, wrong normalisation) cannot pass;
    # the cross-validated figures are in src/cmrprior/weights/MODEL_CARD.md
    assert np.nanmean([r["dice_LV"] for r in rows]) > 0.75
    assert np.nanmean([r["dice_MYO"] for r in rows]) > 0.5
    assert np.nanmean([r["dice_RV"] for r in rows]) > 0.5


def test_predict_command_in_input_geometry(small_acdc, tmp_path):
    from cmrprior.cli import main
    from cmrprior.io.nifti import read_nifti

    assert main(["segment", "predict", "--data", str(small_acdc), "--out", str(tmp_path / "run")]) == 0
    for p in PATIENTS:
        img = read_nifti(next((small_acdc / p).glob(f"{p}_frame01.nii.gz")))
        seg = read_nifti(tmp_path / "run" / p / f"{p}_ED_seg.nii.gz")
        assert seg.shape == img.shape
        np.testing.assert_allclose(seg.affine, img.affine)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "qc.csv")))
    assert np.mean([float(r["dice_LV"]) for r in rows]) > 0.75
