"""`cmrprior segment train|predict` end to end on a tiny phantom cohort."""

from __future__ import annotations

import json

import pytest

from cmrprior.cli import main


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from cmrprior.data.phantom import generate_phantom

    return generate_phantom(tmp_path_factory.mktemp("ph") / "cohort", n_patients=4, seed=3)


def test_train_then_predict(phantom, tmp_path):
    run = tmp_path / "seg"
    rc = main(["segment", "train", "--data", str(phantom), "--out", str(run), "--epochs", "1", "--channels", "4,8",
               "--res-units", "0", "--batch-size", "8", "--threads", "1", "--train-crop", "64"])
    assert rc == 0
    model = run / "final" / "model.safetensors"
    assert model.exists() and json.loads(model.with_suffix(".json").read_text())["unet_args"]["channels"] == [4, 8]
    rc = main(["segment", "predict", "--data", str(phantom), "--model", str(model), "--out", str(tmp_path / "pred")])
    assert rc == 0
    assert len(list((tmp_path / "pred").glob("patient*/patient*_ED_seg.nii.gz"))) == 4
    assert (tmp_path / "pred" / "qc.csv").read_text().count("\n") == 9  # header + 4 patients x 2 phases
    rc = main(["segment", "predict", "--data", str(phantom), "--model", str(model), "--out", str(tmp_path / "rot"),
               "--no-cine", "--rotations", "15", "-15"])
    assert rc == 0 and len(list((tmp_path / "rot").glob("patient*/patient*_ES_seg.nii.gz"))) == 4
    rc = main(["segment", "predict", "--data", str(phantom), "--model", str(model), "--out", str(tmp_path / "bad"),
               "--rotations", "0"])
    assert rc == 2 and not (tmp_path / "bad").exists()


def test_predict_into_input_folder_fails_cleanly(phantom, tmp_path, capsys):
    rc = main(["segment", "predict", "--data", str(phantom), "--model", str(tmp_path / "x.safetensors"),
               "--out", str(phantom / "out")])
    assert rc == 2
    assert "inside the input folder" in capsys.readouterr().err


def test_missing_model_fails_cleanly(phantom, tmp_path, capsys):
    rc = main(["segment", "predict", "--data", str(phantom), "--model", str(tmp_path / "x.safetensors"),
               "--out", str(tmp_path / "p")])
    assert rc == 3  # bad data (DataError), not bad usage
    assert "x.safetensors" in capsys.readouterr().err


def test_train_from_a_trained_model_records_it_and_bad_init_flags_fail_cleanly(phantom, tmp_path, capsys):
    from cmrprior.segmentation.predict import file_sha256

    args = ["--epochs", "1", "--channels", "4,8", "--res-units", "0", "--batch-size", "8", "--threads", "1",
            "--train-crop", "64"]
    first = tmp_path / "a" / "final" / "model.safetensors"
    assert main(["segment", "train", "--data", str(phantom), "--out", str(tmp_path / "a"), *args]) == 0
    assert main(["segment", "train", "--data", str(phantom), "--out", str(tmp_path / "b"), "--init", str(first),
                 *args]) == 0
    used = json.loads((tmp_path / "b" / "final" / "model.json").read_text())["config"]
    assert (used["init"], used["init_sha256"]) == (str(first), file_sha256(first))
    capsys.readouterr()
    assert main(["segment", "train", "--data", str(phantom), "--out", str(tmp_path / "c"), "--init-cv",
                 str(tmp_path / "a"), *args]) == 2
    assert "--init-cv needs --folds" in capsys.readouterr().err
    assert main(["segment", "train", "--data", str(phantom), "--out", str(tmp_path / "d"), "--folds", "2",
                 "--no-final", "--init", str(first), *args]) == 2
    assert "--no-final skips" in capsys.readouterr().err
    assert main(["segment", "train", "--data", str(phantom), "--out", str(tmp_path / "e"), "--init",
                 str(tmp_path / "none.safetensors"), *args]) == 3  # missing weights: bad data
    assert "none.safetensors" in capsys.readouterr().err
