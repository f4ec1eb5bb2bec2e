"""The slurm executor: each wave of the study's pieces as SLURM job arrays, through submitit.

One job array per resource class of the wave (`executor.slurm.<class>`: GPUs, CPUs, memory, time limit), at
most `max_running` tasks of an array at once; a job's torch threads are its CPUs. A job that reaches its time
limit or is pre-empted is requeued (submitit's checkpoint, up to `max_requeues` times) and its piece resumes
from what it left on disk: the piece itself is the checkpoint. Logs: one folder per job under `RUN/jobs/`;
each piece's `submitted.json` names its job and log (`cmrprior study --status`).

Job states come from `squeue` (no accounting database needed): a job that left the queue without writing its
result was cancelled, killed or lost with its node, and its piece counts as failed (a rerun resumes it).
submitit is imported here only: `pip install 'cmrprior[cluster]'`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any

from cmrprior.errors import ConfigError
from cmrprior.experiments.executor_config import SlurmConfig
from cmrprior.experiments.executors import Outcome
from cmrprior.experiments.pieces import SUBMITTED_JSON, Piece, PieceCall, PieceStopped
from cmrprior.runs import RunFolder
from cmrprior.utils import atomic

log = logging.getLogger(__name__)


def _submitit():
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError("the slurm executor needs submitit: pip install 'cmrprior[cluster]' (or pip install "
                          "submitit) in this environment") from exc
    return submitit


class _Job:
    """The callable a SLURM job runs: one piece, with torch threads set to the job's CPUs. Requeued after a
    time limit or pre-emption (submitit calls `checkpoint`): the piece resumes from what it left on disk.

    SLURM ends a job (scancel, requeue, pre-emption, time limit) with SIGTERM, then SIGKILL KillWait seconds
    later (30 s by default). submitit ignores SIGTERM, so a cancelled piece would run on through KillWait and, when
    it ends in that time, write its result as if it had not been cancelled; the piece stops at SIGTERM instead
    (`PieceStopped`: no result, its state `stopped`), and a rerun or the requeued job resumes it."""

    def __init__(self, call: PieceCall) -> None:
        self.call = call

    def __call__(self, piece: Piece) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        signal.signal(signal.SIGTERM, _stop)  # replaces submitit's handler, which only logs it
        return self.call(piece)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


# squeue states of a job that will not run again (a requeued job shows PENDING or REQUEUED instead); "GONE":
# no longer listed (squeue forgets ended jobs)
ENDED = frozenset({"GONE", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "SPECIAL_EXIT"})


def _stop(signum: int, frame: Any) -> None:
    raise PieceStopped(f"the job received {signal.Signals(signum).name} from SLURM (cancelled, requeued, pre-empted "
                       "or out of time)")


def squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """State of each listed job id still known to the scheduler ("123" or array task "123_4"), None when
    squeue cannot be asked. A job that ended is absent (squeue forgets it)."""
    if not job_ids:
        return {}
    roots = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(roots)], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # an id the controller already forgot is an error when it is the only one asked for
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())


class SlurmExecutor:
    """Each wave as job arrays on a SLURM cluster (see the module docstring)."""

    def __init__(self, settings: SlurmConfig) -> None:
        self.settings = settings
        self.submitit = _submitit()

    def _executor(self, run: RunFolder, resources: str, n: int):
        s, r = self.settings, self.settings.resources(resources)
        ex = self.submitit.SlurmExecutor(folder=run.jobs / "%j", max_num_timeout=s.max_requeues)
        params = dict(job_name=f"cmrprior-{resources}", time=r.time_min, cpus_per_task=r.cpus, mem=f"{r.mem_gb}G",
                      array_parallelism=min(s.max_running, n), stderr_to_stdout=True,
                      signal_delay_s=min(90, max(10, r.time_min * 6)))
        params.update({k: v for k, v in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                                         ("gpus_per_node", r.gpus or None)) if v})
        if s.setup:
            params["setup"] = list(s.setup)
        ex.update_parameters(**params)
        return ex

    def run_wave(self, run: RunFolder, pieces: list[Piece], call: PieceCall) -> dict[str, Outcome]:
        groups: dict[str, list[Piece]] = defaultdict(list)
        for p in pieces:
            groups[p.resources].append(p)
        jobs = []
        for resources, group in groups.items():
            job_call = _Job(replace(call, threads=self.settings.resources(resources).cpus))
            submitted = self._executor(run, resources, len(group)).map_array(job_call, group)
            for piece, job in zip(group, submitted):
                atomic.write_json(run.piece_dir(piece.id) / SUBMITTED_JSON, {
                    "executor": "slurm", "job_id": job.job_id, "log": str(job.paths.stdout),
                    "resources": resources, "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                log.info("piece %s: SLURM job %s (%s), log %s", piece.id, job.job_id, resources, job.paths.stdout)
                jobs.append((piece, job))
        return self._wait(jobs)

    def _wait(self, jobs: list) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        missing: dict[str, int] = defaultdict(int)
        pending = list(jobs)
        while pending:
            time.sleep(self.settings.poll_s)
            states = squeue_states([j.job_id for _, j in pending])
            still = []
            for piece, job in pending:
                if job.paths.result_pickle.exists():
                    out[piece.id] = _job_outcome(job)
                    continue
                if states is not None and states.get(job.job_id, "GONE") in ENDED:
                    missing[job.job_id] += 1  # twice: a job that just ended may write its result in between
                    if missing[job.job_id] >= 2:
                        out[piece.id] = Outcome(False, error=f"SLURM job {job.job_id} ended without a result "
                                                "(cancelled, killed, out of memory or its node failed)",
                                                log=job.paths.stdout)
                        log.error("piece %s: %s", piece.id, out[piece.id].error)
                        continue
                still.append((piece, job))
            pending = still
        return out


def _job_outcome(job) -> Outcome:
    try:
        return Outcome(True, job.result(), log=job.paths.stdout)
    except Exception as exc:  # noqa: BLE001 - the job's own exception, with its log's tail
        line = str(exc).strip().splitlines()
        error = next((x for x in reversed(line) if x.strip()), type(exc).__name__)
        log.error("piece failed in SLURM job %s: %s (log %s)", job.job_id, error, job.paths.stdout)
        return Outcome(False, error=error, log=job.paths.stdout)
