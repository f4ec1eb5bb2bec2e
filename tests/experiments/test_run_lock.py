"""A run folder in use by another process is refused before any work (`cmrprior.utils.runlock`)."""

import fcntl
import os

import pytest

import cmrprior.cli
from cmrprior.cli import main
from cmrprior.errors import ConfigError
from cmrprior.experiments.study import run_study

from .study_doubles import install_cohort, tiny_cohort, tiny_config


@pytest.fixture()
def held(tmp_path):
    """RUN/.lock held through its own open file description, as another process holds it."""
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield run
    os.close(fd)


def test_study_refuses_a_folder_in_use(tmp_path, monkeypatch, held):
    install_cohort(monkeypatch, {"A": tiny_cohort()})
    with pytest.raises(ConfigError, match=f"another cmrprior process is using {held}"):
        run_study("A", held, tiny_config(), report=False)
    assert sorted(p.name for p in held.iterdir()) == [".lock"]  # nothing done, nothing written


def test_prepare_and_study_cli_say_it_in_one_line(tmp_path, monkeypatch, capsys, held):
    install_cohort(monkeypatch, {"A": tiny_cohort()})
    assert main(["study", "--data", "A", "--out", str(held), "--config", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cmrprior study: error: another cmrprior process is using {held}" in err
    monkeypatch.setattr(cmrprior.cli, "COMMAND_MODULES", ["cmrprior.experiments.prepare_command"])
    (tmp_path / "data").mkdir()
    assert main(["prepare", "--data", str(tmp_path / "data"), "--out", str(held)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"another cmrprior process is using {held}" in err
