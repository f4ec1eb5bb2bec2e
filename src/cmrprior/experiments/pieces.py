"""The study as a graph of pieces, each run alone (in this process, another process, or a cluster job).

A piece is named by its output folder in the run folder (`RunFolder` owns the layout) or by a fixed name:

* `prepare`: check the inputs, locate and segment the cohort, write `run.json` and `splits.json` (its marker);
* `holdout/prepared`: the --test cohort prepared (when there is one);
* `splits/split_i/pretrain/IMAGES/BACKBONE/<pretext folder>` (`RunFolder.pretrain_dir`: `simclr_bsN`, `teacher`, ...): one pre-training;
* `splits/split_i/cells/BACKBONE/INIT__IMAGES`: one diagnosis model, after the pre-trainings its init reads;
  the same under `holdout/` for the held-out training and scoring;
* `saliency`: saliency of every finished cell; `study`: tables, the anatomy model and hybrids, the held-out
  tables, the exported bundles and the report (`run_study` itself, which trains nothing here: every cell
  is finished by then, and a failed one is left for a rerun as in one process).

Each piece calls the study's own stage functions (`cmrprior.experiments.study`), so its outputs are those of
`run_study`: a finished piece is skipped (its marker: `done.json`, an ok `result.json`, `splits.json`), a
killed one resumes as in one process. A piece holds the lock of its own folder under `RUN/pieces/` (never
the run folder's, which the driver holds) and records its state there (`state.json`, `log.txt`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmrprior.errors import CmrPriorError
from cmrprior.experiments.config import StudyConfig
from cmrprior.runs import HOLDOUT, CellKey, RunFolder
from cmrprior.runs.records import read_json
from cmrprior.utils import atomic
from cmrprior.utils.logs import log_file
from cmrprior.utils.runlock import lock_holder, run_lock

log = logging.getLogger(__name__)

PREPARE, PREPARE_HOLDOUT, SALIENCY, STUDY = "prepare", f"{HOLDOUT}/prepared", "saliency", "study"
STATE_JSON, SUBMITTED_JSON, LOG_TXT = "state.json", "submitted.json", "log.txt"
DRIVER_JSON = "driver.json"  # RUN/pieces/driver.json: how the last driver ran the study (its graph's inputs)


class PieceStopped(BaseException):
    """A piece stopped from outside (a cluster job cancelled, requeued or out of time): not an error of the piece,
    and no result (a BaseException, so that submitit writes none); a rerun resumes it."""


@dataclass(frozen=True)
class Piece:
    """One piece: `id` (its folder relative to the run folder, or a fixed name), `kind` (prepare,
    prepare_holdout, pretrain, cell, saliency, study), the split it works on, the ids it waits for, and its
    resource class (`executor_config.RESOURCE_CLASSES`)."""

    id: str
    kind: str
    needs: tuple[str, ...] = ()
    split: str | None = None
    resources: str = "cell"


def _rel(run: RunFolder, folder: Path) -> str:
    return folder.relative_to(run.root).as_posix()


def study_graph(run: RunFolder, config: StudyConfig, *, holdout: bool, report: bool = True) -> list[Piece]:
    """The pieces of the study in an order that respects `needs`. Before `prepare` has written the splits
    only the preparation pieces are known; the driver asks again after each wave."""
    from cmrprior.experiments.study_inputs import pretrain_runs

    pieces = [Piece(PREPARE, "prepare", resources="prepare")]
    if holdout:
        pieces.append(Piece(PREPARE_HOLDOUT, "prepare_holdout", (PREPARE,), HOLDOUT, "prepare"))
    splits = run.splits()
    if splits is None:
        return pieces
    c = config.classifier
    names = [s.name for s in splits] + ([HOLDOUT] if holdout else [])
    cells = []
    for split in names:
        base = (PREPARE_HOLDOUT,) if split == HOLDOUT else (PREPARE,)
        for backbone in c.backbones:
            runs = pretrain_runs(run, split, backbone, config)
            seen = set()
            for folder in (r.folder for init_runs in runs.values() for r in init_runs):
                if folder not in seen:
                    seen.add(folder)
                    pieces.append(Piece(_rel(run, folder), "pretrain", base, split, "pretrain"))
            for init in c.inits:
                needs = tuple(_rel(run, r.folder) for r in runs.get(init, ())) or base
                for kind in c.images:
                    cell = _rel(run, run.cell_dir(CellKey(split, backbone, init, kind)))
                    cells.append(cell)
                    pieces.append(Piece(cell, "cell", needs, split, "cell"))
    last = tuple(cells) or ((PREPARE_HOLDOUT,) if holdout else (PREPARE,))
    if report:
        pieces.append(Piece(SALIENCY, "saliency", last, resources="saliency"))
        last = (SALIENCY,)
    pieces.append(Piece(STUDY, "study", last, resources="report"))
    return pieces


def is_done(run: RunFolder, piece: Piece) -> bool:
    """Whether the piece's outputs are on disk (its marker). `saliency` and `study` redo only what is missing
    and so run once in every driver invocation: never "done" here."""
    from cmrprior.experiments.cohort_data import is_prepared

    if piece.kind == "prepare":
        return run.splits_json.exists()
    if piece.kind == "prepare_holdout":
        return is_prepared(run.prepared(HOLDOUT))
    if piece.kind == "pretrain":
        return (run.root / piece.id / "done.json").exists()
    if piece.kind == "cell":
        path = run.root / piece.id / "result.json"
        return path.exists() and read_json(path).get("status") == "ok"
    return False


@dataclass(frozen=True)
class PieceCall:
    """What every piece of one study needs, picklable (sent to worker processes and cluster jobs):
    `call(piece)` runs that piece."""

    out: str
    data: str
    test_data: str | None
    config: StudyConfig
    report: bool = True
    threads: int | None = None  # torch threads in this piece (a cluster job: its CPUs); None: torch's default
    # processes that the `prepare` piece, which runs before every other piece and so alone, may start for its
    # per-patient work (locating the heart, preparing): the local workers' count; its results do not depend on it
    processes: int = 1

    def __call__(self, piece: Piece) -> Any:
        run = RunFolder(self.out)
        folder = run.piece_dir(piece.id)
        with run_lock(folder), log_file(folder / LOG_TXT):
            import torch

            if self.threads is not None:
                torch.set_num_threads(self.threads)
            # the thread count is recorded because results depend on it (the order in which floats are summed)
            state = {"piece": piece.id, "host": socket.gethostname(), "pid": os.getpid(),
                     "job_id": _slurm_job_id(), "started": _now(), "torch_threads": torch.get_num_threads()}
            atomic.write_json(folder / STATE_JSON, {**state, "state": "running"})
            try:
                value = self._run(run, piece)
            except BaseException as exc:
                ended = "stopped" if isinstance(exc, PieceStopped) else "failed"
                atomic.write_json(folder / STATE_JSON, {**state, "state": ended, "ended": _now(),
                                                        "error": f"{type(exc).__name__}: {exc}",
                                                        "traceback": traceback.format_exc(limit=8)})
                raise
            atomic.write_json(folder / STATE_JSON, {**state, "state": "done", "ended": _now()})
            return value

    def _run(self, run: RunFolder, piece: Piece) -> Any:
        from cmrprior.experiments import cohort_data, study

        config = self.config
        if piece.kind == "prepare":
            study.prepare_study(run, self.data, config, self.test_data, workers=self.processes)
            return None
        if piece.kind == "prepare_holdout":
            study.holdout_inputs(run, self.test_data, config, study.study_cohort(run, self.data, config))
            return None
        if piece.kind in ("pretrain", "cell"):
            target = run.root / piece.id
            cohort = study.study_cohort(run, self.data, config)
            masks = cohort.masks
            if piece.split == HOLDOUT:
                images, split, hold = study.holdout_inputs(run, self.test_data, config, cohort)
                masks = cohort_data.holdout_masks(cohort, hold)
            else:
                images = cohort.images
                split = next(s for s in run.splits() if s.name == piece.split)
            study.run_split(run, split, images, config, classes=cohort.prepared.classes, masks=masks,
                            select=lambda folder: folder == target)
            return None
        if piece.kind == "saliency":
            from cmrprior.saliency.run import run_saliency

            try:
                run_saliency(run.root)
            except CmrPriorError as exc:  # as in one process: saliency must not lose a finished study
                log.error("saliency failed: %s", exc)
            return None
        if piece.kind == "study":
            return study.run_study(self.data, run.root, config, test_data=self.test_data, report=self.report,
                                   lock=False, select=lambda folder: False)
        raise ValueError(f"unknown piece kind {piece.kind!r}")


def _slurm_job_id() -> str | None:
    """This SLURM job's id as squeue shows it ("123", or "123_4" for a task of an array), None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class PieceStatus:
    """One line of `cmrprior study --status`: state is done | running | failed | stopped | queued | pending."""

    piece: Piece
    state: str
    detail: str = ""
    log: Path | None = None


