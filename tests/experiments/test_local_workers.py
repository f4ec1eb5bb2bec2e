"""The study's pieces in two local worker processes (no waves: a piece starts when its needs are finished)
give the tables of one `run_study` in this process, byte for byte (one torch thread in both)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).parent / "golden"


def test_two_local_workers_give_the_tables_of_one_process(tmp_path, one_torch_thread):
    from dataclasses import replace

    from cmrprior.data.phantom import generate_phantom
    from cmrprior.experiments.config import StudyConfig
    from cmrprior.experiments.executor_config import ExecutorConfig
    from cmrprior.experiments.executors import run_study_pieces
    from cmrprior.experiments.study import run_study

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    cohort = generate_phantom(tmp_path / "cohort", n_patients=18, seed=3, classes=("NOR", "DCM", "HCM"))
    config = StudyConfig.from_dict(golden.CONFIG)
    run_study(cohort, tmp_path / "one", config, report=False)
    two = replace(config, executor=ExecutorConfig(workers=2))
    run_study_pieces(cohort, tmp_path / "two", two, report=False, threads=1)
    names = sorted(p.name for p in (tmp_path / "one" / "tables").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two" / "tables").iterdir()) and "table2.json" in names
    for name in names:
        assert (tmp_path / "two" / "tables" / name).read_bytes() == (tmp_path / "one" / "tables" / name).read_bytes(), name
