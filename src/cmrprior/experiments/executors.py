"""Run the study's pieces (`cmrprior.experiments.pieces`) in waves: this process, local processes, or SLURM.

The driver (`run_study_pieces`) holds the run folder's lock, checks the inputs, then repeats: every piece
whose marker is not on disk and whose `needs` are finished forms the next wave; the executor runs the wave
and says which pieces ended well. A failed piece blocks only what needs it; the driver ends when nothing is
left to run and raises `PiecesFailed` (naming each failed piece and its log) when something did not finish.
A rerun skips what is finished and resumes the rest, whatever executor ran it before.

* `LocalExecutor(workers)`: the pieces one after the other in this process (1), or `workers` processes at
  once (torch threads split between them; on a machine with GPUs each process is pinned to one of them in
  turn through CUDA_VISIBLE_DEVICES). With processes the driver does not wait for a whole wave: a piece
  starts as soon as what it needs is finished and a process is free (a long Seg-teacher of one split no longer
  holds back the cells of the others), pre-trainings before cells so that the cells they free come early.
* `cmrprior.experiments.slurm.SlurmExecutor`: each wave as SLURM job arrays, through submitit.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from cmrprior.errors import CmrPriorError, LeakageError
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.executor_config import ExecutorConfig
from cmrprior.experiments.pieces import DRIVER_JSON, STUDY, Piece, PieceCall, is_done, study_graph
from cmrprior.runs import RunFolder
from cmrprior.utils import atomic
from cmrprior.utils.runfolder_checks import check_out_dir
from cmrprior.utils.runlock import run_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a piece's run ended: ok with its return value, or an error line (and the exception when it
    was raised in this process), and where its log is."""

    ok: bool
    value: Any = None
    error: str | None = None
    log: Path | None = None
    exc: BaseException | None = None


class Executor(Protocol):
    def run_wave(self, run: RunFolder, pieces: list[Piece], call: PieceCall) -> dict[str, Outcome]:
        """Run `pieces` (none needs another) and return one outcome per piece id."""


class PiecesFailed(CmrPriorError):
    """Some pieces of a study did not finish; the message names each one, its error and its log."""


def _inline(call: PieceCall, piece: Piece) -> Outcome:
    try:
        return Outcome(True, call(piece))
    except LeakageError:
        raise  # leakage is a bug in the study, never a piece to retry
    except Exception as exc:  # noqa: BLE001 - one failed piece must not stop the others
        log.error("piece %s failed: %s: %s", piece.id, type(exc).__name__, exc)
        return Outcome(False, error=f"{type(exc).__name__}: {exc}", exc=exc)


def _in_worker(call: PieceCall, piece: Piece) -> Outcome:
    """A piece in a pool process: INFO lines to stderr as in the CLI (the piece also logs to its log.txt)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = _inline(call, piece)
    return out if out.ok else replace(out, exc=None)  # the exception may not pickle; its line is kept


def _result(fut: Future) -> Outcome:
    try:
        return fut.result()
    except LeakageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
        return Outcome(False, error=f"{type(exc).__name__}: {exc}")


def _pin_gpu(ids: Any) -> None:
    """Pool initializer: this worker process sees one GPU, the next id of the queue `ids`, set before torch
    starts CUDA in it (a worker that replaces a dead one finds the queue empty and sees them all)."""
    try:
        os.environ["CUDA_VISIBLE_DEVICES"] = ids.get_nowait()
    except queue.Empty:
        pass


def _process_pool(n: int, gpus: tuple[str, ...] = ()):
    """`n` spawned worker processes; with `gpus`, each one pinned to one of them in turn."""
    context = get_context("spawn")
    if not gpus:
        return ProcessPoolExecutor(max_workers=n, mp_context=context)
    ids = context.Queue()
    for i in range(n):
        ids.put(gpus[i % len(gpus)])
    return ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_pin_gpu, initargs=(ids,))


def visible_gpus() -> tuple[str, ...]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES ids (none without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return tuple(g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1")
    import torch

    return tuple(str(i) for i in range(torch.cuda.device_count())) if torch.cuda.is_available() else ()


class LocalExecutor:
    """This machine: one piece at a time in this process (`workers=1`), or `workers` processes at once
    (`pool(n[, gpus])` makes the pool: spawned processes, each pinned to one GPU in turn where the machine has
    GPUs; a test may pass threads)."""

    def __init__(self, workers: int = 1, pool: Callable[..., Any] = _process_pool,
                 gpus: tuple[str, ...] | None = None) -> None:
        self.workers = workers
        self._pool_factory = pool
        self.gpus = gpus  # None: the GPUs this process sees (`visible_gpus`), shared out among the workers

    def _pool(self, n: int):
        gpus = visible_gpus() if self.gpus is None else self.gpus
        return self._pool_factory(n, gpus) if gpus else self._pool_factory(n)

    @property
    def streams(self) -> bool:
        """Whether `drive` hands pieces over one by one (`submitter`) instead of in waves."""
        return self.workers > 1

    def _threads(self, call: PieceCall, n: int) -> int:
        return call.threads or max(1, (os.cpu_count() or 1) // n)

    def run_wave(self, run: RunFolder, pieces: list[Piece], call: PieceCall) -> dict[str, Outcome]:
        if self.workers == 1 or len(pieces) == 1:
            return {p.id: _inline(call, p) for p in pieces}
        with self.submitter(call, min(self.workers, len(pieces))) as submit:
            futures = {p.id: submit(p) for p in pieces}
            return {pid: _result(fut) for pid, fut in futures.items()}

    @contextmanager
    def submitter(self, call: PieceCall, n: int | None = None) -> Iterator[Callable[[Piece], Future]]:
        """A function that starts one piece in a free one of `n` (all `workers`) worker processes and returns
        its future Outcome."""
        n = n or self.workers
        worker_call = replace(call, threads=self._threads(call, n), processes=n)
        with self._pool(n) as pool:
            yield lambda piece: pool.submit(_in_worker, worker_call, piece)


def make_executor(config: ExecutorConfig) -> Executor:
    """The executor `config` names; `slurm` raises ConfigError saying how to install submitit when it is absent."""
    if config.kind == "slurm":
        from cmrprior.experiments.slurm import SlurmExecutor

        return SlurmExecutor(config.slurm)
    return LocalExecutor(config.workers)


@dataclass(frozen=True)
class DriveResult:
    finished: tuple[str, ...]
    failed: dict[str, Outcome]
    blocked: tuple[str, ...]  # waiting for a failed piece
    value: Any  # what the `study` piece returned (a StudyResult), None when it did not run


def drive(run: RunFolder, graph: Callable[[], list[Piece]], executor: Executor, call: PieceCall) -> DriveResult:
    """Run the pieces in waves until nothing more can run (see the module docstring)."""
    if getattr(executor, "streams", False):
        return _drive_streaming(run, graph, executor, call)
    finished: set[str] = set()
    failed: dict[str, Outcome] = {}
    value = None
    while True:
        pieces = graph()
        finished |= {p.id for p in pieces if p.id not in finished and is_done(run, p)}
        ready = [p for p in pieces if p.id not in finished and p.id not in failed
                 and all(n in finished for n in p.needs)]
        if not ready:
            break
        log.info("wave: %d piece(s) (%s)", len(ready), ", ".join(sorted({p.kind for p in ready})))
        outcomes = executor.run_wave(run, ready, call)
        for p in ready:
            value = _settle(p.id, outcomes[p.id], finished, failed, value)
    return _drive_result(pieces, finished, failed, value)


def _settle(pid: str, o: Outcome, finished: set[str], failed: dict[str, Outcome], value: Any) -> Any:
    """Record how piece `pid` ended; returns the study's value (what the `study` piece returned, once it ran)."""
    if not o.ok:
        failed[pid] = o
        return value
    finished.add(pid)
    return o.value if pid == STUDY else value


