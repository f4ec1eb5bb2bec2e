"""`cmrprior pretrain` on a small prepared cohort written by the test: split hygiene, resume flag, segmented."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmrprior import cli
from cmrprior.cli import main
from cmrprior.data.prepared import PreparedCohort, PreparedPatient
from cmrprior.ssl.commands import select_pretrain_data

CLASSES = ("NOR", "DCM", "HCM", "MINF", "RV")


@pytest.fixture(autouse=True)
def _only_this_command(monkeypatch):
    """Build the CLI with this stage's command only (other stages' imports are slow and not under test)."""
    assert "cmrprior.ssl.commands" in cli.COMMAND_MODULES
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["cmrprior.ssl.commands"])


def _cohort(n_per_class=4, slices=2, size=24, seed=0) -> PreparedCohort:
    rng = np.random.default_rng(seed)
    n_pat = n_per_class * len(CLASSES)
    n = n_pat * slices
    ed = rng.random((n, size, size), dtype=np.float32)
    mask = np.zeros((n, size, size), np.uint8)
    mask[:, 8:16, 8:16] = 3
    patients = tuple(
        PreparedPatient(patient_id=f"p{i:03d}", label=CLASSES[i % 5], height_cm=None, weight_kg=None,
                        slice_thickness_mm=10.0, n_slices=slices, source="test")
        for i in range(n_pat)
    )
    es = rng.random((n, size, size), dtype=np.float32)
    return PreparedCohort(ed=ed, es=es, ed_mask=mask, es_mask=mask.copy(),
                          patient_index=np.repeat(np.arange(n_pat), slices), slice_index=np.tile(np.arange(slices), n_pat),
                          slice_position=np.zeros(n, np.float32), patients=patients, classes=CLASSES,
                          pixel_spacing_mm=1.5)


def test_split_excludes_test_patients_and_segments():
    prep = _cohort()
    sel = select_pretrain_data(prep, split_seed=3, test_fraction=0.3, val_fraction=0.2)
    assert set(sel.train_ids).isdisjoint(sel.test_ids) and set(sel.val_ids).isdisjoint(sel.test_ids)
    assert set(sel.train_ids).isdisjoint(sel.val_ids)
    assert len(sel.test_ids) == 6 and set(sel.train_ids) | set(sel.val_ids) | set(sel.test_ids) == set(prep.patient_ids)
    assert sel.train.shape == (2 * 2 * len(sel.train_ids), 24, 24)  # ED + ES slices
    # the images really are the training patients' (no test image)
    test_sub = prep.select_patients(list(sel.test_ids))
    test_img = np.concatenate([test_sub.ed, test_sub.es])
    assert not any(np.array_equal(t, x) for t in test_img for x in sel.train)
    seg = select_pretrain_data(prep, images="segmented", split_seed=3, val_fraction=0.2, margin_mm=0.0)
    assert seg.train.shape == sel.train.shape
    assert (seg.train[:, :8, :] == 0).all() and (seg.train[:, 8:16, 8:16] != 0).any()


def test_cli_pretrain_and_resume_flag(tmp_path, capsys):
    prep_dir = tmp_path / "prepared"
    _cohort().save(prep_dir)
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(prep_dir), "--backbone", "tiny", "--out", str(out), "--batch-size", "8",
            "--epochs", "1", "--split-seed", "1", "--no-progress", "--image-size", "16", "--device", "cpu"]
    assert main(argv) == 0
    assert "pretrain finished: 1 epoch(s)" in capsys.readouterr().out
    split = json.loads((out / "split.json").read_text())
    assert set(split["train_patients"]).isdisjoint(split["test_patients_excluded"])
    assert (out / "best.pt").exists() and (out / "metrics.jsonl").exists()
    assert main(argv) == 2  # the folder holds a run: refuses without --resume
    assert "--resume" in capsys.readouterr().err
    argv2 = [a if a != "1" or argv[i - 1] != "--epochs" else "2" for i, a in enumerate(argv)] + ["--resume"]
    assert main(argv2) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_cli_bad_data(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 3  # bad data
    assert "missing" in capsys.readouterr().err


def test_cli_refuses_a_raw_cohort(tmp_path, capsys):
    """Preparing here would locate the heart from the expert masks: the user is sent to `cmrprior prepare`."""
    from cmrprior.data.phantom import generate_phantom

    data = generate_phantom(tmp_path / "raw", n_patients=3, seed=0, classes=("NOR", "DCM", "HCM"))
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "o")]) == 3  # bad data
    err = capsys.readouterr().err
    assert "not a prepared cohort" in err and "cmrprior prepare" in err
    assert not (tmp_path / "o" / "prepared").exists()


def test_cli_pretrains_on_the_studys_patients_for_the_same_split():
    """`cmrprior pretrain --split-seed S` and the study's split S (protocol seed 0) pre-train on the same
    patients, with the same early-stopping part."""
    from cmrprior.experiments.config import StudyConfig
    from cmrprior.experiments.study import make_splits
    from cmrprior.data.splits import inner_split

    from tests.experiments.study_doubles import tiny_cohort

    prep = tiny_cohort(n_patients=30)
    cfg = StudyConfig()
    splits = make_splits(prep.patient_ids, prep.patient_labels, cfg)
    label_of = dict(zip(prep.patient_ids, prep.patient_labels.tolist()))
    for s in splits[:3]:
        inner = inner_split(s.train, [label_of[p] for p in s.train], val_fraction=cfg.protocol.val_fraction,
                            split_seed=s.seed)
        sel = select_pretrain_data(prep, split_seed=s.seed)
        assert set(sel.test_ids) == set(s.test)
        assert set(sel.train_ids) == set(inner.train) and set(sel.val_ids) == set(inner.test)


def test_cli_resume_on_another_data_set_is_refused(tmp_path, capsys):
    """`--resume` on a cohort with the same patient ids but other images: one line, exit 2, run untouched."""
    _cohort(seed=0).save(tmp_path / "a")
    _cohort(seed=1).save(tmp_path / "b")
    out = tmp_path / "run"
    argv = ["pretrain", "--backbone", "tiny", "--out", str(out), "--batch-size", "8", "--epochs", "1",
            "--no-progress", "--image-size", "16", "--device", "cpu"]
    assert main(argv + ["--data", str(tmp_path / "a")]) == 0
    split, last = (out / "split.json").read_bytes(), (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(argv + ["--data", str(tmp_path / "b"), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pre-trained on other images" in err and str(out) in err
    assert (out / "split.json").read_bytes() == split and (out / "last.pt").read_bytes() == last
    assert main(argv + ["--data", str(tmp_path / "a"), "--split-seed", "4", "--resume"]) == 2  # other patients
    assert "split.json differs" in capsys.readouterr().err


def test_quiet_silences_the_progress_bar(tmp_path, monkeypatch):
    """`--quiet`: nothing on a terminal's stderr, not even tqdm's epoch bar (it used to need --no-progress)."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    prep_dir = tmp_path / "prepared"
    _cohort().save(prep_dir)
    argv = ["pretrain", "--data", str(prep_dir), "--backbone", "tiny", "--batch-size", "8", "--epochs", "1",
            "--image-size", "16", "--device", "cpu", "--max-steps", "2"]
    for quiet, out in ((False, "loud"), (True, "quiet")):
        err = Terminal()
        monkeypatch.setattr(sys, "stderr", err)
        assert main([*argv, "--out", str(tmp_path / out), *(["--quiet"] if quiet else [])]) == 0
        assert ("epoch 1/1" in err.getvalue()) is not quiet, err.getvalue()
