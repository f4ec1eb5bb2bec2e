"""A SLURM job's piece stops at SIGTERM (no scheduler needed).

SLURM ends a job (scancel, requeue, pre-emption, time limit) with SIGTERM and kills it KillWait seconds later;
submitit only logs SIGTERM. A cancelled piece that ran on through KillWait could finish and leave a result, and
the study driver would count a cancelled job as done.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

import pytest

from cmrprior.experiments.pieces import STATE_JSON, Piece, PieceCall, PieceStopped, piece_status
from cmrprior.experiments.slurm import _Job
from cmrprior.runs import RunFolder
from cmrprior.runs.records import read_json

from .study_doubles import tiny_config

PIECE = Piece("splits/split_0/pretrain/full/tiny/simclr_bs16", "pretrain", split="split_0", resources="pretrain")


@dataclass(frozen=True)
class _Epochs(PieceCall):
    """A piece of 50 short epochs that gets SIGTERM (as from scancel) during its third."""

    def _run(self, run, piece):
        done = []
        for epoch in range(50):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            done.append(epoch)
            (run.root / "epochs.txt").write_text(" ".join(map(str, done)))
        return "finished"


def test_a_slurm_job_stops_its_piece_at_sigterm(tmp_path):
    run = RunFolder(tmp_path / "run")
    previous, handlers = signal.getsignal(signal.SIGTERM), list(logging.root.handlers)
    signal.signal(signal.SIGTERM, lambda *_: None)  # what submitit installs before it calls the job
    try:
        with pytest.raises(PieceStopped, match="SIGTERM"):
            _Job(_Epochs(str(run.root), "data", None, tiny_config()))(PIECE)
    finally:
        signal.signal(signal.SIGTERM, previous)
        logging.root.handlers[:] = handlers
    assert (run.root / "epochs.txt").read_text() == "0 1"  # stopped in the epoch the signal reached
    state = read_json(run.piece_dir(PIECE.id) / STATE_JSON)
    assert state["state"] == "stopped" and "SIGTERM" in state["error"]
    status = piece_status(run, PIECE)
    assert status.state == "stopped" and "SIGTERM" in status.detail and "a rerun resumes it" in status.detail
