"""The study writes the segmenter's Dice against ground truth into RUN/qc/ for the report."""

import csv

import numpy as np

from cmrprior.data.prepared import PreparedCohort, PreparedPatient
from cmrprior.experiments.cohort_data import write_segmentation_qc


def _cohort(mask: np.ndarray) -> PreparedCohort:
    n = mask.shape[0]
    img = np.zeros(mask.shape, np.float32)
    return PreparedCohort(
        ed=img, es=img, ed_mask=mask, es_mask=mask,
        patient_index=np.zeros(n, np.int64), slice_index=np.arange(n, dtype=np.int64),
        slice_position=np.linspace(0, 1, n).astype(np.float32),
        patients=(PreparedPatient("p1", "NOR", None, None, 8.0, n, "test"),),
        classes=("NOR",), pixel_spacing_mm=1.5,
    )


def test_dice_table_matches_hand_computed_values(tmp_path):
    truth = np.zeros((2, 24, 24), np.uint8)
    truth[:, 4:10, 4:20] = 1   # RV: 6 x 16 per slice
    truth[:, 11:21, 6:18] = 2  # myocardium block
    truth[:, 13:19, 8:16] = 3  # LV cavity: 6 x 8 = 48 per slice
    pred = truth.copy()
    pred[:, 13:19, 12:16] = 2  # half of the LV cavity (6 x 4 = 24 per slice) called myocardium
    md = write_segmentation_qc(_cohort(pred), _cohort(truth), tmp_path / "qc")
    assert md.exists() and "dice_LV" in md.read_text()
    rows = list(csv.DictReader(open(tmp_path / "qc" / "data" / "segmentation_summary.csv")))
    by = {(r["phase"], r["metric"]): float(r["mean"]) for r in rows}
    # LV per slice: |pred| = 24, |truth| = 48, overlap 24 -> 2*24/72
    assert abs(by[("ED", "dice_LV")] - 2 * 24 / 72) < 1e-6
    # MYO: truth 120 - 48 = 72 per slice, pred 72 + 24 = 96, overlap 72 -> 2*72/168
    assert abs(by[("ES", "dice_MYO")] - 2 * 72 / 168) < 1e-6
    assert abs(by[("ED", "dice_RV")] - 1.0) < 1e-6
