"""Integration: the real ACDC training set (100 patients) through open_cohort + prepare_cohort.

Skipped when the folder is absent (set ACDC_ROOT, else ../shared/data/acdc/training next to the repo).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cmrprior.data.prepare import PrepareConfig, prepare_cohort
from cmrprior.io.cohort import open_cohort
from cmrprior.io.records import ACDC_CLASSES

ACDC_ROOT = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "../shared/data/acdc/training"))

pytestmark = [pytest.mark.acdc, pytest.mark.skipif(not ACDC_ROOT.is_dir(), reason="ACDC training folder absent")]


def test_prepare_reads_all_100_acdc_patients(tmp_path):
    cohort = open_cohort(ACDC_ROOT)
    prepared = prepare_cohort(cohort, PrepareConfig(), tmp_path / "cache")
    assert len(prepared.patients) == 100 and prepared.skipped == ()
    assert Counter(p.label for p in prepared.patients) == {c: 20 for c in ACDC_CLASSES}
    assert prepared.classes == ACDC_CLASSES
    assert prepared.ed.shape[1:] == (128, 128) and prepared.ed.dtype == np.float32
    assert prepared.ed_mask is not None and prepared.es_mask is not None
    assert prepared.ed_mask.shape == prepared.ed.shape and prepared.ed_mask.dtype == np.uint8
    assert set(np.unique(prepared.ed_mask)) == {0, 1, 2, 3}
    # every kept slice shows the heart at ED or ES, and every patient has several slices
    heart = (prepared.ed_mask > 0).any(axis=(1, 2)) | (prepared.es_mask > 0).any(axis=(1, 2))
    assert heart.all()
    assert min(p.n_slices for p in prepared.patients) >= 5
    assert 0.0 <= prepared.ed.min() and prepared.ed.max() <= 1.0
    # the LV cavity at ED is larger than at ES summed over the cohort (systole empties the LV)
    assert (prepared.ed_mask == 3).sum() > 1.3 * (prepared.es_mask == 3).sum()
