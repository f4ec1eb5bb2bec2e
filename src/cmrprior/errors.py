"""Exceptions raised by cmrprior. Every message names the file (or patient) and the problem."""

from __future__ import annotations

from pathlib import Path


class CmrPriorError(Exception):
    """Base class: the CLI turns these into one clear line and a non-zero exit code."""


class DataError(CmrPriorError):
    """Bad input data: `path` is the offending file or folder, `problem` what is wrong with it."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)

    def __reduce__(self):
        # rebuilt from (path, problem), not from the message: it crosses from worker processes whole
        return type(self), (self.path, self.problem)


class ConfigError(CmrPriorError):
    """An invalid configuration value or combination of options."""


class WeightsUnavailableError(CmrPriorError):
    """Pretrained weights were requested but cannot be found or downloaded."""


class LeakageError(CmrPriorError):
    """A test patient reached a stage that must not see it (pre-training, training, search, masks)."""


class InputError(CmrPriorError, ValueError):
    """An invalid argument of a library call: an array of the wrong shape, a value out of its range, patients
    that overlap or are missing, too few samples for a statistic. Also a ValueError, so code that treats
    invalid arguments the standard way keeps catching it."""
