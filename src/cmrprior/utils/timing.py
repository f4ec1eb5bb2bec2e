"""Phase timers for profiling a run: where the wall and CPU seconds go, stage by stage and inside the loops.

Off by default, and then nearly free: `phase(name)` checks one module flag and returns a shared null context
(no clock is read, nothing is allocated). `bench/profile_study.py` switches them on with `enabled()`.

Phases nest: a phase opened inside another is recorded under the joined path ("grid/cell[tiny,none]/forward"),
so the same loop phase is told apart by the stage that runs it (names must not contain "/"). Each path
accumulates wall seconds (`time.perf_counter`), CPU seconds (`time.process_time`, every thread of the process,
so a loop on two threads can show twice its wall time, plus the CPU time of child processes that ended inside
the phase, e.g. worker pools), the number of times it was entered, a count of items (e.g. images through a
forward pass) that the caller gives, and the process's peak resident memory when it last ended (so the first
phase whose `peak_rss_mb` reaches the run's peak is where memory peaked).

    with timing.phase("forward", items=len(x)):
        logits = model(x)

Single-threaded bookkeeping (one stack per process): phases are opened by the study's main thread only.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

_ON = False
_STACK: list[str] = []
_TOTALS: dict[str, "PhaseTotal"] = {}
_NULL = contextlib.nullcontext()


@dataclass
class PhaseTotal:
    """What one phase path accumulated: seconds, entries and items."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    calls: int = 0
    items: int = 0
    peak_rss_mb: float = 0.0


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its ended, waited-for child processes."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


class _Phase:
    __slots__ = ("name", "items", "path", "w0", "c0")

    def __init__(self, name: str, items: int) -> None:
        self.name, self.items = name, items

    def __enter__(self) -> "_Phase":
        _STACK.append(self.name)
        self.path = "/".join(_STACK)
        if self.path not in _TOTALS:  # created on entry: the totals list parents before children, in run order
            _TOTALS[self.path] = PhaseTotal()
        self.w0, self.c0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall, cpu = time.perf_counter() - self.w0, cpu_seconds() - self.c0
        _STACK.pop()
        total = _TOTALS[self.path]
        total.wall_s += wall
        total.cpu_s += cpu
        total.calls += 1
        total.items += self.items
        total.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def phase(name: str, items: int = 0) -> contextlib.AbstractContextManager:
    """A context that adds its wall and CPU seconds to `name` (under the phases open around it) when timing is
    on; a shared no-op context when it is off. `items`: a count to add (images, batches), for rates."""
    if not _ON:
        return _NULL
    return _Phase(name, int(items))


def is_on() -> bool:
    return _ON


@contextlib.contextmanager
def enabled() -> Iterator[dict[str, PhaseTotal]]:
    """Timing on inside the block; yields the totals (path -> PhaseTotal, in the order phases were first
    entered: a parent before its children), filled as phases close. The totals start empty; timing is off again afterwards (also when the block raises)."""
    global _ON
    if _ON:
        raise RuntimeError("phase timing is already on")
    _TOTALS.clear()
    _STACK.clear()
    _ON = True
    try:
        yield _TOTALS
    finally:
        _ON = False
        _STACK.clear()


def totals() -> dict[str, PhaseTotal]:
    """A copy of the totals recorded so far (path -> PhaseTotal)."""
    return {k: PhaseTotal(v.wall_s, v.cpu_s, v.calls, v.items, v.peak_rss_mb) for k, v in _TOTALS.items()}
