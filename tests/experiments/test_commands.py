"""CLI wiring of `cmrprior study` and `cmrprior demo`."""

import pytest

from cmrprior.cli import build_parser, main


def test_study_and_demo_are_registered():
    p = build_parser()
    a = p.parse_args(["study", "--data", "D", "--out", "R", "--config", "paper", "--test", "T"])
    assert (a.data, a.out, a.config, a.test) == ("D", "R", "paper", "T") and callable(a.func)
    d = p.parse_args(["demo", "--out", "R"])
    assert d.data is None and d.patients == 60 and callable(d.func)


def test_bad_config_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocol:\n  n_split: 3\n")
    rc = main(["study", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(bad)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "n_split" in err and "bad.yaml" in err


def test_missing_data_is_one_clear_error(tmp_path, capsys):
    rc = main(["study", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    assert rc == 2
    assert "nope" in capsys.readouterr().err
