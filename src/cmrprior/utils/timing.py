"""Phase timers for profiling a run: where the wall and CPU seconds go, stage by stage and inside the loops.

Off by default, and then nearly free: `phase(name)` checks one module flag and returns a shared null context
(no clock is read, nothing is allocated). `bench/profile_study.py` switches them on with `enabled()`.

Phases nest: a phase opened inside another is recorded under the joined path ("cells/finetune/forward"), so
the same loop phase is told apart by the stage that runs it. Each path accumulates wall seconds
(`time.perf_counter`), process CPU seconds (`time.process_time`: every thread of the process, so a loop on two
threads can show twice its wall time), the number of times it was entered and a count of items (e.g. images
through a forward pass) that the caller gives.

    with timing.phase("forward", items=len(x)):
        logits = model(x)

Single-threaded bookkeeping (one stack per process): phases are opened by the study's main thread only.
"""

from __future__ import annotations

import contextlib
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


class _Phase:
    __slots__ = ("name", "items", "path", "w0", "c0")

    def __init__(self, name: str, items: int) -> None:
        self.name, self.items = name, items

    def __enter__(self) -> "_Phase":
        _STACK.append(self.name)
        self.path = "/".join(_STACK)
        if self.path not in _TOTALS:  # created on entry: the totals list parents before children, in run order
            _TOTALS[self.path] = PhaseTotal()
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        wall, cpu = time.perf_counter() - self.w0, time.process_time() - self.c0
        _STACK.pop()
        total = _TOTALS[self.path]
        total.wall_s += wall
        total.cpu_s += cpu
        total.calls += 1
        total.items += self.items


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
    return {k: PhaseTotal(v.wall_s, v.cpu_s, v.calls, v.items) for k, v in _TOTALS.items()}
