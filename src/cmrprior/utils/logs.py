"""Where the log lines of a command go; used by the CLI only (library code logs, it never configures logging).

`cli_logging(quiet)`: while a command runs, the `cmrprior` loggers log at INFO and a handler on the root
logger writes short lines ("12:03:04 cells: 3/16 done ...") to stderr: INFO and above, or only warnings and
errors when `quiet`. `log_file(path)`: every INFO line of `cmrprior` also goes, with date, level and logger,
to `path` (appended), whatever `quiet` says. Both remove what they added when the command ends, so calling
the CLI twice in one process (tests, notebooks) does not duplicate lines.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cli_logging", "log_file"]

PACKAGE_LOGGER = "cmrprior"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TerminalFormatter(logging.Formatter):
    """'HH:MM:SS message' for INFO; warnings and errors keep their level in front of the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's API
        text = super().formatMessage(record)
        if record.levelno >= logging.WARNING:
            stamp, _, message = text.partition(" ")
            return f"{stamp} {record.levelname}: {message}"
        return text


@contextlib.contextmanager
def _package_level(level: int) -> Iterator[None]:
    pkg = logging.getLogger(PACKAGE_LOGGER)
    old = pkg.level
    pkg.setLevel(level)
    try:
        yield
    finally:
        pkg.setLevel(old)


@contextlib.contextmanager
def _handler(logger: logging.Logger, handler: logging.Handler) -> Iterator[None]:
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def cli_logging(*, quiet: bool = False) -> Iterator[None]:
    """stderr lines of a CLI command (INFO and above; WARNING and above when `quiet`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.setFormatter(_TerminalFormatter())
    with _package_level(logging.INFO), _handler(logging.getLogger(), handler):
        yield


@contextlib.contextmanager
def log_file(path: str | Path) -> Iterator[Path]:
    """Append every INFO line of `cmrprior` to `path` (its folder is created) while the block runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    with _package_level(logging.INFO), _handler(logging.getLogger(PACKAGE_LOGGER), handler):
        yield path
