"""One process at a time in a run folder: an exclusive `flock` on `RUN/.lock`, held for the run's lifetime.

Two commands writing into one run folder would both do all the work and interleave their logs and
outputs. The lock is an advisory `fcntl.flock` on an open file: the kernel releases it when the process
ends however it ends (kill -9 included), so a killed run never blocks its rerun, and no stale lock file
has to be cleaned up (the file itself stays; it holds the pid of the last holder, for the curious).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cmrprior.errors import ConfigError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the lock of run folder `folder` (created if needed) inside the `with` block.

    Raises:
        ConfigError: another process (or another open of the lock in this process) holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise ConfigError(f"another cmrprior process is using {folder}" + (f" (pid {holder})" if holder else "")
                              + "; wait for it to end, or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def lock_holder(folder: str | Path) -> str | None:
    """Who holds the lock of `folder`: the holder's pid as written (or "?"), None when nobody does (no lock
    file, or a lock left by a process that ended). Takes and drops the lock to find out; creates nothing."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
