"""`write_mask_flags`: the study's mask plausibility flags file, checked against hand-made masks."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cmrprior.data.prepared import PreparedCohort, PreparedPatient
from cmrprior.errors import DataError
from cmrprior.segmentation.qc import MASK_FLAGS, write_mask_flags


def _cohort(with_masks: bool = True) -> PreparedCohort:
    """Patient a: a plausible heart (LV in a myocardial ring, RV) on 3 slices; patient b: the same at ED, an
    empty ES mask."""
    n, size = 3, 24
    m = np.zeros((size, size), np.uint8)
    m[6:18, 6:18] = 2
    m[9:15, 9:15] = 3
    m[8:16, 18:22] = 1
    ed_mask = np.stack([m] * (2 * n))
    es_mask = ed_mask.copy()
    es_mask[n:] = 0
    patients = tuple(PreparedPatient(patient_id=p, label=lab, height_cm=None, weight_kg=None, slice_thickness_mm=8.0,
                                     n_slices=n, source="test") for p, lab in (("a", "NOR"), ("b", "DCM")))
    img = np.ones((2 * n, size, size), np.float32)
    return PreparedCohort(ed=img, es=img, ed_mask=ed_mask if with_masks else None, es_mask=es_mask if with_masks else None,
                          patient_index=np.repeat([0, 1], n).astype(np.int64),
                          slice_index=np.tile(np.arange(n), 2).astype(np.int64),
                          slice_position=np.tile(np.linspace(0, 1, n), 2).astype(np.float32), patients=patients,
                          classes=("NOR", "DCM"), pixel_spacing_mm=1.5)


def test_flags_file_against_hand_values(tmp_path):
    path = write_mask_flags(_cohort(), tmp_path / "qc" / "mask_flags.csv")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["patient_id", "label", "phase", "n_slices", *MASK_FLAGS, "details"]
    assert [(r["patient_id"], r["label"], r["phase"], r["n_slices"]) for r in rows] == [
        ("a", "NOR", "ED", "3"), ("a", "NOR", "ES", "3"), ("b", "DCM", "ED", "3"), ("b", "DCM", "ES", "3")]
    flagged = {(r["patient_id"], r["phase"]): [f for f in MASK_FLAGS if r[f] == "True"] for r in rows}
    assert flagged == {("a", "ED"): [], ("a", "ES"): [], ("b", "ED"): [],
                       ("b", "ES"): ["empty_heart"]}
    assert rows[3]["details"] == "no heart label on any slice"


def test_flags_need_masks(tmp_path):
    with pytest.raises(DataError, match="need heart masks"):
        write_mask_flags(_cohort(with_masks=False), tmp_path / "mask_flags.csv")
