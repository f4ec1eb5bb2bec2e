"""Cohorts compared by image content: one scan under two ids inside a cohort is kept once and said so (run
records, report), and a test cohort holding a study patient is refused after preparation too (where cine
records' ED/ES frames are known), before anything is trained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.errors import DataError
from cmrprior.experiments.cohort_data import load_cohort_data
from cmrprior.experiments.study import run_study
from cmrprior.io.acdc import read_acdc
from cmrprior.io.fingerprint import patient_fingerprints
from cmrprior.report.summary import duplicates_words
from cmrprior.segmentation.network import UNetArgs, build_unet, save_segmenter

from .cohort_copies import acdc_copy
from .study_doubles import tiny_config

SMALL = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
TINY_UNET = UNetArgs(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp")
    study = generate_phantom(root / "study", n_patients=15, seed=4, classes=("NOR", "DCM", "HCM"), config=SMALL)
    hold = generate_phantom(root / "hold_src", n_patients=4, seed=8, classes=("NOR", "DCM"), config=SMALL)
    torch.manual_seed(0)
    model = save_segmenter(build_unet(TINY_UNET), TINY_UNET, root / "seg" / "tiny.safetensors")
    return {"study": study, "holdout": acdc_copy(hold, root / "holdout", rename="holdout"), "model": model}


def _config(model):
    return tiny_config(masks={"source": "segmenter", "model": str(model)}, prepare={"size": 48, "pixel_spacing_mm": 3.0},
                       classifier={"inits": ["none"], "images": ["full"]},
                       protocol={"n_splits": 1, "test_fraction": 0.34, "cv_folds": 2, "val_fraction": 0.34})


def _twin(src_dir, dst_root, new_id):
    """A copy of the cohort at `src_dir` with its first patient's files also under `new_id`."""
    shutil.copytree(src_dir, dst_root)
    first = sorted(p for p in dst_root.iterdir() if p.is_dir())[0]
    twin = dst_root / new_id
    twin.mkdir()
    for f in first.iterdir():
        shutil.copyfile(f, twin / f.name.replace(first.name, new_id))
    return first.name


def test_a_scan_under_two_ids_is_kept_once_and_recorded(data, tmp_path):
    cohort_dir = tmp_path / "cohort"
    kept = _twin(data["study"], cohort_dir, "patient099")
    kw = dict(prepared_dir=tmp_path / "run" / "prepared", cache_dir=tmp_path / "cache")
    first = load_cohort_data(cohort_dir, _config(data["model"]), **kw)
    assert "patient099" not in first.patient_ids and first.duplicates == ((kept, "patient099"),)
    record = read_acdc(cohort_dir).patients
    expected = {r.patient_id: patient_fingerprints(r) for r in record if r.patient_id != "patient099"}
    assert first.fingerprints == expected
    meta = json.loads((tmp_path / "run" / "prepared" / "masks.json").read_text())
    assert meta["duplicate_scans"] == [[kept, "patient099"]]
    again = load_cohort_data(cohort_dir, _config(data["model"]), **kw)  # read back from the run folder
    assert again.duplicates == first.duplicates and again.fingerprints == first.fingerprints
    words = duplicates_words({"duplicate_scans": {"data": meta["duplicate_scans"], "test_data": []}})
    assert "Duplicate scans kept once" in words and f"study cohort: patient099 = {kept}" in words
    assert duplicates_words({}) == ""


def test_test_cohort_duplicate_found_after_preparation_is_refused_before_training(data, tmp_path, monkeypatch):
    """The up-front comparison cannot see cine records whose frames are not known yet; stand in for such a
    record by hiding the pair from it: the comparison after preparation still refuses the cohort."""
    import cmrprior.experiments.cohort_data as cd
    import cmrprior.experiments.study as study

    monkeypatch.setattr(cd, "shared_images", lambda study, test: [])
    monkeypatch.setattr(study, "run_split", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    test = acdc_copy(data["holdout"], tmp_path / "test")
    acdc_copy(data["study"], test, rename="renamed", only=("patient002",))
    with pytest.raises(DataError, match=r"renamed002 = study patient patient002") as err:
        run_study(data["study"], tmp_path / "run", _config(data["model"]), test_data=test, report=False)
    assert str(test) in str(err.value)


@pytest.mark.slow  # a study with a --test cohort: about 2.5 min on 2 shared cores
def test_held_out_tables_state_the_test_cohorts_own_masks(data, tmp_path):
    """The held-out model trains on the study cohort's masks and is scored on the test cohort's: its tables say
    both, and run.json records the test cohort's masks and out-of-sample status beside the study cohort's."""
    run = tmp_path / "run"
    run_study(data["study"], run, _config(data["model"]), test_data=data["holdout"], report=False)
    info = json.loads((run / "run.json").read_text())
    given = "masks from a given segmenter whose training patients are not known"
    assert info["masks_note"] == f"{given} (15 patients)" and info["test_masks_note"] == f"{given} (4 patients)"
    assert "test_masks_out_of_sample" in info and info["test_masks_out_of_sample"] is None
    held = json.dumps(json.loads((run / "tables" / "holdout_table1.json").read_text())["notes"])
    assert f"training patients (study cohort): {given} (15 patients); test patients (held-out cohort): {given} (4 patients)" in held
    assert "held-out cohort" not in json.dumps(json.loads((run / "tables" / "table1.json").read_text())["notes"])
    table4 = json.dumps(json.loads((run / "tables" / "holdout_table4.json").read_text())["notes"])
    assert f"test patients (held-out cohort): {given} (4 patients)" in table4
