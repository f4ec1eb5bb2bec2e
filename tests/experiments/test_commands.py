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
    assert rc == 3  # bad data (DataError), not bad usage (2)
    assert "nope" in capsys.readouterr().err


def test_set_overrides_reach_the_study(tmp_path, monkeypatch):
    import cmrprior.experiments.study as study_mod

    seen = {}

    def fake_run_study(data, out, config, test_data=None):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(study_mod, "run_study", fake_run_study)
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit):
        main(["study", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--config", "paper",
              "--set", "protocol.n_splits=1", "--set", "classifier.backbones=[densenet121]"])
    c = seen["config"]
    assert c.name == "paper" and c.protocol.n_splits == 1 and c.classifier.backbones == ("densenet121",)
    assert c.classifier.input_size == 224  # untouched settings stay the file's


def test_unknown_set_key_is_one_clear_error(tmp_path, capsys):
    rc = main(["study", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "classifier.input_sise=32"])
    assert rc == 2
    assert "input_sise" in capsys.readouterr().err
