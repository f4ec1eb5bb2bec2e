"""A phantom study with `tracking:` sends the curves of its pre-training runs (SimCLR and the Seg-teacher) and of
its diagnosis models to TensorBoard and MLflow: read back with their own readers, they equal the runs' JSONL
files and the cells' result.json histories. A tracker whose package is missing stops the study before it starts."""

from __future__ import annotations

import json

import pytest

from cmrprior.experiments.study import run_study

from .study_doubles import install_cohort, tiny_cohort, tiny_config


def _jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow"])
def test_study_curves_reach_the_tracker(tmp_path, monkeypatch, tracker):
    pytest.importorskip(tracker)
    monkeypatch.delenv("CMRPRIOR_TRACKING", raising=False)
    uri = (tmp_path / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # a file store: mlflow-skinny has no SQLite store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    install_cohort(monkeypatch, {"COHORT": tiny_cohort(n_patients=15, slices=2)})
    cfg = tiny_config(classifier={"inits": ["segmented_sscl", "seg_teacher"], "images": ["segmented"]},
                      protocol={"n_splits": 1}, pretrain={"precision": "fp32", "epochs": 2, "patience": 0},
                      teacher={"epochs": 2, "batch_size": 8}, tracking={"sinks": [tracker]})
    run = tmp_path / "run"
    run_study("COHORT", run, cfg, report=False)
    folders = [run / "splits/split_0/pretrain/segmented/tiny/simclr_bs16/run",
               run / "splits/split_0/pretrain/segmented/tiny/teacher/run"]
    cells = [run / f"splits/split_0/cells/tiny/{init}__segmented" for init in ("segmented_sscl", "seg_teacher")]
    for cell in cells:  # the cells' curves: their result.json history (what Figure 1 draws), no other file
        history = json.loads((cell / "result.json").read_text())["history"]
        assert history and not (cell / "metrics.jsonl").exists()
        (cell / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))  # to compare below
    folders += cells
    if tracker == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for folder in folders:
            acc = EventAccumulator(str(folder / "tensorboard"))
            acc.Reload()
            got = [(e.step, e.value) for e in acc.Scalars("val_loss")]
            assert got == [(r["epoch"], pytest.approx(r["val_loss"])) for r in _jsonl(folder / "metrics.jsonl")]
            assert len(got) >= 2
    else:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("cmrprior").experiment_id])
        by_folder = {r.data.tags["cmrprior.folder"]: r for r in runs}
        assert set(by_folder) == {str(f.resolve()) for f in folders}
        for folder in folders:
            history = client.get_metric_history(by_folder[str(folder.resolve())].info.run_id, "val_loss")
            assert sorted((m.step, m.value) for m in history) == [
                (r["epoch"], pytest.approx(r["val_loss"])) for r in _jsonl(folder / "metrics.jsonl")]
    # tracking changes no result: the config's digest is that of the same config without it
    assert cfg.digest() == tiny_config(classifier={"inits": ["segmented_sscl", "seg_teacher"], "images": ["segmented"]},
                                       protocol={"n_splits": 1}, pretrain={"precision": "fp32", "epochs": 2, "patience": 0},
                                       teacher={"epochs": 2, "batch_size": 8}).digest()


def test_a_missing_tracker_package_stops_the_study_before_it_starts(tmp_path, monkeypatch):
    import sys

    from cmrprior.errors import ConfigError

    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if mlflow were not installed
    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})
    with pytest.raises(ConfigError, match=r"needs the package mlflow"):
        run_study("COHORT", tmp_path / "run", tiny_config(tracking={"sinks": ["mlflow"]}), report=False)
    assert not (tmp_path / "run" / "splits.json").exists()
