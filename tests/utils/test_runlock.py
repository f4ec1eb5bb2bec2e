"""One process at a time in a run folder; a killed holder never blocks the rerun."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cmrprior.errors import ConfigError
from cmrprior.utils.runlock import run_lock

SRC = Path(__file__).resolve().parents[2] / "src"


def _holder(folder):
    """A second process that takes the lock of `folder` and waits (prints 'held' once it has it)."""
    code = textwrap.dedent(f"""
        import sys, time
        from cmrprior.utils.runlock import run_lock
        with run_lock({str(folder)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_naming_the_folder(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(ConfigError, match=f"another cmrprior process is using {run} \\(pid {os.getpid()}\\)"):
            with run_lock(run):  # another open file description, as another process has
                pass
    with run_lock(run):  # released at the end of the block
        pass


def test_another_process_blocks_and_its_kill_releases(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(ConfigError, match=f"another cmrprior process is using {run} \\(pid {proc.pid}\\)"):
            with run_lock(run):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with run_lock(run):  # kill -9 left the lock file, not the lock
        assert (run / ".lock").read_text().strip() == str(os.getpid())
