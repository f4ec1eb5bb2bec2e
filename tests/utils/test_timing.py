"""Phase timers: nested paths, wall and CPU seconds against the clocks read around them, free when off."""

import time

import pytest

from cmrprior.utils import timing


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_off_records_nothing_and_returns_one_shared_context():
    assert not timing.is_on()
    a, b = timing.phase("x"), timing.phase("y", items=3)
    assert a is b  # no object made per call when off
    with a:
        _busy(0.01)
    with timing.enabled() as totals:
        pass
    assert totals == {}


def test_nested_phases_add_wall_cpu_calls_and_items_under_their_paths():
    with timing.enabled() as totals:
        w0, c0 = time.perf_counter(), time.process_time()
        with timing.phase("stage"):
            for _ in range(3):
                with timing.phase("forward", items=4):
                    _busy(0.02)
            with timing.phase("sleep"):
                time.sleep(0.05)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    assert list(totals) == ["stage", "stage/forward", "stage/sleep"]  # parents first, in run order
    fwd, stage, sleep = totals["stage/forward"], totals["stage"], totals["stage/sleep"]
    assert (fwd.calls, fwd.items, stage.calls, stage.items) == (3, 12, 1, 0)
    assert 0.06 <= fwd.cpu_s <= stage.cpu_s <= cpu
    assert fwd.wall_s + sleep.wall_s <= stage.wall_s <= wall
    assert sleep.wall_s >= 0.05 and sleep.cpu_s < 0.04  # sleeping costs wall time, not CPU time
    assert not timing.is_on()


def test_timing_is_off_again_after_an_error_and_cannot_be_nested():
    with pytest.raises(ValueError):
        with timing.enabled():
            with timing.phase("a"):
                raise ValueError("boom")
    assert not timing.is_on()
    with timing.enabled() as totals:
        with pytest.raises(RuntimeError):
            with timing.enabled():
                pass
        with timing.phase("b"):
            pass
    assert list(totals) == ["b"]  # the stack was reset: "b" is not recorded under the failed "a"


def test_cpu_of_child_processes_ended_inside_a_phase_and_the_peak_memory_are_recorded():
    import subprocess
    import sys

    with timing.enabled() as totals:
        with timing.phase("workers"):
            subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                                                  "while time.process_time() < end: pass"], check=True)
    w = totals["workers"]
    assert w.cpu_s >= 0.3 and w.wall_s >= 0.3  # the parent only waited: its own CPU time is near 0
    import resource

    assert 0 < w.peak_rss_mb <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
