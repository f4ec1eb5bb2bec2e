import os

import pytest
import torch


def pytest_configure(config):
    """In a pytest-xdist worker (`make test` runs one per core), torch takes an equal share of the cores instead of
    one thread per core in every worker, which would oversubscribe them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(workers)))


@pytest.fixture(autouse=True)
def cpu_without_native_bf16(monkeypatch):
    """Every test sees a CPU without native bf16, so "auto" precision is float32 without timing anything and a
    test's numbers do not depend on the machine's flags or load; the tests of that choice give their own flags."""
    from cmrprior.utils import cpu_precision

    monkeypatch.setattr(cpu_precision, "cpu_flags", lambda *a, **k: frozenset({"sse2", "avx2", "fma"}))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on the shared 2-core machine: one intra-op thread is many times faster than two
    contending ones. Restores the previous thread count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Killed(Exception):
    """A training run killed by a test (see `kill_before_checkpoint`)."""


@pytest.fixture
def kill_before_checkpoint(monkeypatch):
    """`arm(checkpoint, metrics, records)`: the next atomic write of the file `checkpoint` made once the JSONL file
    `metrics` holds `records` lines raises Killed, as a run killed between its epoch record and its checkpoint
    would stop. Only that one write fails; the next call of the training function resumes."""
    from pathlib import Path

    from cmrprior.utils import atomic

    real = atomic.save_torch

    def arm(checkpoint, metrics, records: int) -> None:
        armed = [True]

        def save_torch(target, obj):
            if (armed[0] and Path(target) == Path(checkpoint) and Path(metrics).exists()
                    and len(Path(metrics).read_text().splitlines()) >= records):
                armed[0] = False
                raise Killed(f"killed before writing {target}")
            return real(target, obj)

        monkeypatch.setattr(atomic, "save_torch", save_torch)

    return arm
