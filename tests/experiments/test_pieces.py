"""The study as a graph of pieces: dependency order, waves, skipping finished pieces, failures, the status
report, and a run through the local executor that gives the tables of `run_study` byte for byte."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cmrprior.cli import main
from cmrprior.errors import ConfigError
from cmrprior.experiments import executors as ex
from cmrprior.experiments.config import apply_overrides
from cmrprior.experiments.executors import LocalExecutor, Outcome, PiecesFailed, drive, run_study_pieces
from cmrprior.experiments.pieces import DRIVER_JSON, PREPARE, SALIENCY, STATE_JSON, STUDY, SUBMITTED_JSON, Piece, piece_status, study_graph
from cmrprior.experiments.study import run_study
from cmrprior.runs import HOLDOUT, RunFolder, SplitSpec
from cmrprior.utils import atomic
from cmrprior.utils.runlock import run_lock

from .study_doubles import RecordingPretrain, install_cohort, tiny_cohort, tiny_config

SPLITS = [SplitSpec("0", 1, ("a", "b"), ("c",)), SplitSpec("1", 2, ("a", "c"), ("b",))]


def _config(**over):
    return tiny_config(classifier={"inits": ["none", "full_sscl", "seg_teacher"], "images": ["full", "segmented"]},
                       pretrain={"batch_sizes": [16, 32]}, **over)


def _write_marker(run: RunFolder, piece: Piece, status: str = "ok") -> None:
    """What a finished piece leaves: splits.json, done.json, result.json (the markers `is_done` reads)."""
    if piece.kind == "prepare":
        run.write_splits(SPLITS)
    elif piece.kind == "prepare_holdout":
        for name in ("cohort.json", "masks.json"):
            atomic.write_json(run.prepared(HOLDOUT) / name, {})
    elif piece.kind == "pretrain":
        atomic.write_json(run.root / piece.id / "done.json", {})
    elif piece.kind == "cell":
        atomic.write_json(run.root / piece.id / "result.json", {"status": status, "reason": "boom"})


class FakeExecutor:
    """Runs a wave by writing each piece's marker; `fail` ids end failed; records every wave."""

    def __init__(self, fail=()):
        self.waves: list[list[str]] = []
        self.fail = set(fail)

    def run_wave(self, run, pieces, call):
        self.waves.append([p.id for p in pieces])
        out = {}
        for p in pieces:
            if p.id in self.fail:
                out[p.id] = Outcome(False, error="RuntimeError: boom", log=Path("/logs") / "1_0_log.out")
            else:
                _write_marker(run, p)
                out[p.id] = Outcome(True, value="the result" if p.id == STUDY else None)
        return out


def test_graph_lists_every_piece_after_what_it_needs(tmp_path):
    run = RunFolder(tmp_path)
    cfg = _config()
    assert [p.id for p in study_graph(run, cfg, holdout=True)] == [PREPARE, f"{HOLDOUT}/prepared"]  # no splits yet
    run.write_splits(SPLITS)
    pieces = study_graph(run, cfg, holdout=True)
    ids = [p.id for p in pieces]
    assert len(ids) == len(set(ids))
    for i, p in enumerate(pieces):
        assert set(p.needs) <= set(ids[:i]), p.id
    # per split (2 + held-out): SimCLR on full images at 2 batch sizes + the Seg-teacher; 3 inits x 2 images
    assert sum(p.kind == "pretrain" for p in pieces) == 3 * 3
    assert sum(p.kind == "cell" for p in pieces) == 3 * 6
    assert len(pieces) == 2 + 9 + 18 + 2
    by_id = {p.id: p for p in pieces}
    assert by_id["splits/split_0/cells/tiny/full_sscl__segmented"].needs == (
        "splits/split_0/pretrain/full/tiny/simclr_bs16", "splits/split_0/pretrain/full/tiny/simclr_bs32")
    assert by_id["splits/split_1/cells/tiny/seg_teacher__full"].needs == ("splits/split_1/pretrain/segmented/tiny/teacher",)
    assert by_id["splits/split_1/cells/tiny/none__full"].needs == (PREPARE,)
    assert by_id["holdout/cells/tiny/none__full"].needs == (f"{HOLDOUT}/prepared",)
    assert by_id["holdout/pretrain/full/tiny/simclr_bs16"].needs == (f"{HOLDOUT}/prepared",)
    cells = [p.id for p in pieces if p.kind == "cell"]
    assert by_id[SALIENCY].needs == tuple(cells) and by_id[STUDY].needs == (SALIENCY,)
    assert by_id["splits/split_0/pretrain/full/tiny/simclr_bs32"].resources == "pretrain"
    assert by_id[STUDY].resources == "report"
    no_report = study_graph(run, cfg, holdout=False, report=False)
    assert SALIENCY not in {p.id for p in no_report} and no_report[-1].needs == tuple(c for c in cells if "holdout" not in c)


