"""Progress of long stages as readable log lines: "cells: 3/16 done (...), 2 min 10 s elapsed, ~7 min left".

Library code reports progress only through `logging` (it never prints); the CLI decides where the lines go
(stderr unless `--quiet`, and the run folder's log file). Two kinds of stages:

* coarse stages (a study's cells, pre-training runs, saliency per cell): `Progress(stage, total, log)` and
  one `done(note)` per finished piece, each logged as one line;
* many fast pieces (patients prepared, frames segmented): `Progress(..., lines=10, bar=True)`; a tqdm bar
  when INFO lines of `log` reach a terminal, else about `lines` evenly spaced lines (and one at least every
  `min_interval_s`), and always the final line.

The estimate of the time left is the mean time of the pieces computed so far times the pieces left; pieces
marked `reused=True` (finished in an earlier run and read back) count as done but not in that mean.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Progress", "format_duration", "info_reaches_terminal", "track"]


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def info_reaches_terminal(logger: logging.Logger) -> bool:
    """True when an INFO record of `logger` is written by a handler to a terminal (then a bar is readable)."""
    if not logger.isEnabledFor(logging.INFO):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        for h in current.handlers:
            stream = getattr(h, "stream", None)
            if h.level <= logging.INFO and stream is not None and getattr(stream, "isatty", lambda: False)():
                return True
        if not current.propagate:
            break
        current = current.parent
    return False


class Progress:
    """Counts finished pieces of one stage and logs "stage: k/N done" lines with the elapsed and left time.

    Args:
        stage: the stage's name as the user reads it ("cells", "prepare").
        total: number of pieces (0 is allowed: nothing is logged but the final line).
        logger: where the lines go (INFO).
        unit: the pieces' word in the line ("patients"), or "".
        lines: None = one line per piece; an int = about that many lines over the whole stage.
        bar: show a tqdm bar instead of the intermediate lines when INFO lines reach a terminal.
        min_interval_s: with `lines`, also log when this long has passed since the last line.
        clock: seconds (monotonic); injectable for tests.
    """

    def __init__(self, stage: str, total: int, logger: logging.Logger, *, unit: str = "", lines: int | None = None,
                 bar: bool = False, min_interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stage, self.total, self.logger, self.unit = stage, int(total), logger, unit
        self.lines, self.min_interval_s, self.clock = lines, min_interval_s, clock
        self.done_count = 0
        self._start = self._last_piece = self._last_line = clock()
        self._work_s, self._worked = 0.0, 0
        self._bar = None
        self._closed = False
        if bar and self.total > 0 and info_reaches_terminal(logger):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=stage, unit=f" {unit}" if unit else "it", leave=False,
                             file=sys.stderr, dynamic_ncols=True)

    def done(self, note: str = "", *, n: int = 1, reused: bool = False) -> None:
        """`n` more pieces finished (`reused`: read back from an earlier run, not computed)."""
        now = self.clock()
        if not reused:
            self._work_s += now - self._last_piece
            self._worked += n
        self._last_piece = now
        before, self.done_count = self.done_count, self.done_count + n
        if self._bar is not None:
            self._bar.update(n)
        finished = self.done_count >= self.total
        if finished:
            self.close(note)
        elif self._bar is None and self._due(before, now):
            self._last_line = now
            self.logger.info("%s", self.line(note))

    def _due(self, before: int, now: float) -> bool:
        if self.lines is None:
            return True
        step = self.total / max(self.lines, 1)
        return int(self.done_count / step) > int(before / step) or now - self._last_line >= self.min_interval_s

    def seconds_left(self) -> float | None:
        """Mean time of the computed pieces times the pieces left; None before the first computed piece."""
        if self._worked == 0:
            return None
        return self._work_s / self._worked * max(self.total - self.done_count, 0)

    def line(self, note: str = "") -> str:
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.stage}: {self.done_count}/{self.total}{unit} done"
        text += f" ({note})" if note else ""
        elapsed = format_duration(self.clock() - self._start)
        if self.done_count >= self.total:
            return f"{text} in {elapsed}"
        left = self.seconds_left()
        return f"{text}, {elapsed} elapsed" + ("" if left is None else f", ~{format_duration(left)} left")

    def close(self, note: str = "") -> None:
        """Close the bar (if any); log the final line once, when every piece is done (an interrupted stage's
        last line already says how far it got)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.done_count >= self.total and not self._closed:
            self._closed = True
            self.logger.info("%s", self.line(note))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], stage: str, total: int, logger: logging.Logger, *, unit: str = "",
          lines: int = 10) -> Iterator[T]:
    """Yield `items`, reporting each as a finished piece (a bar on a terminal, else about `lines` lines)."""
    with Progress(stage, total, logger, unit=unit, lines=lines, bar=True) as progress:
        for item in items:
            progress.done()  # before yielding: a consumer such as zip() may never ask for the item after the last
            yield item
