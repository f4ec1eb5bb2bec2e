"""The protocol end to end on a tiny synthetic cohort: outputs, leakage, resume, binary tasks, --test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cmrprior.errors import LeakageError
from cmrprior.experiments.study import run_study

from .study_doubles import RecordingPretrain, install_cohort, tiny_cohort, tiny_config


@pytest.fixture()
def fake_pretrain(monkeypatch):
    rec = RecordingPretrain()
    rec.install(monkeypatch)
    return rec


def _results(run):
    return [json.loads(p.read_text()) for p in sorted(run.glob("splits/split_*/cells/*/*/result.json"))]


def test_study_end_to_end_outputs_and_no_leakage(tmp_path, monkeypatch, fake_pretrain):
    cohort = tiny_cohort()
    install_cohort(monkeypatch, {"COHORT": cohort})
    cfg = tiny_config()
    res = run_study("COHORT", tmp_path / "run", cfg, report=False)
    run = tmp_path / "run"
    for name in ("table1", "table2", "table3", "metrics", "comparisons"):
        for ext in ("md", "csv", "json"):
            assert (run / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert res.figure is not None and res.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = _results(run)
    assert len(results) == 2 * 4 * 2  # splits x inits x images
    by_status = {r["init"]: r["status"] for r in results}
    assert by_status["imagenet"] == "unavailable" and "ImageNet" in next(r["reason"] for r in results if r["init"] == "imagenet")
    ok = [r for r in results if r["status"] == "ok"]
    assert len(ok) == 2 * 3 * 2
    table1 = (run / "tables" / "table1.md").read_text()
    assert "n/a: " in table1 and "ImageNet" in table1  # the missing cell says why
    # the separable synthetic task is learned well above chance by every SSCL/none cell
    assert np.mean([r["test"]["metrics"]["macro_auc"] for r in ok]) > 0.75
    # every metric is per patient: one probability row per test patient
    splits = json.loads((run / "splits.json").read_text())
    for r in ok:
        test_ids = set(splits[int(r["split"])]["test"])
        assert set(r["test"]["patient_ids"]) == test_ids and len(r["test"]["probabilities"]) == len(test_ids)
        for stage, ids in r["seen_patient_ids"].items():
            assert not set(ids) & test_ids, stage
    # pre-training saw only training patients' slices: map every image back to its patient
    owner = {}
    for arr in (cohort.ed, cohort.es):
        for n, img in enumerate(arr):
            owner[img.tobytes()] = cohort.patients[cohort.patient_index[n]].patient_id
    seg = {}  # segmented images differ from the full ones: recompute them the study's way
    from cmrprior.experiments.cohort_data import build_slice_sets

    sets = build_slice_sets(cohort, cfg)
    for kind, s in sets.items():
        for arr in (s.ed, s.es):
            for n, img in enumerate(arr):
                seg[img.tobytes()] = s.patient_ids[s.patient_index[n]]
    assert len(fake_pretrain.calls) == 2 * 2  # splits x (full, segmented)
    for call in fake_pretrain.calls:
        split_idx = int(call["out_dir"].parts[-6].split("_")[1])
        seen = {seg[img.tobytes()] for img in np.concatenate([call["train"], call["val"]])}
        assert seen <= set(splits[split_idx]["train"])
        assert not seen & set(splits[split_idx]["test"])
        assert len(seen) == len(splits[split_idx]["train"])  # all training patients, each fully
    study = json.loads((run / "study.json").read_text())
    assert study["masks_source"] == "ground_truth" and study["peak_rss_mb"] > 0
    import torch

    assert study["versions"]["torch_threads"] == torch.get_num_threads()  # results depend on the thread count


def test_resume_skips_finished_pieces(tmp_path, monkeypatch, fake_pretrain):
    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})
    cfg = tiny_config(classifier={"inits": ["none", "full_sscl"], "images": ["full"]})
    run_study("COHORT", tmp_path / "run", cfg, report=False)
    n_pretrain = len(fake_pretrain.calls)
    results = sorted((tmp_path / "run").glob("splits/*/cells/*/*/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    # "kill": one cell lost its result -> only that one is redone
    lost = results[0]
    lost.unlink()
    import cmrprior.experiments.cell as cell

    calls = []
    real = cell._train
    monkeypatch.setattr(cell, "_train", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_study("COHORT", tmp_path / "run", cfg, report=False)
    assert len(fake_pretrain.calls) == n_pretrain  # no pre-training again
    assert len(calls) == 1 and lost.exists()
    for p in results[1:]:
        assert p.stat().st_mtime_ns == stamps[p]


def test_other_config_in_same_run_folder_is_refused(tmp_path, monkeypatch, fake_pretrain):
    from cmrprior.errors import ConfigError

    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})
    cfg = tiny_config(classifier={"inits": ["none"], "images": ["full"]}, protocol={"n_splits": 1})
    run_study("COHORT", tmp_path / "run", cfg, report=False)
    with pytest.raises(ConfigError, match="another config"):
        run_study("COHORT", tmp_path / "run", tiny_config(classifier={"inits": ["none"], "images": ["segmented"]}), report=False)


def test_slice_level_split_is_caught(tmp_path, monkeypatch, fake_pretrain):
    """A split made by slice (the same patient on both sides) must stop the study."""
    import cmrprior.data.splits as splits_mod
    from types import SimpleNamespace

    cohort = tiny_cohort()
    install_cohort(monkeypatch, {"COHORT": cohort})
    ids = cohort.patient_ids

    def by_slice(ids_, labels, n, test_fraction, seed):  # slice-wise split: every patient on both sides
        return [SimpleNamespace(train=tuple(ids), test=tuple(ids[::3]), seed=seed) for _ in range(n)]

    monkeypatch.setattr(splits_mod, "repeated_splits", by_slice)
    with pytest.raises(LeakageError):
        run_study("COHORT", tmp_path / "run", tiny_config(classifier={"inits": ["full_sscl"], "images": ["full"]}), report=False)


def test_binary_task_and_holdout_cohort(tmp_path, monkeypatch, fake_pretrain):
    train = tiny_cohort(n_patients=14, classes=("ICM", "NICM"))
    hold = tiny_cohort(n_patients=8, classes=("ICM", "NICM"), seed=9, prefix="t")
    install_cohort(monkeypatch, {"TRAIN": train, "HOLD": hold})
    cfg = tiny_config(classifier={"inits": ["none", "segmented_sscl"], "images": ["segmented"]}, protocol={"n_splits": 2})
    res = run_study("TRAIN", tmp_path / "run", cfg, test_data="HOLD", report=False)
    run = tmp_path / "run"
    assert (run / "tables" / "holdout_table2.md").exists() and "holdout_table2" in res.tables
    hold_results = [json.loads(p.read_text()) for p in run.glob("holdout/cells/*/*/result.json")]
    assert {r["init"] for r in hold_results} == {"none", "segmented_sscl"}
    for r in hold_results:
        assert r["status"] == "ok"
        assert set(r["test"]["patient_ids"]) == set(hold.patient_ids)
        assert set(r["seen_patient_ids"]["train"]) == set(train.patient_ids)
        from sklearn.metrics import roc_auc_score

        p = np.asarray(r["test"]["probabilities"])
        assert r["test"]["metrics"]["macro_auc"] == pytest.approx(roc_auc_score(r["test"]["labels"], p[:, 1]))
    # the holdout pre-training used the whole training cohort and no holdout patient
    last = [c for c in fake_pretrain.calls if c["out_dir"].relative_to(run).parts[0] == "holdout"]
    assert len(last) == 1


def test_with_real_simclr_pretraining(tmp_path, monkeypatch):
    """The study's adapter to `cmrprior.ssl.pretrain` (real SimCLR, tiny backbone, 1 epoch)."""
    install_cohort(monkeypatch, {"COHORT": tiny_cohort(n_patients=15, slices=2)})
    cfg = tiny_config(classifier={"inits": ["segmented_sscl"], "images": ["segmented"]}, protocol={"n_splits": 1},
                      pretrain={"precision": "fp32"})
    run_study("COHORT", tmp_path / "run", cfg, report=False)
    (r,) = _results(tmp_path / "run")
    assert r["status"] == "ok", r.get("reason")
    done = json.loads(next((tmp_path / "run").glob("splits/split_0/pretrain/segmented/tiny/simclr_bs16/done.json")).read_text())
    assert Path(done["checkpoint"]).exists() and r["pretrain_checkpoint"] == done["checkpoint"]
    assert (done["precision"], done["channels_last"]) == ("fp32", True)  # the CPU default layout, recorded
    assert not set(done["patient_ids"] + done["val_patient_ids"]) & set(r["test"]["patient_ids"])