def test_drive_runs_waves_in_order_and_skips_finished_pieces(tmp_path):
    run = RunFolder(tmp_path)
    cfg = _config()
    graph = lambda: study_graph(run, cfg, holdout=False)  # noqa: E731
    run.write_splits(SPLITS)
    done = [p for p in graph() if p.id in ("prepare", "splits/split_0/pretrain/full/tiny/simclr_bs16",
                                            "splits/split_1/cells/tiny/none__full")]
    for p in done:
        _write_marker(run, p)
    failed_cell = next(p for p in graph() if p.id == "splits/split_1/cells/tiny/none__segmented")
    _write_marker(run, failed_cell, status="failed")  # a cell that ended "failed" is run again, as in one process
    fake = FakeExecutor()
    result = drive(run, graph, fake, call=None)
    assert result.value == "the result" and not result.failed and not result.blocked
    ran = [pid for wave in fake.waves for pid in wave]
    assert len(ran) == len(set(ran)) and not {p.id for p in done} & set(ran)
    assert failed_cell.id in fake.waves[0]
    # wave 1: the pre-trainings left and the cells that need none; then the cells that waited; saliency; study
    assert set(fake.waves[0]) == {p.id for p in graph() if p.kind == "pretrain" or p.id.endswith(("none__full", "none__segmented"))} - {p.id for p in done}
    assert {pid.rsplit("/", 1)[1].split("__")[0] for pid in fake.waves[1]} == {"full_sscl", "seg_teacher"}
    assert fake.waves[2:] == [[SALIENCY], [STUDY]]
    again = FakeExecutor()
    drive(run, graph, again, call=None)  # everything has its marker: only the pieces that always run
    assert again.waves == [[SALIENCY], [STUDY]]


def test_a_failed_piece_blocks_only_what_needs_it_and_the_run_says_which(tmp_path, monkeypatch):
    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})
    cfg = _config()
    run = RunFolder(tmp_path / "run")
    bad = "splits/split_0/pretrain/segmented/tiny/teacher"
    fake = FakeExecutor(fail={bad})
    with pytest.raises(PiecesFailed) as err:
        run_study_pieces("COHORT", run.root, cfg, executor=fake)
    ran = {pid for wave in fake.waves for pid in wave}
    assert "splits/split_0/cells/tiny/seg_teacher__full" not in ran and "splits/split_1/cells/tiny/seg_teacher__full" in ran
    assert "splits/split_0/cells/tiny/full_sscl__full" in ran and STUDY not in ran and SALIENCY not in ran
    text = str(err.value)
    assert f"{bad}: RuntimeError: boom (log /logs/1_0_log.out)" in text and "1 piece(s) of the study failed" in text
    assert "4 wait for them" in text  # split 0's two Seg-teacher cells, saliency, study
    assert (run.root / "config.yaml").exists() and (run.root / "inputs.json").exists()  # checked by the driver