def _drive_result(pieces: list[Piece], finished: set[str], failed: dict[str, Outcome], value: Any) -> DriveResult:
    blocked = tuple(p.id for p in pieces if p.id not in finished and p.id not in failed)
    return DriveResult(tuple(sorted(finished)), failed, blocked, value)


_START_ORDER = {"prepare": 0, "prepare_holdout": 0, "pretrain": 1}  # the rest after, in the graph's order


def _drive_streaming(run: RunFolder, graph: Callable[[], list[Piece]], executor: LocalExecutor,
                     call: PieceCall) -> DriveResult:
    """`drive` without waves: every piece whose needs are finished is started at once (the pool queues what
    finds no free process) and each finished piece frees what waits for it."""
    finished: set[str] = set()
    failed: dict[str, Outcome] = {}
    running: dict[str, Future] = {}
    value = None
    with executor.submitter(call) as submit:
        while True:
            pieces = graph()
            finished |= {p.id for p in pieces if p.id not in finished and p.id not in running and is_done(run, p)}
            ready = [p for p in pieces if p.id not in finished and p.id not in failed and p.id not in running
                     and all(n in finished for n in p.needs)]
            for p in sorted(ready, key=lambda p: _START_ORDER.get(p.kind, 2)):
                log.info("start: %s", p.id)
                running[p.id] = submit(p)
            if not running:
                break
            done, _ = wait(list(running.values()), return_when=FIRST_COMPLETED)
            for pid in [pid for pid, fut in running.items() if fut in done]:
                value = _settle(pid, _result(running.pop(pid)), finished, failed, value)
    return _drive_result(pieces, finished, failed, value)


def run_study_pieces(data: str | Path, out: str | Path, config: StudyConfig, *, test_data: str | Path | None = None,
                     report: bool = True, executor: Executor | None = None, threads: int | None = None):
    """`run_study` as a graph of pieces on `executor` (default: the one `config.executor` names), each local
    piece on `threads` torch threads (None: this process's count, or cores / workers in worker processes; a
    SLURM job: its CPUs). Returns
    the StudyResult of the last piece; raises PiecesFailed when a piece failed (a rerun resumes), or the
    error itself when one piece failed in this process with a CmrPriorError before any was finished."""
    from cmrprior.experiments.study import check_study_inputs

    run = RunFolder(check_out_dir(out, [data, test_data]))
    executor = executor or make_executor(config.executor)
    with run_lock(run.root):
        check_study_inputs(run, data, test_data, config)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic.write_json(run.pieces / DRIVER_JSON, {"pid": os.getpid(), "executor": config.executor.kind,
                                                     "report": report, "started": started})
        call = PieceCall(str(run.root), str(data), None if test_data is None else str(test_data), config, report,
                         threads)
        result = drive(run, lambda: study_graph(run, config, holdout=test_data is not None, report=report),
                       executor, call)
    if result.failed:
        only = next(iter(result.failed.values()))
        if len(result.failed) == 1 and isinstance(only.exc, CmrPriorError) and not result.finished:
            raise only.exc  # e.g. bad input found by `prepare`: the error as `run_study` gives it
        lines = [f"{pid}: {o.error}" + (f" (log {o.log})" if o.log else "") for pid, o in sorted(result.failed.items())]
        raise PiecesFailed(f"{run.root}: {len(result.failed)} piece(s) of the study failed, {len(result.blocked)} "
                           f"wait for them; re-run the same command to resume them (`cmrprior study --status "
                           f"{run.root}` lists them):\n  " + "\n  ".join(lines))
    return result.value

