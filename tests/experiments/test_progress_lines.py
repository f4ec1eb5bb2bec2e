"""The study tells the user what it does: "cells: k/N" lines with an estimate of the time left, readable
messages, `--quiet` on stderr and every line in the run folder's log.txt."""

from __future__ import annotations

import logging
import re

from cmrprior.cli import main
from cmrprior.runs import RunFolder

from .study_doubles import RecordingPretrain, install_cohort, tiny_cohort, tiny_config

LINE = re.compile(r"^(cells|pre-training): (\d+)/(\d+) done \((.*)\)(, .* elapsed(, ~.* left)?| in .*)$")


def test_study_cli_progress_quiet_and_log_file(tmp_path, monkeypatch, capsys, caplog):
    import cmrprior.experiments.study as study_mod

    RecordingPretrain().install(monkeypatch)
    monkeypatch.setattr(study_mod, "_saliency_and_report", lambda run: None)  # seconds; its lines: tests/saliency
    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})
    cfg = tiny_config(classifier={"inits": ["none", "full_sscl"], "images": ["full"]})
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.to_yaml())
    caplog.set_level(logging.INFO, logger="cmrprior")
    out = tmp_path / "run"
    assert main(["study", "--data", "COHORT", "--out", str(out), "--config", str(config), "--quiet"]) == 0

    messages = [r.getMessage() for r in caplog.records if r.name.startswith("cmrprior")]
    progress = {}
    for m in messages:
        hit = LINE.match(m)
        if hit:
            progress.setdefault(hit.group(1), []).append((int(hit.group(2)), int(hit.group(3)), m))
    # 2 splits x 1 backbone x 2 inits x 1 kind of images; one SimCLR run (full images) per split
    assert [(k, n) for k, n, _ in progress["cells"]] == [(k, 4) for k in range(1, 5)]
    assert [(k, n) for k, n, _ in progress["pre-training"]] == [(1, 2), (2, 2)]
    assert all("left" in m for k, n, m in progress["cells"][:-1]) and " in " in progress["cells"][-1][2]
    assert "split 0, tiny, None, full images: macro AUC" in progress["cells"][0][2]
    assert not [m for m in messages if re.search(r"\{'|\[\{", m)], "dict reprs in log lines"

    err = capsys.readouterr().err
    assert "cells: 1/4" not in err and "INFO" not in err  # --quiet: warnings and errors only
    log_txt = RunFolder(out).log.read_text()
    for k in range(1, 5):
        assert f"cells: {k}/4 done" in log_txt
    assert "pre-training: 2/2 done" in log_txt


def test_quiet_is_on_every_long_subcommand():
    from cmrprior.cli import build_parser

    p = build_parser()
    for argv in (["study", "--data", "D", "--out", "R"], ["demo", "--out", "R"], ["pretrain", "--data", "D", "--out", "R"],
                 ["segment", "predict", "--data", "D", "--out", "R"], ["segment", "train", "--data", "D", "--out", "R"]):
        assert p.parse_args(argv + ["--quiet"]).quiet and not p.parse_args(argv).quiet