def piece_status(run: RunFolder, piece: Piece) -> PieceStatus:
    """The state of one piece from its marker, its lock and its records under `RUN/pieces/`."""
    folder = run.piece_dir(piece.id)
    state = read_json(folder / STATE_JSON) if (folder / STATE_JSON).exists() else None
    submitted = read_json(folder / SUBMITTED_JSON) if (folder / SUBMITTED_JSON).exists() else None
    log_path = Path(submitted["log"]) if submitted and submitted.get("log") else (
        folder / LOG_TXT if (folder / LOG_TXT).exists() else None)
    job = f"job {submitted['job_id']}" if submitted and submitted.get("job_id") else ""
    holder = lock_holder(folder)
    if holder is not None:
        where = f"{state.get('host')} pid {state.get('pid')}" if state else f"pid {holder}"
        return PieceStatus(piece, "running", ", ".join(x for x in (job, where, f"since {state['started']}"
                                                                    if state else "") if x), log_path)
    result = run.root / piece.id / "result.json"
    if piece.kind == "cell" and result.exists() and not is_done(run, piece):  # a cell that ended "failed" or
        r = read_json(result)                                                  # "unavailable": retried on a rerun
        return PieceStatus(piece, "failed" if r.get("status") == "failed" else "done",
                           f"cell {r.get('status')}: {r.get('reason')}", log_path)
    if is_done(run, piece) or (state is not None and state["state"] == "done"):
        return PieceStatus(piece, "done", job, log_path)
    if state is not None and state["state"] == "failed":
        return PieceStatus(piece, "failed", state.get("error", ""), log_path)
    if state is not None and state["state"] in ("running", "stopped"):
        why = state.get("error", "killed, cancelled or out of time")
        return PieceStatus(piece, "stopped", f"{job} ended without finishing ({why}); a rerun resumes it".strip(),
                           log_path)
    if submitted is not None:
        return PieceStatus(piece, "queued", job, log_path)
    return PieceStatus(piece, "pending", "", log_path)


def study_status(out: str | Path) -> tuple[list[PieceStatus], str | None]:
    """Every piece of the study in run folder `out` with its state, and who holds the run folder's lock (the
    driver or a one-process study: its pid) or None. Raises DataError when `out` is not a study run folder."""
    from cmrprior.errors import DataError

    run = RunFolder(out)
    if not run.config_yaml.exists():
        raise DataError(run.root, "not a study run folder (config.yaml missing): nothing to report")
    config = StudyConfig.from_yaml(run.config_yaml)
    driver = run.pieces / DRIVER_JSON
    report = read_json(driver)["report"] if driver.exists() else True
    graph = study_graph(run, config, holdout=run.bound_input("test_data") is not None, report=report)
    return [piece_status(run, p) for p in graph], lock_holder(run.root)
