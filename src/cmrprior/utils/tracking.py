"""Where the per-epoch records of a training run go: the run folder's JSONL file, and TensorBoard and MLflow
when asked.

The JSONL file is the source of truth (what the toolkit reads back); the trackers are for watching curves
live. They are asked for by `tracking: {sinks: [tensorboard, mlflow]}` in the study config, or by the
environment variable CMRPRIOR_TRACKING (comma-separated, e.g. `tensorboard,mlflow`; added to the config's).
Each tracker's package is imported only when that tracker is on (`pip install cmrprior[tracking]`); a
missing package is a ConfigError that names it.

* TensorBoard: event files in `<run>/tensorboard/` beside the JSONL file (`tensorboard --logdir RUN` shows
  every run of a study, each under its folder);
* MLflow: one MLflow run per training run (a resumed run continues it), named by the run's folder, in the
  experiment `cmrprior`, at MLFLOW_TRACKING_URI when it is set (a server, or `sqlite:///PATH/mlflow.db` to
  collect a whole study in one place), else in `<run>/mlflow.db` (SQLite: the full `mlflow` package).

Each record is sent once: the records already in the JSONL file when the sink opens (a resumed run's earlier
epochs) were the earlier process's to send. Numeric fields become scalars at step `epoch`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmrprior.errors import ConfigError
from cmrprior.utils import atomic

TRACKERS: tuple[str, ...] = ("tensorboard", "mlflow")
ENV = "CMRPRIOR_TRACKING"
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow (or mlflow-skinny)"}


@dataclass(frozen=True)
class TrackingConfig:
    """The study's `tracking` section: the trackers that receive every training run's epoch records, besides the
    JSONL files (which are always written). It does not change any result: it is not part of the config's
    digest, so a run can be resumed with tracking switched on or off."""

    sinks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_trackers(self.sinks, "tracking.sinks")


def check_trackers(names: Iterable[str], where: str) -> tuple[str, ...]:
    names = tuple(str(n).strip().lower() for n in names if str(n).strip())
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise ConfigError(f"{where}: unknown tracker(s) {bad}; expected some of {list(TRACKERS)}")
    return tuple(dict.fromkeys(names))


def trackers_from_env(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The trackers named by CMRPRIOR_TRACKING; ConfigError for an unknown name."""
    value = (os.environ if environ is None else environ).get(ENV, "")
    return check_trackers(value.split(","), f"environment variable {ENV}={value!r}")


def require(trackers: Sequence[str] = ()) -> tuple[str, ...]:
    """The trackers asked for (`trackers` and CMRPRIOR_TRACKING), their packages imported now: a missing one is a
    ConfigError before any training starts, not after hours of it."""
    names = check_trackers(tuple(trackers) + trackers_from_env(), "trackers")
    for name in names:
        try:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            else:
                from mlflow.tracking import MlflowClient  # noqa: F401
        except ImportError as exc:
            raise _missing(name, exc) from exc
    return names


class MetricsSink:
    """The epoch records of one training run in `folder`: `write(history)` after each epoch.

    `jsonl`: the file name in `folder` (rewritten whole, atomically); None for records whose file of truth is
    another (a diagnosis model's curves, in its result.json): the trackers only. `trackers`: besides those of
    CMRPRIOR_TRACKING. Raises ConfigError when a tracker's package is missing.
    """

    def __init__(self, folder: str | Path, *, jsonl: str | None = "metrics.jsonl", trackers: Sequence[str] = (),
                 name: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = None if jsonl is None else self.folder / jsonl
        self.name = name or str(self.folder)
        self.trackers = check_trackers(tuple(trackers) + trackers_from_env(), "trackers")
        self._sent = 0 if self.path is None else _count_lines(self.path)
        self._writers: list[Any] = [_open(t, self.folder, self.name) for t in self.trackers]

    def write(self, history: Sequence[dict[str, Any]]) -> None:
        """Rewrite the JSONL file from `history` (one record per finished epoch), then send the records the
        trackers have not had."""
        if self.path is not None:
            atomic.write_text(self.path, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))
        self._send(history[self._sent:])

    def _send(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            step = int(record.get("epoch", self._sent + 1))
            scalars = {k: float(v) for k, v in record.items()
                       if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            for w in self._writers:
                w.log(scalars, step)
            self._sent += 1
        for w in self._writers:
            w.flush()

    def append(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to the JSONL file (atomically) and send it."""
        atomic.append_jsonl(self.path, record)
        self._send([record])

    def close(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []

    def __enter__(self) -> "MetricsSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _missing(tracker: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"tracking with {tracker} needs the package {_PACKAGES[tracker]}, which is not installed "
                       f"({exc}); pip install 'cmrprior[tracking]', or leave {tracker} out of tracking.sinks / {ENV}")


def _open(tracker: str, folder: Path, name: str) -> Any:
    return _TensorBoard(folder, name) if tracker == "tensorboard" else _MLflow(folder, name)


class _TensorBoard:
    def __init__(self, folder: Path, name: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise _missing("tensorboard", exc) from exc
        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, folder: Path, name: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise _missing("mlflow", exc) from exc
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name("cmrprior")
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment("cmrprior")
        except Exception as exc:  # noqa: BLE001 - MLflow raises its own types, and ImportError for a store's package
            raise ConfigError(f"MLflow tracking at {uri}: {type(exc).__name__}: {str(exc)[:300]}") from exc
        tag = str(folder.resolve())
        # a resumed run continues its MLflow run (found by its folder) rather than starting a second one
        found = [r for r in self.client.search_runs([exp_id], max_results=1000) if r.data.tags.get("cmrprior.folder") == tag]
        self.run_id = (found[0].info.run_id if found else
                       self.client.create_run(exp_id, run_name=name, tags={"cmrprior.folder": tag}).info.run_id)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.client.log_metric(self.run_id, key, value, step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