def test_status_of_each_piece_and_the_cli_lines(tmp_path, capsys):
    run = RunFolder(tmp_path / "run")
    cfg = _config()
    atomic.write_text(run.config_yaml, cfg.to_yaml())
    run.write_splits(SPLITS)
    pieces = {p.id: p for p in study_graph(run, cfg, holdout=False)}
    ids = ["splits/split_0/pretrain/full/tiny/simclr_bs16", "splits/split_0/pretrain/full/tiny/simclr_bs32",
           "splits/split_0/cells/tiny/none__full", "splits/split_0/cells/tiny/none__segmented",
           "splits/split_1/cells/tiny/none__full", "splits/split_1/cells/tiny/none__segmented"]
    _write_marker(run, pieces[PREPARE])
    _write_marker(run, pieces[ids[0]])
    atomic.write_json(run.piece_dir(ids[1]) / STATE_JSON, {"state": "running", "host": "n1", "pid": 1, "started": "t"})
    atomic.write_json(run.piece_dir(ids[1]) / SUBMITTED_JSON, {"job_id": "77_1", "log": "/jobs/77_1_log.out"})
    atomic.write_json(run.piece_dir(ids[2]) / STATE_JSON, {"state": "failed", "error": "ValueError: bad", "started": "t"})
    atomic.write_json(run.piece_dir(ids[3]) / SUBMITTED_JSON, {"job_id": "78_0", "log": "/jobs/78_0_log.out"})
    _write_marker(run, pieces[ids[4]], status="failed")
    states = {pid: piece_status(run, pieces[pid]) for pid in ids}
    assert states[ids[0]].state == "done"
    assert states[ids[1]].state == "stopped" and "77_1" in states[ids[1]].detail
    assert states[ids[1]].log == Path("/jobs/77_1_log.out")
    assert (states[ids[2]].state, states[ids[2]].detail) == ("failed", "ValueError: bad")
    assert states[ids[3]].state == "queued"
    assert (states[ids[4]].state, states[ids[4]].detail) == ("failed", "cell failed: boom")
    assert piece_status(run, pieces[ids[5]]).state == "pending"
    with run_lock(run.piece_dir(ids[1])):  # a live process holds the piece: running, with its job
        atomic.write_json(run.piece_dir(ids[1]) / STATE_JSON, {"state": "running", "host": "n1", "pid": 1, "started": "t"})
        assert piece_status(run, pieces[ids[1]]).state == "running"
        assert main(["study", "--status", str(run.root)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"{run.root}: {len(pieces)} pieces: ") and "2 failed" in lines[0]
    assert f"  running  {ids[1]}  job 77_1, n1 pid 1, since t  log: /jobs/77_1_log.out" in lines
    assert f"  failed   {ids[2]}  ValueError: bad" in lines
    assert main(["study", "--status", str(tmp_path / "nothing")]) == 3
    assert f"  pending  {SALIENCY}" in lines
    atomic.write_json(run.pieces / DRIVER_JSON, {"report": False})  # the last driver ran without saliency/report
    main(["study", "--status", str(run.root)])
    assert SALIENCY not in capsys.readouterr().out


def test_slurm_executor_without_submitit_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit":
            raise ImportError("No module named 'submitit'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    cfg = apply_overrides(_config(), {"executor.kind": "slurm"})
    with pytest.raises(ConfigError, match=r"pip install 'cmrprior\[cluster\]'"):
        ex.make_executor(cfg.executor)  # imports cmrprior.experiments.slurm


def test_executor_settings_are_checked_and_left_out_of_the_digest():
    cfg = _config()
    slurm = apply_overrides(cfg, {"executor.kind": "slurm", "executor.slurm.partition": "gpu",
                                  "executor.slurm.pretrain.gpus": 2})
    assert slurm.digest() == cfg.digest() and slurm.executor.slurm.resources("pretrain").gpus == 2
    assert slurm.executor.slurm.resources("report").gpus == 0 and slurm.executor.by_pieces
    for key, value, message in (("executor.kind", "pbs", "executor.kind must be one of"),
                                ("executor.slurm.cell.gpu", 1, r"unknown key\(s\) \['gpu'\]"),
                                ("executor.slurm.max_running", 0, "max_running >= 1"),
                                ("executor.workers", 0, "executor.workers must be >= 1")):
        with pytest.raises(ConfigError, match=message):
            apply_overrides(cfg, {key: value})


def test_pieces_on_the_local_executor_give_the_tables_of_run_study(tmp_path, monkeypatch):
    """Pieces in this process (and a held-out cohort): the same tables, byte for byte, as one `run_study`."""
    RecordingPretrain().install(monkeypatch)
    train = tiny_cohort(n_patients=14, classes=("ICM", "NICM"))
    hold = tiny_cohort(n_patients=8, classes=("ICM", "NICM"), seed=9, prefix="t")
    install_cohort(monkeypatch, {"TRAIN": train, "HOLD": hold})
    cfg = tiny_config(classifier={"inits": ["none", "segmented_sscl"], "images": ["segmented"]})
    one = run_study("TRAIN", tmp_path / "one", cfg, test_data="HOLD", report=False)
    res = run_study_pieces("TRAIN", tmp_path / "pieces", cfg, test_data="HOLD", report=False, executor=LocalExecutor(1))
    assert res.n_ok == one.n_ok == res.n_cells == 6
    names = sorted(p.name for p in (tmp_path / "one" / "tables").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "pieces" / "tables").iterdir()) and "holdout_table2.json" in names
    for name in names:
        assert (tmp_path / "pieces" / "tables" / name).read_bytes() == (tmp_path / "one" / "tables" / name).read_bytes(), name
    state = json.loads((tmp_path / "pieces" / "pieces" / "holdout" / "cells" / "tiny" / "segmented_sscl__segmented"
                        / STATE_JSON).read_text())
    assert state["state"] == "done" and state["pid"] == os.getpid()
    assert "pretrain" in (tmp_path / "pieces" / "pieces" / "holdout" / "pretrain" / "segmented" / "tiny" / "simclr_bs16"
                          / "log.txt").read_text()


@dataclass(frozen=True)
class _PidCall:
    """A stand-in PieceCall for worker processes: records the process that ran each piece; `bad` fails."""

    folder: str
    threads: int | None = None
    processes: int = 1

    def __call__(self, piece):
        if piece.id == "bad":
            raise RuntimeError("boom in a worker")
        Path(self.folder, piece.id).write_text(f"{os.getpid()} {self.threads} {self.processes}")
        return piece.id


def test_local_pool_runs_a_wave_in_worker_processes(tmp_path):
    pieces = [Piece("a", "cell"), Piece("b", "cell"), Piece("bad", "cell")]
    out = LocalExecutor(2).run_wave(RunFolder(tmp_path), pieces, _PidCall(str(tmp_path), threads=1))
    assert out["a"].ok and out["a"].value == "a" and out["b"].ok
    assert not out["bad"].ok and out["bad"].error == "RuntimeError: boom in a worker"
    runs = [Path(tmp_path, x).read_text().split() for x in ("a", "b")]
    assert all(pid != str(os.getpid()) for pid, _, _ in runs) and all(t == "1" for _, t, _ in runs)
    # a piece may start as many processes as there are workers (only `prepare`, which runs alone, does)
    assert all(n == "2" for _, _, n in runs)


def test_cli_executor_options_choose_the_pieces_driver(tmp_path, monkeypatch):
    import cmrprior.experiments.study as study_mod

    seen = {}

    def fake(name):
        def run(data, out, config, test_data=None, **kwargs):
            seen[name] = (config.executor, kwargs)
            raise SystemExit(0)
        return run

    monkeypatch.setattr(ex, "run_study_pieces", fake("pieces"))
    monkeypatch.setattr(study_mod, "run_study", fake("one"))
    (tmp_path / "data").mkdir()
    base = ["study", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit):
        main(base + ["--executor", "slurm", "--slurm-partition", "gpu", "--slurm-max-running", "5", "--no-report"])
    executor, kwargs = seen.pop("pieces")
    assert (executor.kind, executor.slurm.partition, executor.slurm.max_running, kwargs) == (
        "slurm", "gpu", 5, {"report": False, "threads": None})
    with pytest.raises(SystemExit):
        main(base + ["--workers", "2", "--threads", "1"])
    executor, kwargs = seen.pop("pieces")
    assert executor.workers == 2 and kwargs["threads"] == 1  # each worker on the threads asked for
    with pytest.raises(SystemExit):
        main(base)  # the default: the study in one call, as always
    assert seen.pop("one")[0].kind == "local" and not seen
    assert main(["study", "--out", str(tmp_path / "run")]) == 2  # no --data and no --status

    def failing(*args, **kwargs):
        raise PiecesFailed("RUN: 1 piece(s) of the study failed")

    monkeypatch.setattr(ex, "run_study_pieces", failing)
    assert main(base + ["--executor", "slurm"]) == 1  # as failed cells in one process: a rerun resumes


@dataclass
class _OrderCall:
    """A stand-in PieceCall run in threads: `slow` waits (at most 20 s) for `needs_quick` to start, and records
    whether it did; every piece records its start (fields shared by the copies the executor makes)."""

    needer_started: threading.Event = field(default_factory=threading.Event)
    started: list = field(default_factory=list)
    seen: dict = field(default_factory=dict)
    threads: int | None = None
    processes: int = 1

    def __call__(self, piece):
        self.started.append(piece.id)
        if piece.id == "needs_quick":
            self.needer_started.set()
        if piece.id == "slow":
            self.seen["slow saw needs_quick"] = self.needer_started.wait(timeout=20)
        return piece.id


def test_processes_start_a_piece_as_soon_as_its_needs_are_finished(tmp_path):
    """With several workers there is no wave barrier: a piece that needs a quick piece starts while a slow piece
    of the same wave is still running (in waves it would wait for the slow one), and pre-trainings start first."""
    from concurrent.futures import ThreadPoolExecutor

    pieces = [Piece("quick", "cell"), Piece("slow", "pretrain"), Piece("needs_quick", "cell", needs=("quick",)),
              Piece(STUDY, "study", needs=("slow", "needs_quick"))]
    call = _OrderCall()
    result = drive(RunFolder(tmp_path), lambda: pieces, LocalExecutor(2, pool=ThreadPoolExecutor, gpus=()), call)
    assert call.seen == {"slow saw needs_quick": True}
    assert call.started[0] == "slow" and call.started[-1] == STUDY  # the pre-training is handed over first
    assert result.value == STUDY and set(result.finished) == {p.id for p in pieces} and not result.failed


def test_processes_without_waves_still_block_only_what_needs_a_failed_piece(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    pieces = [Piece("bad", "cell"), Piece("a", "cell"), Piece("after_bad", "cell", needs=("bad",)),
              Piece("after_a", "cell", needs=("a",))]
    result = drive(RunFolder(tmp_path), lambda: pieces, LocalExecutor(2, pool=ThreadPoolExecutor, gpus=()), _PidCall(str(tmp_path)))
    assert set(result.finished) == {"a", "after_a"} and set(result.failed) == {"bad"}
    assert result.failed["bad"].error == "RuntimeError: boom in a worker" and result.blocked == ("after_bad",)


@dataclass(frozen=True)
class _GpuCall:
    """A stand-in PieceCall for worker processes: records the GPU ids the process sees, after waiting (at most
    60 s) until every piece has started, so that each piece runs in its own process."""

    folder: str
    pieces: tuple[str, ...]
    threads: int | None = None
    processes: int = 1

    def __call__(self, piece):
        import time

        Path(self.folder, piece.id + ".started").write_text("")
        deadline = time.time() + 60
        while time.time() < deadline and not all(Path(self.folder, p + ".started").exists() for p in self.pieces):
            time.sleep(0.05)
        return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_local_workers_are_each_pinned_to_one_gpu(tmp_path):
    """On a machine with GPUs (here two ids given as the GPUs it sees) each worker process sees one of them."""
    pieces = [Piece("a", "pretrain"), Piece("b", "pretrain")]
    out = LocalExecutor(2, gpus=("3", "5")).run_wave(RunFolder(tmp_path), pieces, _GpuCall(str(tmp_path), ("a", "b")))
    assert sorted(o.value for o in out.values()) == ["3", "5"]
    none = LocalExecutor(2, gpus=()).run_wave(RunFolder(tmp_path / "x"), pieces, _GpuCall(str(tmp_path), ("a", "b")))
    assert {o.value for o in none.values()} == {os.environ.get("CUDA_VISIBLE_DEVICES")}  # left as it was


def test_the_gpus_a_process_sees(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 7")
    assert ex.visible_gpus() == ("2", "7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # CUDA hidden
    assert ex.visible_gpus() == ()


def test_the_prepare_piece_hands_its_processes_to_the_preparation(tmp_path, monkeypatch):
    import cmrprior.experiments.study as study_mod
    from cmrprior.experiments.pieces import PieceCall

    import torch

    seen = []
    monkeypatch.setattr(study_mod, "prepare_study", lambda run, data, config, test, *, workers=1: seen.append(workers))
    before = torch.get_num_threads()
    try:
        call = PieceCall(str(tmp_path / "run"), str(tmp_path / "data"), None, tiny_config(), threads=1, processes=3)
        call(Piece(PREPARE, "prepare"))
    finally:
        torch.set_num_threads(before)
    assert seen == [3]
    state = json.loads((RunFolder(tmp_path / "run").piece_dir(PREPARE) / STATE_JSON).read_text())
    assert state["state"] == "done" and state["torch_threads"] == 1  # the count the piece's results depend on
    assert PieceCall(str(tmp_path / "run"), "d", None, tiny_config()).processes == 1  # one process unless told
