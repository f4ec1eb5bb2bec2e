"""`map_in_processes`: the results of worker processes in the jobs' order, the same as in this process; and the
project's errors cross from a worker process whole (file and problem)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from cmrprior.bundle.format import BundleError
from cmrprior.errors import DataError
from cmrprior.utils.processes import map_in_processes


def test_results_of_two_processes_come_in_the_jobs_order_and_equal_one_process():
    jobs = [7, 3, 11, 2, 9, 5, 1]
    serial = list(map_in_processes(math.factorial, jobs, 1))
    assert serial == [math.factorial(j) for j in jobs]
    assert list(map_in_processes(math.factorial, jobs, 2, chunksize=1)) == serial


def test_an_exception_in_a_worker_is_raised_where_its_result_is_reached():
    assert list(map_in_processes(math.factorial, [], 2)) == []
    jobs = [4, 5, 6, -1, 7]
    with pytest.raises(ValueError, match="not defined for negative"):
        list(map_in_processes(math.factorial, jobs, 2, chunksize=1))


@pytest.mark.parametrize("cls", [DataError, BundleError])
def test_data_errors_pickle_with_their_file_and_problem(cls):
    err = cls(Path("/data/p001/p001_frame01.nii.gz"), "not a NIfTI file")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and back.path == err.path and back.problem == err.problem
    assert str(back) == str(err) == "/data/p001/p001_frame01.nii.gz: not a NIfTI file"
    none = pickle.loads(pickle.dumps(cls(None, "no patients")))
    assert none.path is None and str(none) == "no patients"


def test_the_initializer_runs_in_the_workers_only():
    import torch

    from cmrprior.utils.processes import set_torch_threads

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    few = list(map_in_processes(_threads, [0, 1], 2, initializer=set_torch_threads, initargs=(target,)))
    assert few == [before, before] and torch.get_num_threads() == before  # too few jobs: run here, untouched
    many = list(map_in_processes(_threads, range(6), 2, chunksize=1, initializer=set_torch_threads,
                                 initargs=(target,)))
    assert many == [target] * 6 and torch.get_num_threads() == before


def _threads(_job: int) -> int:
    import torch

    return torch.get_num_threads()
