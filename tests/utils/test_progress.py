"""Progress lines: counts, elapsed and left time against hand-computed values, throttling, reused pieces."""

from __future__ import annotations

import io
import logging

import pytest

from cmrprior.utils.progress import Progress, format_duration, info_reaches_terminal, track


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def lines(caplog):
    caplog.set_level(logging.INFO, logger="cmrprior.test")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "cmrprior.test"]


LOG = logging.getLogger("cmrprior.test")


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 60, 185, 3600 + 7 * 60 + 20)] == [
        "0 s", "42 s", "1 min 00 s", "3 min 05 s", "1 h 07 min"]


def test_one_line_per_piece_with_elapsed_and_left(lines):
    clock = Clock()
    p = Progress("cells", 4, LOG, clock=clock)
    for k, dt in enumerate((10, 30, 20), start=1):
        clock.t += dt
        p.done(f"piece {k}")
    clock.t += 40
    p.done("piece 4")
    # mean of the computed pieces so far x pieces left: 10 x 3, 20 x 2, 20 x 1
    assert lines() == ["cells: 1/4 done (piece 1), 10 s elapsed, ~30 s left",
                       "cells: 2/4 done (piece 2), 40 s elapsed, ~40 s left",
                       "cells: 3/4 done (piece 3), 1 min 00 s elapsed, ~20 s left",
                       "cells: 4/4 done (piece 4) in 1 min 40 s"]


def test_reused_pieces_count_but_do_not_shorten_the_estimate(lines):
    clock = Clock()
    p = Progress("pre-training", 4, LOG, clock=clock)
    p.done(reused=True)
    p.done(reused=True)
    assert lines()[-1] == "pre-training: 2/4 done, 0 s elapsed"  # no estimate before a computed piece
    clock.t += 90
    p.done()
    assert lines()[-1] == "pre-training: 3/4 done, 1 min 30 s elapsed, ~1 min 30 s left"


def test_many_pieces_give_about_lines_lines_and_always_the_last(lines):
    clock = Clock()
    p = Progress("segment", 1000, LOG, unit="frames", lines=10, min_interval_s=1e9, clock=clock)
    for _ in range(100):
        clock.t += 1
        p.done(n=10)
    got = lines()
    assert len(got) == 10
    assert got[0] == "segment: 100/1000 frames done, 10 s elapsed, ~1 min 30 s left"
    assert got[-1] == "segment: 1000/1000 frames done in 1 min 40 s"
    # a slow stage also logs after min_interval_s
    p2 = Progress("prepare", 100, LOG, lines=2, min_interval_s=30, clock=clock)
    clock.t += 31
    p2.done()
    assert lines()[-1].startswith("prepare: 1/100 done")


def test_track_yields_everything_and_no_bar_without_terminal(lines):
    assert list(track(iter(range(7)), "prepare", 7, LOG, unit="patients", lines=2)) == list(range(7))
    assert lines()[-1].startswith("prepare: 7/7 patients done in")
    assert not info_reaches_terminal(LOG)


def test_terminal_detection():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    logger = logging.getLogger("cmrprior.test.tty")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(Tty())
    logger.addHandler(handler)
    try:
        assert info_reaches_terminal(logger)
        handler.setLevel(logging.WARNING)  # --quiet: no bar either
        assert not info_reaches_terminal(logger)
    finally:
        logger.removeHandler(handler)
