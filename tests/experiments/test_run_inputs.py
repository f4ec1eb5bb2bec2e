"""A run folder is tied to its inputs, and inputs are checked before the first long step."""

from pathlib import Path

import pytest

from cmrprior.errors import CmrPriorError, ConfigError, DataError
from cmrprior.experiments.study import run_study
from cmrprior.utils.runfolder_checks import check_out_dir, input_fingerprint

from .study_doubles import RecordingPretrain, install_cohort, tiny_cohort, tiny_config


@pytest.fixture()
def fake_pretrain(monkeypatch):
    rec = RecordingPretrain()
    rec.install(monkeypatch)
    return rec


@pytest.fixture()
def no_preparation(monkeypatch):
    """Fails the test if the study reaches preparation (the checks must come first)."""
    import cmrprior.experiments.cohort_data as cd

    def boom(*a, **k):
        raise AssertionError("preparation started before the inputs were checked")

    monkeypatch.setattr(cd, "prepare_data", boom)


def test_rerun_with_other_data_is_refused_naming_both(tmp_path, monkeypatch, fake_pretrain):
    install_cohort(monkeypatch, {"A": tiny_cohort(), "B": tiny_cohort(seed=5)})
    cfg = tiny_config(classifier={"inits": ["none"], "images": ["full"]}, protocol={"n_splits": 1})
    run_study("A", tmp_path / "run", cfg, report=False)
    with pytest.raises(ConfigError, match="made from data A, not B"):
        run_study("B", tmp_path / "run", cfg, report=False)
    run_study("A", tmp_path / "run", cfg, report=False)  # the same input resumes


def test_missing_test_cohort_is_refused_before_training(tmp_path, monkeypatch, fake_pretrain):
    install_cohort(monkeypatch, {"A": tiny_cohort()})
    cfg = tiny_config(classifier={"inits": ["full_sscl"], "images": ["full"]}, protocol={"n_splits": 1})
    with pytest.raises(KeyError):  # the double's lookup: a missing cohort fails at opening, not after training
        run_study("A", tmp_path / "run", cfg, test_data="MISSING", report=False)
    assert fake_pretrain.calls == []


def test_test_cohort_sharing_ids_or_with_unknown_classes_is_refused(tmp_path, monkeypatch, no_preparation):
    install_cohort(monkeypatch, {"A": tiny_cohort(), "SAME": tiny_cohort(seed=3),
                                 "OTHER": tiny_cohort(classes=("A", "B", "X"), prefix="t")})
    import cmrprior.experiments.cohort_data as cd

    monkeypatch.setattr(cd, "prepare_data", lambda *a, **k: (_ for _ in ()).throw(AssertionError("prepared")))
    cfg = tiny_config(protocol={"n_splits": 1})
    with pytest.raises(DataError, match="also in the study cohort"):
        run_study("A", tmp_path / "r1", cfg, test_data="SAME", report=False)
    with pytest.raises(ConfigError, match=r"\['X'\]"):
        run_study("A", tmp_path / "r2", cfg, test_data="OTHER", report=False)


def test_cohort_too_small_to_split_is_refused_before_preparation(tmp_path, monkeypatch):
    install_cohort(monkeypatch, {"SMALL": tiny_cohort(n_patients=4)})
    import cmrprior.experiments.cohort_data as cd

    monkeypatch.setattr(cd, "prepare_data", lambda *a, **k: (_ for _ in ()).throw(AssertionError("prepared")))
    with pytest.raises(ConfigError, match=r"cannot be split: \{'B': 1, 'C': 1\}"):
        run_study("SMALL", tmp_path / "run", tiny_config(), report=False)


def test_out_inside_input_existing_file_or_unwritable_is_refused(tmp_path):
    data = tmp_path / "cohort"
    data.mkdir()
    (data / "patient001").mkdir()
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_out_dir(data / "run", [data])
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_out_dir(data, [data])
    manifest = tmp_path / "m.csv"
    manifest.write_text("patient_id,label\n")
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_out_dir(tmp_path / "run", [manifest])  # a manifest's folder holds its images
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        check_out_dir(f, [data])
    with pytest.raises(ConfigError, match="cannot write"):
        check_out_dir(f / "sub", [data])  # a path below a file cannot be created
    assert check_out_dir(tmp_path / "elsewhere" / "run", [data]).is_dir()
    assert not (data / "run").exists()


def test_cli_turns_each_into_one_line(tmp_path, capsys):
    from cmrprior.cli import main

    f = tmp_path / "file.txt"
    f.write_text("x")
    rc = main(["study", "--data", str(tmp_path / "nowhere"), "--out", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "existing file" in err


def test_fingerprint_follows_content_not_location(tmp_path):
    a = tmp_path / "a"
    (a / "p1").mkdir(parents=True)
    (a / "p1" / "img.nii").write_bytes(bytes(range(256)) * 1000)
    (a / "p1" / "Info.cfg").write_text("ED: 1\n")
    (a / ".hidden").write_text("ignored")
    b = tmp_path / "b"
    import shutil

    shutil.copytree(a, b)
    assert input_fingerprint(a) == input_fingerprint(b)
    (b / ".hidden").write_text("changed")
    assert input_fingerprint(a) == input_fingerprint(b)
    data = bytearray((b / "p1" / "img.nii").read_bytes())
    data[-1] ^= 1  # one byte at the end of a large file
    (b / "p1" / "img.nii").write_bytes(bytes(data))
    assert input_fingerprint(a) != input_fingerprint(b)
    (b / "p1" / "img.nii").write_bytes((a / "p1" / "img.nii").read_bytes())
    (b / "p2").mkdir()
    (b / "p2" / "Info.cfg").write_text("ED: 1\n")
    assert input_fingerprint(a) != input_fingerprint(b)
    with pytest.raises(CmrPriorError, match="not found"):
        input_fingerprint(tmp_path / "nope")


def test_training_part_too_small_for_the_inner_validation_is_refused_before_preparation(tmp_path, monkeypatch):
    """9 patients split 5 / 4 (test_fraction 0.34): the outer split works, but 5 training patients cannot give
    an inner validation part with every one of the 3 classes (val_fraction 0.2: 1 patient)."""
    install_cohort(monkeypatch, {"NINE": tiny_cohort(n_patients=9)})
    import cmrprior.experiments.cohort_data as cd

    monkeypatch.setattr(cd, "prepare_data", lambda *a, **k: (_ for _ in ()).throw(AssertionError("prepared")))
    config = tiny_config(protocol={"n_splits": 1, "test_fraction": 0.34, "val_fraction": 0.2})
    with pytest.raises(ConfigError, match=r"NINE: the training part of a split cannot give the inner validation "
                                          r"part \(protocol.val_fraction=0.2\)"):
        run_study("NINE", tmp_path / "run", config, report=False)
