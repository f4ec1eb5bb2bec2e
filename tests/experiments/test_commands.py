"""CLI wiring of `cmrprior study` and `cmrprior demo`."""

import pytest

from cmrprior.cli import build_parser, main


def test_study_and_demo_are_registered():
    p = build_parser()
    a = p.parse_args(["study", "--data", "D", "--out", "R", "--config", "paper", "--test", "T"])
    assert (a.data, a.out, a.config, a.test) == ("D", "R", "paper", "T") and callable(a.func)
    d = p.parse_args(["demo", "--out", "R"])
    assert d.data is None and d.patients is None and d.test_patients is None and callable(d.func)


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


def test_demo_runs_the_demo_config_with_a_held_out_phantom_and_prints_the_answer(tmp_path, monkeypatch, capsys):
    """`cmrprior demo`: configs/demo.yaml unless --config, the study scored on a held-out cohort of new phantom
    patients, then the answer in a few lines read from the tables the study wrote (here written by a fake)."""
    import json

    import torch

    import cmrprior.experiments.demo as demo_mod
    from cmrprior.experiments.study import StudyResult
    from cmrprior.runs import RunFolder

    made, seen = [], {}
    monkeypatch.setattr(demo_mod, "make_phantom", lambda folder, **kw: made.append((folder.name, kw)) or folder)
    monkeypatch.setattr(demo_mod, "diagnose_new_patients", lambda *a, **k: None)

    def fake_run_study(data, out, config, test_data=None):
        seen.update(config=config, data=data, test=test_data, threads=torch.get_num_threads())
        run = RunFolder(out)
        run.tables.mkdir(parents=True)
        run.config_yaml.write_text(config.to_yaml())
        cell = {"backbone": "tiny", "images": "full", "macro_auc": 0.8125, "t_low": 0.7, "t_high": 0.925}
        (run.tables / "metrics.json").write_text(json.dumps([{**cell, "init": "none", "macro_auc": 0.75},
                                                             {**cell, "init": "full_sscl"}]))
        rows = [{"model": "Anatomy", "macro_auc": 0.95, "t_low": 0.9, "t_high": 1.0},
                {"model": "Hybrid: tiny None, full images + measures", "macro_auc": 0.96, "t_low": 0.91, "t_high": 1.0}]
        (run.tables / "table4.json").write_text(json.dumps({"rows": rows}))
        (run.tables / "holdout_metrics.json").write_text("[]")
        (run.tables / "holdout_table4.json").write_text(json.dumps(
            {"rows": [{"model": "Anatomy", "macro_auc": 0.9, "boot_low": 0.8, "boot_high": 0.97}]}))
        return StudyResult(run.root, {}, None, run.root / "report" / "index.html", 2, 1.0, n_ok=2)

    monkeypatch.setattr(demo_mod, "run_study", fake_run_study)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["demo", "--out", str(tmp_path / "demo"), "--patients", "30", "--quiet"]) == 0
        assert seen["threads"] == 1  # the demo's default
        assert seen["config"].name == "demo"
        assert made == [("phantom", {"n_patients": 30, "seed": 0}),
                        ("heldout", {"n_patients": 10, "seed": 0, "first_patient": 31})]
        assert (seen["data"].name, seen["test"].name) == ("phantom", "heldout")
        out = capsys.readouterr().out
        main(["demo", "--out", str(tmp_path / "demo3"), "--threads", "2", "--quiet"])
        assert seen["threads"] == 2
    finally:
        torch.set_num_threads(threads)
    n = seen["config"].protocol.n_splits
    assert f"macro AUC, mean [interval across {n} splits]:" in out
    assert "primary analysis (Anatomy model, named before the results): 0.950 [0.900, 1.000]" in out
    assert "best image models (2 of 2, picked after the results):" in out
    assert out.index("Full-SSCL, full images: 0.812 [0.700, 0.925]") < out.index("None, full images: 0.750")
    assert "best hybrid (Hybrid: tiny None, full images + measures): 0.960 [0.910, 1.000]" in out
    assert "held-out cohort, primary analysis (trained on every study patient, scored once): 0.900 [0.800, 0.970]" in out
    main(["demo", "--out", str(tmp_path / "cpu"), "--config", "cpu", "--test-patients", "0", "--quiet"])
    assert seen["config"].name == "cpu" and seen["test"] is None and made[-1] == ("phantom", {"n_patients": 60, "seed": 0})
    made.clear()
    main(["demo", "--out", str(tmp_path / "demo2"), "--quiet"])  # the demo config's smaller phantom
    assert made == [("phantom", {"n_patients": 40, "seed": 0}), ("heldout", {"n_patients": 10, "seed": 0,
                                                                             "first_patient": 41})]
