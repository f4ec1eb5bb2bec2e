"""The demo on a small real phantom cohort (phantom files, prepare, study, tables): slow."""

import json

import pytest

from .study_doubles import tiny_config


@pytest.mark.slow
def test_demo_on_small_phantom(tmp_path):
    from cmrprior.experiments.demo import run_demo

    cfg = tiny_config(prepare={"size": 64}, classifier={"inits": ["none", "full_sscl"], "images": ["full", "segmented"]},
                      protocol={"n_splits": 1, "cv_folds": 2, "val_fraction": 0.4})
    res = run_demo(tmp_path / "demo", config=cfg, n_patients=20, seed=1)
    assert (tmp_path / "demo" / "phantom" / "done.json").exists()
    assert res.tables["table1"].exists() and res.figure.exists()
    study = json.loads((tmp_path / "demo" / "study" / "study.json").read_text())
    assert study["n_patients"] == 20 and study["classes"] == ["NOR", "DCM", "HCM", "MINF", "RV"]
    # rerun: the phantom and every finished piece are reused
    res2 = run_demo(tmp_path / "demo", config=cfg, n_patients=20, seed=1)
    assert res2.tables["table1"].read_text() == res.tables["table1"].read_text()
