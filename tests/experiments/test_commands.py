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


def test_a_study_whose_cells_all_failed_exits_non_zero(tmp_path, monkeypatch, capsys):
    """Every cell raises (as with a backbone that cannot be built): the tables are written, the exit code is 1."""
    import cmrprior.experiments.cell as cell_mod
    import cmrprior.experiments.study as study_mod

    from .study_doubles import RecordingPretrain, install_cohort, tiny_cohort, tiny_config

    RecordingPretrain().install(monkeypatch)
    monkeypatch.setattr(study_mod, "_saliency_and_report", lambda run: None)
    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})

    def broken(*a, **k):
        raise RuntimeError("cannot build the encoder")

    monkeypatch.setattr(cell_mod, "_train", broken)
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(classifier={"inits": ["none"], "images": ["full"]},
                                  protocol={"n_splits": 1}).to_yaml())
    rc = main(["study", "--data", "COHORT", "--out", str(tmp_path / "run"), "--config", str(config), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "study finished" not in captured.out
    last = captured.err.splitlines()[-1]  # after the logged error of the cell itself
    assert last.startswith("cmrprior study: error: no cell of the study was trained (1 failed, 0 unavailable)")


def test_unknown_backbone_or_init_is_refused_when_the_config_is_read(tmp_path, monkeypatch, capsys):
    """Before any preparation or segmentation, with the closest valid name."""
    import cmrprior.experiments.cohort_data as cd

    monkeypatch.setattr(cd, "prepare_data", lambda *a, **k: (_ for _ in ()).throw(AssertionError("prepared")))
    (tmp_path / "data").mkdir()
    base = ["study", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert main(base + ["--set", "classifier.backbones=[densenet121, vgg61]"]) == 2
    err = capsys.readouterr().err
    assert "classifier.backbones: unknown 'vgg61' (did you mean 'vgg16'?)" in err and err.count("\n") == 1
    assert main(base + ["--set", "classifier.inits=[none, segmented_ssl]"]) == 2
    assert "unknown 'segmented_ssl' (did you mean 'segmented_sscl'?)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
