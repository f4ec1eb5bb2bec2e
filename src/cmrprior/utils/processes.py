"""Per-patient work in worker processes, results in input order (`map_in_processes`).

Spawned, never forked: the parent holds torch threads (and maybe a CUDA context) that a forked child must not
inherit. Below `min_jobs` jobs, or with one worker, everything runs in this process: starting a process and
importing torch in it costs seconds, more than a few patients' work.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")

__all__ = ["map_in_processes", "set_torch_threads"]


def map_in_processes(fn: Callable[[J], R], jobs: Iterable[J], workers: int, *, min_jobs: int = 4,
                     chunksize: int = 4, initializer: Callable[..., Any] | None = None,
                     initargs: tuple = ()) -> Iterator[R]:
    """`fn(job)` for every job, in the jobs' order: in `workers` spawned processes, or in this process when
    `workers <= 1` or there are fewer than `min_jobs` jobs. `initializer(*initargs)` runs once in each worker
    process, never in this one (e.g. `set_torch_threads`). `fn` must be a module-level function and the jobs
    and results picklable; an exception raised by `fn` in a worker is raised here when its result is reached
    (a function that must report several bad inputs returns its exceptions instead)."""
    jobs = list(jobs)
    if workers <= 1 or len(jobs) < min_jobs:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                             initializer=initializer, initargs=initargs) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)


def set_torch_threads(n: int) -> None:
    """A worker process's torch threads (an `initializer` of `map_in_processes`)."""
    import torch

    torch.set_num_threads(n)
