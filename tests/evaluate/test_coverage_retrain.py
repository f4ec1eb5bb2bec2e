"""Coverage of the table interval and false-positive rate of the table's paired test when the model is
RETRAINED on every split (bench/coverage_retrain.py, reduced): 100 patients (ACDC size, 5 classes of 20),
the study's 5 stratified 70/30 splits, a logistic regression retrained per split; the truth is the expected
AUC of that training procedure on training parts of the same size (tests/evaluate/test_coverage.py keeps the
scorer fixed, so training variance never enters it)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "coverage_retrain.py"


def _bench():
    spec = importlib.util.spec_from_file_location("coverage_retrain", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["coverage_retrain"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_table_interval_covers_and_paired_test_is_calibrated_with_retraining():
    bench = _bench()
    reps = 300
    res = bench.simulate(20, reps, n_boot=300, truth_cohorts=200, truth_test=1000)
    mc = 2 * math.sqrt(0.95 * 0.05 / reps)  # two Monte-Carlo standard errors
    cov = res["coverage"]
    assert 0.93 - mc <= cov["corrected_t"] <= 0.97 + mc  # the tables' interval
    assert cov["plain_t"] < 0.88  # overlapping splits taken as independent: the simulation sees it
    fpr = res["fpr"]
    assert 0.03 - mc <= fpr["splits_paired_t"] <= 0.07 + mc  # the tables' paired test
