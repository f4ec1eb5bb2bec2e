"""The study on a real SLURM scheduler (`scripts/slurm-local.sh start` brings one up on this machine):
tables byte-identical to a local run; a pre-training job cancelled with scancel after its first epoch, resumed by
a rerun; one requeued with scontrol (as pre-emption does), resumed by the job itself.

Marked `cluster` (not in the default run): `python -m pytest -m cluster tests/experiments/test_cluster.py`.
They skip, saying why, where sbatch/squeue/sinfo or submitit are missing or the cluster is down (they fail
instead with CMRPRIOR_REQUIRE_CLUSTER=1, as CI sets it once it has started the cluster).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

GOLDEN = Path(__file__).parent / "golden"
SRC = Path(__file__).resolve().parents[2] / "src"
# One CPU and no GPU per job (the local node has 2 CPUs): a job's torch threads are its CPUs, so its sums are
# those of the one-thread local run.
JOB = {"gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 30}
SLURM = {"max_running": 2, "poll_s": 1.0, **{k: JOB for k in ("prepare", "pretrain", "cell", "saliency", "report")}}


def _cluster_problem() -> str | None:
    missing = [c for c in ("sbatch", "squeue", "sinfo", "scancel") if shutil.which(c) is None]
    if missing:
        return f"no SLURM client commands ({', '.join(missing)}): run scripts/slurm-local.sh start (as root)"
    if importlib.util.find_spec("submitit") is None:
        return "submitit is not installed: pip install 'cmrprior[cluster]'"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s: the SLURM controller is down (scripts/slurm-local.sh start)"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return f"the SLURM cluster is down or has no usable node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The golden phantom cohort, its config with the slurm executor, and the tables of a local run."""
    problem = _cluster_problem()
    if problem and os.environ.get("CMRPRIOR_REQUIRE_CLUSTER"):  # CI, after starting the cluster
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)
    import torch

    from cmrprior.data.phantom import generate_phantom
    from cmrprior.experiments.config import StudyConfig
    from cmrprior.experiments.study import run_study

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    root = tmp_path_factory.mktemp("cluster")
    cohort = generate_phantom(root / "cohort", n_patients=18, seed=3, classes=("NOR", "DCM", "HCM"))
    config = StudyConfig.from_dict({**golden.CONFIG, "executor": {"kind": "slurm", "slurm": SLURM}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.process_time()
    run_study(cohort, root / "local", config, report=False)
    print(f"local run: {time.process_time() - t0:.0f} s CPU")
    torch.set_num_threads(threads)
    config_path = root / "config.yaml"
    config_path.write_text(config.to_yaml())
    return root, cohort, config_path


def _tables(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "tables").iterdir())}


def _cli(cohort: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "cmrprior", "study", "--data", str(cohort), "--out", str(out), "--config", str(config),
            "--executor", "slurm", "--set", "executor.slurm.max_running=2", "--no-report"]


def _env() -> dict:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(SRC) + (os.pathsep + path if path else "")}


def test_slurm_run_gives_the_tables_of_the_local_run(study):
    root, cohort, config = study
    out = root / "slurm"
    t0 = time.time()
    done = subprocess.run(_cli(cohort, out, config), capture_output=True, text=True, env=_env(), timeout=1800)
    print(f"slurm run: {time.time() - t0:.0f} s wall")
    assert done.returncode == 0, done.stderr[-3000:]
    local = _tables(root / "local")
    assert set(local) == set(_tables(out)) and "table1.json" in local
    for name, data in _tables(out).items():
        assert data == local[name], name
    # every piece ran as a job of its own, logged in the run folder
    status = subprocess.run([sys.executable, "-m", "cmrprior", "study", "--status", str(out)], capture_output=True,
                            text=True, env=_env())
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()[1:]
    assert lines and all(line.split()[0] == "done" for line in lines), status.stdout
    submitted = [json.loads(p.read_text()) for p in (out / "pieces").rglob("submitted.json")]
    assert len(submitted) == len(lines) and all(Path(s["log"]).is_file() for s in submitted)
    assert all(Path(s["log"]).is_relative_to(out / "jobs") for s in submitted)


def _job_state(job_id: str) -> str | None:
    """The job's state as the controller gives it (`scontrol show job`), None once it has forgotten the job."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    return next((f.split("=", 1)[1] for f in out.stdout.split() if f.startswith("JobState=")), None)


def _pretrain_mid_run(out: Path, timeout: float = 900) -> tuple[Path, str, int]:
    """A SimCLR pre-training piece whose job is RUNNING and has checkpointed at least one epoch (its first
    metrics.jsonl line: written after last.pt): its pieces folder, job id and the epochs it had finished."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        for state in (out / "pieces").rglob("state.json"):
            d = json.loads(state.read_text())
            if not ("/pretrain/" in d["piece"] and "/simclr_" in d["piece"] and d["state"] == "running"
                    and d.get("job_id")):
                continue
            metrics = out / d["piece"] / "run" / "metrics.jsonl"
            epochs = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            if epochs and _job_state(d["job_id"]) == "RUNNING":
                return state.parent, d["job_id"], epochs
        time.sleep(0.1)
    raise AssertionError(f"no pre-training job had finished an epoch in {timeout} s")


