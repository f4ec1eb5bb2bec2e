"""The demo on a small real phantom cohort (phantom files, prepare, study, tables): slow."""

import json

import pytest

from .study_doubles import tiny_config


@pytest.mark.slow
def test_demo_on_small_phantom(tmp_path):
    from cmrprior.experiments.demo import answer_lines, run_demo

    cfg = tiny_config(primary="anatomy", prepare={"size": 64},
                      classifier={"inits": ["none", "full_sscl"], "images": ["full", "segmented"]},
                      protocol={"n_splits": 1, "cv_folds": 2, "val_fraction": 0.4})
    res = run_demo(tmp_path / "demo", config=cfg, n_patients=20, seed=1, test_patients=5)
    assert (tmp_path / "demo" / "phantom" / "done.json").exists()
    assert res.tables["table1"].exists() and res.figure.exists() and res.tables["holdout_table1"].exists()
    study = json.loads((tmp_path / "demo" / "study" / "study.json").read_text())
    assert study["n_patients"] == 20 and study["classes"] == ["NOR", "DCM", "HCM", "MINF", "RV"]
    held = sorted(p.name for p in (tmp_path / "demo" / "heldout" / "cohort").glob("patient*"))
    assert held == [f"patient0{i}" for i in range(21, 26)] and study["n_holdout_results"] > 0
    lines = answer_lines(res.run_dir)
    best = max(m["macro_auc"] for m in json.loads(res.tables["table1"].with_name("metrics.json").read_text())
               if m["macro_auc"] is not None)
    assert lines[3].endswith(f": {best:.3f}") and any(line.startswith("  held-out cohort") for line in lines)
    # rerun: the phantom and every finished piece are reused
    res2 = run_demo(tmp_path / "demo", config=cfg, n_patients=20, seed=1, test_patients=5)
    assert res2.tables["table1"].read_text() == res.tables["table1"].read_text()