def test_load_cell_test_inputs_gives_the_scored_model_and_slices(tmp_path, monkeypatch, fake_pretrain):
    from cmrprior.classify.inputs import load_cell_test_inputs
    from cmrprior.classify.model import load_classifier
    from cmrprior.classify.train import predict_proba
    from cmrprior.evaluate.metrics import patient_probabilities
    from cmrprior.runs import CellKey, RunFolder

    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})
    cfg = tiny_config(classifier={"inits": ["full_sscl"], "images": ["segmented"]}, protocol={"n_splits": 1})
    run_study("COHORT", tmp_path / "run", cfg, report=False)
    run = RunFolder(tmp_path / "run")
    result = run.read_cell(CellKey("0", "tiny", "full_sscl", "segmented"))
    model, _ = load_classifier(run.model_path(result.key))
    test, _, _ = load_cell_test_inputs(run, result)
    assert list(test.patient_ids) == result.test.patient_ids and test.patient_labels.tolist() == result.test.labels
    probs = patient_probabilities(predict_proba(model, test), test.patient_index, test.n_patients)
    assert np.allclose(probs, result.test.probabilities, atol=1e-5)
    # the second reader of the same run gets the kept images; a rewritten prepared folder is read again
    again, prepared, _ = load_cell_test_inputs(run, result)
    np.testing.assert_array_equal(again.ed, test.ed)
    assert load_cell_test_inputs(run, result)[1] is prepared
    arrays = run.prepared() / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes())  # same content, new mtime
    os.utime(arrays, ns=(arrays.stat().st_atime_ns, arrays.stat().st_mtime_ns + 10**9))
    reread = load_cell_test_inputs(run, result)
    assert reread[1] is not prepared
    np.testing.assert_array_equal(reread[0].ed, test.ed)