@pytest.fixture(scope="module")
def long_study(study):
    """The study's config with pre-trainings of 15 epochs, never stopped early (a job stopped after its first
    epoch has more to do), and the tables of a local run of it (`root/local_long`)."""
    root, cohort, config = study
    import torch

    from cmrprior.experiments.config import StudyConfig, load_config
    from cmrprior.experiments.study import run_study

    data = load_config(str(config)).to_dict()
    data["pretrain"] = {**data["pretrain"], "epochs": 15, "patience": 0}
    long = StudyConfig.from_dict(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_study(cohort, root / "local_long", long, report=False)
    finally:
        torch.set_num_threads(threads)
    path = root / "config_long.yaml"
    path.write_text(long.to_yaml())
    return root, cohort, path


def _interrupted_driver(cohort, out: Path, config, interrupt):
    """The study's driver started on the cluster into `out`; once a pre-training job is mid-run
    (`_pretrain_mid_run`), `interrupt(job_id)` acts on it, and the driver is waited for (killed if a step fails).
    Returns (the finished driver, its stderr, (piece folder, job id, epochs done), what `interrupt` returned)."""
    driver = subprocess.Popen(_cli(cohort, out, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env())
    try:
        mid_run = _pretrain_mid_run(out)
        acted = interrupt(mid_run[1])
        _, err = driver.communicate(timeout=1800)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver, err, mid_run, acted


def test_a_cancelled_job_is_resumed_by_a_rerun(long_study):
    root, cohort, config = long_study
    out = root / "killed"

    def cancel(job_id: str) -> str | None:
        subprocess.run(["scancel", job_id], check=True)  # what a user types: SIGTERM, SIGKILL KillWait s later
        t0 = time.time()
        while _job_state(job_id) in ("RUNNING", "COMPLETING") and time.time() - t0 < 120:
            time.sleep(0.2)
        return _job_state(job_id)

    driver, err, (folder, job_id, epochs), final = _interrupted_driver(cohort, out, config, cancel)
    piece = folder.relative_to(out / "pieces").as_posix()
    print(f"cancelled job {job_id} ({piece}) after {epochs} epoch(s); its state: {final}")
    assert final == "CANCELLED", final
    # the piece stopped at scancel's SIGTERM, without a result, rather than running on through KillWait
    state = json.loads((folder / "state.json").read_text())
    assert state["state"] == "stopped" and "SIGTERM" in state["error"], state
    assert driver.returncode == 1, err[-3000:]
    assert f"{piece}: SLURM job {job_id} ended without a result" in err and "re-run the same command" in err, err[-3000:]
    submitted = json.loads((folder / "submitted.json").read_text())
    assert f"(log {submitted['log']})" in err
    assert not (out / piece / "done.json").exists() and not (out / "tables" / "table1.json").exists()
    status = subprocess.run([sys.executable, "-m", "cmrprior", "study", "--status", str(out)], capture_output=True,
                            text=True, env=_env())
    assert status.returncode == 1 and f"stopped  {piece}  job {job_id}" in status.stdout, status.stdout
    prepared = json.loads((out / "pieces" / "prepare" / "state.json").read_text())
    t0 = time.time()
    again = subprocess.run(_cli(cohort, out, config), capture_output=True, text=True, env=_env(), timeout=1800)
    print(f"rerun after scancel: {time.time() - t0:.0f} s wall")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "pieces" / "prepare" / "state.json").read_text()) == prepared  # not run again
    assert (out / piece / "done.json").exists()
    # the rerun's job took the pre-training up where the cancelled one had checkpointed it, mid-run
    rerun_log = Path(json.loads((folder / "submitted.json").read_text())["log"]).read_text()
    _assert_resumed_mid_run(rerun_log, epochs)
    _assert_tables(out, root / "local_long")


def _assert_resumed_mid_run(job_log: str, epochs: int) -> None:
    """The job's log says that the pre-training went on from a checkpoint of `epochs` epochs or more, of 15."""
    resumed = re.search(r"resumed \S+last\.pt at epoch (\d+)", job_log)
    assert resumed and epochs <= int(resumed.group(1)) < 15, job_log[-3000:]


def _assert_tables(out: Path, local_run: Path) -> None:
    local = _tables(local_run)
    assert set(local) == set(_tables(out)) and "table1.json" in local
    for name, data in _tables(out).items():
        assert data == local[name], name


def test_a_requeued_job_resumes_its_piece(long_study):
    """`scontrol requeue` (what pre-emption with PreemptMode=REQUEUE does) on a running pre-training: the job
    stops at SIGTERM, comes back under the same id after SLURM's requeue delay (about 2 min) and resumes its
    checkpoint; the driver waits for it and the study ends in one run."""
    root, cohort, config = long_study
    out = root / "requeued"
    driver, err, (folder, job_id, epochs), _ = _interrupted_driver(
        cohort, out, config, lambda job_id: subprocess.run(["scontrol", "requeue", job_id], check=True))
    print(f"requeued job {job_id} after {epochs} epoch(s)")
    assert driver.returncode == 0, err[-3000:]
    submitted = json.loads((folder / "submitted.json").read_text())
    assert submitted["job_id"] == job_id  # one submission: the job came back, it was not submitted again
    job_log = Path(submitted["log"]).read_text()
    assert job_log.count("Starting with JobEnvironment") == 2 and "received SIGTERM" in job_log, job_log[-3000:]
    _assert_resumed_mid_run(job_log, epochs)
    assert json.loads((folder / "state.json").read_text())["state"] == "done"
    _assert_tables(out, root / "local_long")
