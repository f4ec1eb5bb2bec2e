"""Epoch records: the JSONL file always, TensorBoard and MLflow when asked (read back with their own readers),
each record sent once across a resume, clear errors for unknown trackers and missing packages."""

from __future__ import annotations

import json
import sys

import pytest

from cmrprior.errors import ConfigError
from cmrprior.utils.tracking import ENV, MetricsSink, TrackingConfig, trackers_from_env

HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0 / e, "seconds": 0.5, "note": "x", "val_auc": None}
           for e in range(1, 6)]


def _tb_scalars(folder):
    """{tag: [(step, value), ...]} of the TensorBoard event files under `folder` (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_jsonl_only_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with MetricsSink(tmp_path) as sink:
        sink.write(HISTORY[:2])
        sink.write(HISTORY[:3])
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == HISTORY[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_unknown_tracker_and_env_parsing(monkeypatch):
    assert trackers_from_env({ENV: " TensorBoard, mlflow,,"}) == ("tensorboard", "mlflow")
    assert trackers_from_env({}) == ()
    with pytest.raises(ConfigError, match=r"CMRPRIOR_TRACKING='wandb'.*unknown tracker"):
        trackers_from_env({ENV: "wandb"})
    with pytest.raises(ConfigError, match="tracking.sinks: unknown tracker"):
        TrackingConfig(sinks=("tensorbord",))


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match=r"needs the package tensorboard.*cmrprior\[tracking\]"):
        MetricsSink(tmp_path, trackers=("tensorboard",))
    monkeypatch.setenv(ENV, "mlflow")
    with pytest.raises(ConfigError, match="needs the package mlflow"):
        MetricsSink(tmp_path)


def test_tensorboard_receives_each_epoch_once_across_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv(ENV, "tensorboard")
    with MetricsSink(tmp_path, jsonl="log.jsonl") as sink:
        sink.write(HISTORY[:3])
    with MetricsSink(tmp_path, jsonl="log.jsonl") as sink:  # a resumed run: epochs 1-3 are in the file already
        sink.write(HISTORY)
    scalars = _tb_scalars(tmp_path / "tensorboard")
    assert set(scalars) == {"train_loss", "val_loss", "seconds"}  # numbers only; epoch is the step
    assert scalars["val_loss"] == [(e, pytest.approx(2.0 / e)) for e in range(1, 6)]
    assert [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()] == HISTORY


def test_mlflow_receives_the_curves(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").resolve().as_uri()  # a file store: mlflow-skinny has no SQLite store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    with MetricsSink(tmp_path, trackers=("mlflow",), name="run-a") as sink:
        sink.write(HISTORY[:2])
    with MetricsSink(tmp_path, trackers=("mlflow",), name="run-a") as sink:  # resumed: the same MLflow run
        sink.write(HISTORY[:4])
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cmrprior").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(e, pytest.approx(1.0 / e)) for e in range(1, 5)]
    assert run.info.run_name == "run-a"
