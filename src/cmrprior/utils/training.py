"""What every training loop of the toolkit shares (SimCLR/VICReg, the Seg-teacher, the segmenter, the diagnosis
model): the resume rule for a changed config, and early stopping. The per-epoch record goes through
`cmrprior.utils.tracking.MetricsSink`, the seeds come from `cmrprior.utils.seeding`.

Each loop still reads top to bottom (set-up, model, resume, epochs, end-of-epoch bookkeeping); these are the
pieces a fix must reach in all of them at once. No torch here: the loops keep their own tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmrprior.errors import ConfigError


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


def _better(value: float, best: float | None, min_delta: float, mode: str) -> bool:
    if value != value:  # NaN
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta
