"""`cmrprior prepare` and `cmrprior cohort` end to end on a tiny ACDC-layout folder the test writes (random
images: preparation takes the oracle path, `--oracle-masks`; the segmenter's path is tested in
tests/experiments/test_prepare_command.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cmrprior.cli
from cmrprior.cli import main
from cmrprior.data.prepare import load_prepared
from cmrprior.io.acdc import write_acdc_patient


@pytest.fixture(autouse=True)
def _only_data_commands(monkeypatch):
    """Build the real CLI with only the data subcommands (the others import torch and friends at start-up)."""
    monkeypatch.setattr(cmrprior.cli, "COMMAND_MODULES", ["cmrprior.data.commands", "cmrprior.experiments.prepare_command"])


def _data(root, n=3, bad=None):
    for i in range(n):
        shape = (4, 30, 28)
        m = np.zeros(shape, np.uint8)
        m[1:3, 10:18, 9:17] = 3
        img = (np.random.default_rng(i).random(shape) * 300).astype(np.int16)
        write_acdc_patient(root, f"patient{i + 1:03d}", ed=img, es=img, ed_frame=1, es_frame=6,
                           spacing_zyx=(10.0, 1.8, 1.8), group=("NOR", "DCM", "HCM")[i % 3], ed_mask=m, es_mask=m)
    if bad is not None:
        (root / f"patient{bad:03d}" / "Info.cfg").write_text("ED: 1\nES: x\nGroup: NOR\n")
    return root


def test_prepare_writes_cache_and_summary(tmp_path, capsys):
    data = _data(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["prepare", "--data", str(data), "--out", str(out), "--size", "24", "--spacing", "2.0", "--oracle-masks"]) == 0
    text = capsys.readouterr().out
    assert "patients:   3" in text and "NOR 1, DCM 1, HCM 1" in text
    assert "24 x 24 pixels at 2 mm" in text and "6 ED/ES pairs" in text
    pointer = json.loads((out / "prepared.json").read_text())
    assert pointer["masks"]["source"] == "ground_truth" and pointer["masks"]["oracle"] is True
    assert "ORACLE: expert masks (--oracle-masks)" in text
    prepared = load_prepared(out)
    assert pointer["config_hash"] == prepared.config_hash
    assert (out / pointer["cache"] / "cohort.json").is_file()
    assert prepared.ed.shape == (6, 24, 24) and prepared.pixel_spacing_mm == 2.0
    assert (out / "summary.txt").read_text().strip() == text.split("\nprepared cohort:")[0].strip()
    # second run: same cache folder
    assert main(["prepare", "--data", str(data), "--out", str(out), "--size", "24", "--spacing", "2.0", "--oracle-masks"]) == 0
    assert len(list((out / "cache").iterdir())) == 1


def test_prepare_bad_patient_error_and_skip_bad(tmp_path, capsys):
    data = _data(tmp_path / "data", bad=2)
    out = tmp_path / "out"
    assert main(["prepare", "--data", str(data), "--out", str(out), "--oracle-masks"]) == 3  # bad data
    err = capsys.readouterr().err
    assert "patient002/Info.cfg" in err and "ES must be an integer" in err
    assert main(["prepare", "--data", str(data), "--out", str(out), "--skip-bad", "--size", "16", "--oracle-masks"]) == 0
    text = capsys.readouterr().out
    assert "patients:   2" in text and "skipped:    1" in text and "patient002" in text


def test_prepare_refuses_output_inside_input(tmp_path, capsys):
    data = _data(tmp_path / "data", n=1)
    assert main(["prepare", "--data", str(data), "--out", str(data / "prepared"), "--oracle-masks"]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (data / "prepared").exists()


def test_cohort_summary(tmp_path, capsys):
    data = _data(tmp_path / "data")
    assert main(["cohort", "--data", str(data)]) == 0
    text = capsys.readouterr().out
    assert "patients:   3" in text and "masks:      3/3" in text
    with pytest.raises(SystemExit):
        main(["cohort"])  # --data is required


def test_prepare_from_manifest_with_binary_labels(tmp_path, capsys):
    data = _data(tmp_path / "acdc", n=4)
    rows = ["patient_id,label,ed_image,es_image,ed_mask,es_mask"]
    for i in range(1, 5):
        d = f"acdc/patient{i:03d}/patient{i:03d}"
        rows.append(f"p{i},{'ICM' if i % 2 else 'NICM'},{d}_frame01.nii.gz,{d}_frame06.nii.gz,"
                    f"{d}_frame01_gt.nii.gz,{d}_frame06_gt.nii.gz")
    csv = tmp_path / "cohort.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert data.is_dir()
    assert main(["prepare", "--data", str(csv), "--out", str(tmp_path / "out"), "--size", "16",
                 "--labels", "ICM,NICM", "--oracle-masks"]) == 0
    assert "ICM 2, NICM 2" in capsys.readouterr().out
    prepared = load_prepared(tmp_path / "out")
    assert prepared.classes == ("ICM", "NICM") and prepared.patient_ids == ["p1", "p2", "p3", "p4"]


def test_data_commands_are_registered_in_the_cli():
    import importlib

    cli = importlib.reload(cmrprior.cli)  # the module's own list, not the fixture's
    assert {"cmrprior.data.commands", "cmrprior.experiments.prepare_command"} <= set(cli.COMMAND_MODULES)
