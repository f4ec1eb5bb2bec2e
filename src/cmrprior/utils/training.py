"""What every training loop of the toolkit shares (SimCLR/VICReg, the Seg-teacher, the segmenter, the diagnosis
model): seeding, resume with the rule for a changed config, early stopping, and the per-epoch record.

Each loop still reads top to bottom like a short training script (set-up, model, resume, epochs, end-of-epoch
bookkeeping) and calls these helpers; they are the pieces a fix must reach in all of the loops at once:

* `cmrprior.utils.seeding.seed_everything(seed)` seeds Python, NumPy and torch (network initialisation, code
  outside our control) and
  `order_generator(seed, *keys)` gives the generator of a data order;
* `TrainingRun(folder, ...)`: `resume(new_state, load)` (the checkpoint read, the config-change rule, the loop
  state and torch's RNG restored), `record(row)` (the epoch's record: the loop state's history, the JSONL file
  rewritten from it, the trackers of `cmrprior.utils.tracking`), `improved(value)` / `should_stop()` (early
  stopping kept in the loop state), `save(payload)` (the checkpoint, atomically, with the config and the state).

The history lives in the checkpoint's loop state and the JSONL file is rewritten from it, so a run killed
between its record and its checkpoint has its last record written again, not twice.

torch is imported only where a checkpoint or a generator is made (utils stays importable without it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmrprior.errors import ConfigError, DataError
from cmrprior.utils import atomic
from cmrprior.utils.seeding import derive_seed, torch_generator
from cmrprior.utils.tracking import MetricsSink

log = logging.getLogger(__name__)


def order_generator(seed: int, *keys: object):
    """The torch.Generator of a data order (a permutation of the training items): seeded with
    `derive_seed(seed, *keys)`, or with `seed` itself when no keys are given."""
    return torch_generator(derive_seed(int(seed), *keys) if keys else int(seed))


def check_config_change(saved: Mapping[str, Any], now: Mapping[str, Any], may_change: Iterable[str], path: str | Path,
                        what: str = "") -> None:
    """The resume rule: a run continues only under the configuration it started with, except the settings in
    `may_change` (those that do not change what a step computes: more epochs, patience, progress bars ...).

    Raises ConfigError naming the run's file and the settings that differ.
    """
    allowed = set(may_change)
    diff = sorted(k for k in set(saved) | set(now) if k not in allowed and saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(f"{path}: the run folder holds a run with a different {what + ' ' if what else ''}"
                          f"configuration ({', '.join(diff)}); use a new --out folder or the same settings to resume")


@dataclass(frozen=True)
class EarlyStopping:
    """Early stopping on a per-epoch validation value, kept in the loop's own state dict (so that it is saved and
    resumed with it) under `keys`: (best value, epochs without improvement, stopped).

    An epoch improves when its value is lower than the best by more than `min_delta` (`mode` "max": higher);
    the first finite value always does, NaN never does, and None (no validation data) always does (the last
    epoch is then kept). After `patience` epochs without improvement the run stops (0 or None: never), once
    the loop says it `may_stop` (e.g. after a minimum number of epochs).
    """

    patience: int | None
    min_delta: float = 0.0
    mode: str = "min"
    keys: tuple[str, str, str] = ("best_val_loss", "bad_epochs", "stopped_early")

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ConfigError(f"EarlyStopping.mode must be 'min' or 'max', got {self.mode!r}")

    def update(self, state: MutableMapping[str, Any], value: float | None, *, may_stop: bool = True) -> bool:
        """Record this epoch's `value` in `state`; True when it is the new best."""
        best_key, bad_key, stop_key = self.keys
        best = state.get(best_key)
        if value is None or _better(value, best, self.min_delta, self.mode):
            state[best_key], state[bad_key] = value, 0
            return True
        state[bad_key] = state.get(bad_key, 0) + 1
        if self.patience and may_stop and state[bad_key] >= self.patience:
            state[stop_key] = True
        return False


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` with plain Python values (NumPy scalars and arrays converted), as the JSONL file holds them: the
    checkpoint that keeps the history is read back with torch's `weights_only` loader, which refuses NumPy types."""
    return json.loads(json.dumps(dict(row), default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _better(value: float, best: float | None, min_delta: float, mode: str) -> bool:
    if value != value:  # NaN
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def saved_config(checkpoint: str | Path) -> dict[str, Any] | None:
    """The config saved in a loop's checkpoint, or None when there is none or it cannot be read (resuming it then
    reports why: `TrainingRun.resume`)."""
    path = Path(checkpoint)
    if not path.exists():
        return None
    import torch

    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True)["config"])
    except Exception:  # torch.load raises many types; resume names the file and the error
        return None


class TrainingRun:
    """The bookkeeping of one training loop in its run `folder` (None: in memory, nothing written).

    `config`: the run's settings as a plain dict (saved in the checkpoint; a resume under other values than those
    of `may_change` is refused, `check_config_change`); `checkpoint`: the file name of the loop's checkpoint;
    `metrics`: the JSONL file of the epoch records (None: no file); `trackers`: see `cmrprior.utils.tracking`;
    `stopping`: the loop's early stopping; `main`: False on the ranks of a distributed run that write nothing;
    `defaults`: the values of settings added after a checkpoint was written (a key missing from an older
    checkpoint's config holds its default, the behaviour from before the setting existed).

    The loop state (`self.state`, a plain dict saved under "state") holds at least "epoch" (finished epochs)
    and "history" (their records), plus the loop's own counters and `stopping.keys`.
    """

    def __init__(self, folder: str | Path | None, *, config: Mapping[str, Any], may_change: Iterable[str] = (),
                 what: str = "", checkpoint: str = "last.pt", metrics: str | None = "metrics.jsonl",
                 trackers: Sequence[str] = (), stopping: EarlyStopping | None = None, main: bool = True,
                 defaults: Mapping[str, Any] | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.config = dict(config)
        self.defaults = dict(defaults or {})
        self.may_change = tuple(may_change)
        self.what = what
        self.path = None if self.folder is None else self.folder / checkpoint
        self.metrics = metrics
        self.trackers = tuple(trackers)
        self.stopping = stopping or EarlyStopping(None)
        self.main = main
        self.state: dict[str, Any] = {}
        self._sink: MetricsSink | None = None

    # ---- resume ----------------------------------------------------------------------------------------------
    def resume(self, new_state: Mapping[str, Any], load: Callable[[dict[str, Any]], None] | None = None
               ) -> dict[str, Any]:
        """The loop state to start from: `new_state` (with "epoch" 0 and an empty "history" added when absent), or,
        when the checkpoint exists, the saved one. Then `load(checkpoint)` loads the loop's model and optimizer
        (and makes its own checks) in place, and torch's global RNG is restored.

        A checkpoint whose state holds no history (written before it did) takes its finished epochs' records
        from the JSONL file. Raises DataError (unreadable checkpoint), ConfigError (another configuration).
        """
        self.state = {"epoch": 0, "history": [], **dict(new_state)}
        if self.path is not None and self.path.exists():
            import torch

            try:
                ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
                saved = ckpt["config"]
            except Exception as exc:  # torch.load raises many types (pickle, zip, OSError, RuntimeError)
                raise DataError(self.path, f"cannot read checkpoint to resume ({type(exc).__name__}: {exc})") from exc
            check_config_change({**self.defaults, **saved}, self.config, self.may_change, self.path, self.what)
            if load is not None:
                load(ckpt)
            self.state.update(ckpt["state"])
            if "history" not in ckpt["state"]:
                self.state["history"] = self._read_records()[: int(self.state["epoch"])]
            if "rng" in ckpt:
                torch.set_rng_state(ckpt["rng"]["torch"])
            log.info("resumed %s at epoch %d", self.path, self.state["epoch"])
        if self.main and self.folder is not None and (self.metrics is not None or self.trackers):
            self._sink = MetricsSink(self.folder, jsonl=self.metrics, trackers=self.trackers, name=str(self.folder))
        return self.state

    def _read_records(self) -> list[dict[str, Any]]:
        path = None if self.folder is None or self.metrics is None else self.folder / self.metrics
        if path is None or not path.exists():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise DataError(path, f"cannot read the epoch records ({exc})") from exc

    # ---- the epoch's record, early stopping ------------------------------------------------------------------
    def record(self, row: Mapping[str, Any]) -> None:
        """Add the epoch's record to the history (in the loop state) and write it: the JSONL file rewritten from
        the history (atomically), the new record sent to the trackers."""
        self.state["history"] = list(self.state.get("history", [])) + [_plain(row)]
        if self._sink is not None:
            self._sink.write(self.state["history"])

    def improved(self, value: float | None, *, may_stop: bool = True) -> bool:
        """Early stopping: record this epoch's validation `value` in the loop state; True when it is the best."""
        return self.stopping.update(self.state, value, may_stop=may_stop)

    def should_stop(self) -> bool:
        """True once early stopping has stopped the run (saved with the state, so a resumed run stays stopped)."""
        return bool(self.state.get(self.stopping.keys[2]))

    # ---- checkpoint ------------------------------------------------------------------------------------------
    def save(self, payload: Mapping[str, Any]) -> None:
        """Write the checkpoint atomically: `payload` (the loop's model, optimizer ...), the config, the loop state
        and torch's global RNG state. Nothing on a non-main rank or without a folder."""
        if self.path is None or not self.main:
            return
        import torch

        atomic.save_torch(self.path, {"config": self.config, **payload, "state": dict(self.state),
                                      "rng": {"torch": torch.get_rng_state()}})

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def __enter__(self) -> "TrainingRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
