"""Masks a user could have: no patient is segmented by a model trained on its images (recognised by its
pixels), unless the user says so and every output then says IN-SAMPLE; one scan under two ids is one patient."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.errors import LeakageError
from cmrprior.experiments.cohort_data import prepare_data
from cmrprior.io.acdc import read_acdc
from cmrprior.segmentation.folds import write_segmenter_set
from cmrprior.segmentation.network import UNetArgs, build_unet, save_segmenter

from .study_doubles import tiny_config

SMALL = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
TINY_UNET = UNetArgs(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 6-patient phantom; a 'full' segmenter indexed as trained on all of it (no folds), and a set whose two
    fold models each left out half of it."""
    root = tmp_path_factory.mktemp("oos")
    cohort_dir = generate_phantom(root / "cohort", n_patients=6, seed=2, classes=("NOR", "DCM"), config=SMALL)
    torch.manual_seed(0)
    full = save_segmenter(build_unet(TINY_UNET), TINY_UNET, root / "w" / "full.safetensors")
    cohort = read_acdc(cohort_dir, allowed_labels=("NOR", "DCM"))
    ids = [r.patient_id for r in cohort.patients]
    cv = root / "cv"
    for k, train in enumerate((ids[:3], ids[3:])):
        d = cv / f"fold_{k}"
        d.mkdir(parents=True)
        torch.manual_seed(k + 1)
        save_segmenter(build_unet(TINY_UNET), TINY_UNET, d / "model.safetensors")
        (d / "test_patients.json").write_text(json.dumps({"train": train, "test": []}))
    no_folds = root / "set_full_only"
    write_segmenter_set(no_folds, cohort, full_weights=full)
    with_folds = root / "set_folds"
    write_segmenter_set(with_folds, cohort, full_weights=full, cv_dir=cv)
    return {"cohort": cohort_dir, "no_folds": no_folds, "with_folds": with_folds, "ids": ids}


def _config(model: Path, **masks):
    return tiny_config(masks={"source": "segmenter", "model": str(model), **masks},
                       prepare={"size": 48, "pixel_spacing_mm": 3.0})


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_in_sample_masks_are_refused_by_default(setup, tmp_path):
    with pytest.raises(LeakageError, match="require_out_of_sample"):
        prepare_data(setup["cohort"], _config(setup["no_folds"]), cache_dir=tmp_path / "c", qc_dir=tmp_path / "qc")


def test_in_sample_masks_when_allowed_are_named(setup, tmp_path):
    cfg = _config(setup["no_folds"], require_out_of_sample=False)
    _, origin = prepare_data(setup["cohort"], cfg, cache_dir=tmp_path / "c", qc_dir=tmp_path / "qc")
    assert origin.masks.out_of_sample is False and origin.masks.note.startswith("IN-SAMPLE masks for 6 of 6 patients")
    rows = _rows(tmp_path / "qc" / "segmenters.csv")
    assert {r["model"] for r in rows} == {"full"} and {r["out_of_sample"] for r in rows} == {"False"}


def test_every_patient_gets_the_fold_model_that_left_it_out(setup, tmp_path):
    _, origin = prepare_data(setup["cohort"], _config(setup["with_folds"]), cache_dir=tmp_path / "c",
                             qc_dir=tmp_path / "qc")
    assert origin.masks.out_of_sample is True and origin.masks.note == "masks: out-of-sample segmenter for every patient"
    by_id = {r["patient_id"]: r for r in _rows(tmp_path / "qc" / "segmenters.csv")}
    ids = setup["ids"]
    assert {by_id[p]["model"] for p in ids[:3]} == {"fold_1"} and {by_id[p]["model"] for p in ids[3:]} == {"fold_0"}


def test_one_scan_under_two_ids_is_one_patient(setup, tmp_path):
    data = tmp_path / "cohort"
    shutil.copytree(setup["cohort"], data)
    src = data / setup["ids"][0]
    twin = data / "patient099"
    twin.mkdir()
    for f in src.iterdir():
        shutil.copyfile(f, twin / f.name.replace(src.name, "patient099"))
    prepared, _ = prepare_data(data, _config(setup["with_folds"]), cache_dir=tmp_path / "c", qc_dir=tmp_path / "qc")
    assert "patient099" not in prepared.patient_ids and src.name in prepared.patient_ids
    assert _rows(tmp_path / "qc" / "duplicate_images.csv") == [
        {"kept_patient": src.name, "left_out_patient": "patient099", "reason": "identical image pixels"}]


def test_a_set_member_named_as_the_model_is_checked_against_its_training_patients(setup, tmp_path):
    """fold_0 of the set was trained on the first three patients: naming its weights file alone must not hide it."""
    with pytest.raises(LeakageError, match="require_out_of_sample"):
        prepare_data(setup["cohort"], _config(setup["with_folds"] / "fold_0.safetensors"), cache_dir=tmp_path / "c",
                     qc_dir=tmp_path / "qc")


def test_masks_from_a_partly_renewed_set_say_the_set_is_mixed(setup, tmp_path):
    """One fold of the set replaced by a new generation's fold of the same patients: every patient still gets a
    model that never saw it, and the masks note (run.json, tables, report) and segmenters.csv name the mixed set."""
    from cmrprior.segmentation.set_pieces import ship_fold

    mixed = tmp_path / "set"
    shutil.copytree(setup["with_folds"], mixed)
    ids = setup["ids"]
    fold = tmp_path / "new_cv" / "fold_1"
    torch.manual_seed(7)
    save_segmenter(build_unet(TINY_UNET), TINY_UNET, fold / "model.safetensors")
    (fold / "test_patients.json").write_text(json.dumps({"train": ids[3:], "test": ids[:3]}))
    ship_fold(mixed, fold, 1, read_acdc(setup["cohort"], allowed_labels=("NOR", "DCM")), "v3")
    _, origin = prepare_data(setup["cohort"], _config(mixed), cache_dir=tmp_path / "c", qc_dir=tmp_path / "qc")
    assert origin.masks.out_of_sample is True
    assert origin.masks.note == ("masks: out-of-sample segmenter for every patient; MIXED segmenter set (1 of 3 "
                                 "models new): full, fold_0 of an unrecorded generation; fold_1 of generation v3 (new)")
    by_id = {r["patient_id"]: r for r in _rows(tmp_path / "qc" / "segmenters.csv")}
    assert {by_id[p]["generation"] for p in ids[:3]} == {"v3"} and {by_id[p]["generation"] for p in ids[3:]} == {""}
