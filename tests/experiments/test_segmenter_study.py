"""The study as a user meets it: heart masks from a segmenter on a cohort without expert masks, with and
without a --test cohort (other class order; unlabelled), and preparation that never depends on `_gt` files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cmrprior.io.load as io_load
from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.errors import DataError
from cmrprior.experiments.cohort_data import prepare_data
from cmrprior.experiments.study import run_study, table_setup
from cmrprior.runs import MasksOrigin
from cmrprior.segmentation.network import UNetArgs, build_unet, save_segmenter
from cmrprior.segmentation.predict import file_sha256

from .cohort_copies import acdc_copy, array_digests
from .study_doubles import RecordingPretrain, tiny_config

SMALL = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
TINY_UNET = UNetArgs(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A small phantom with `_gt` files, its blind copy (images only), a blind holdout whose classes come in
    another order (NOR, HCM vs NOR, DCM, HCM), an unlabelled copy, and a seeded tiny segmenter."""
    root = tmp_path_factory.mktemp("cohorts")
    full = generate_phantom(root / "with_gt", n_patients=15, seed=5, classes=("NOR", "DCM", "HCM"), config=SMALL)
    hold_src = generate_phantom(root / "hold_src", n_patients=6, seed=6, classes=("NOR", "HCM"), config=SMALL)
    torch.manual_seed(0)
    model = save_segmenter(build_unet(TINY_UNET), TINY_UNET, root / "seg" / "tiny.safetensors")
    return {"with_gt": full, "blind": acdc_copy(full, root / "blind"),
            "holdout": acdc_copy(hold_src, root / "holdout", rename="holdout"),
            "unlabelled": acdc_copy(hold_src, root / "unlabelled", rename="unlab", labels=False), "model": model}


def _config(model: Path, **over):
    base = dict(masks={"source": "segmenter", "model": str(model)}, prepare={"size": 48, "pixel_spacing_mm": 3.0},
                classifier={"inits": ["none", "full_sscl"], "images": ["full", "segmented"]},
                protocol={"n_splits": 1, "test_fraction": 0.34, "cv_folds": 2, "val_fraction": 0.34})
    base.update(over)
    return tiny_config(**base)


def test_preparation_ignores_gt_files_and_never_reads_them(cohorts, tmp_path, monkeypatch):
    cfg = _config(cohorts["model"])
    read = io_load.read_image

    def no_gt(path, frame=None):
        assert "_gt" not in Path(path).name, f"expert mask read: {path}"
        return read(path, frame)

    monkeypatch.setattr(io_load, "read_image", no_gt)
    to_gt, to_blind = ((tmp_path / f"{n}_m.csv", tmp_path / f"{n}_p.csv") for n in ("gt", "blind"))
    with_gt, _ = prepare_data(cohorts["with_gt"], cfg, cache_dir=tmp_path / "c1", measures_to=to_gt)
    blind, origin = prepare_data(cohorts["blind"], cfg, cache_dir=tmp_path / "c2", measures_to=to_blind)
    assert array_digests(with_gt) == array_digests(blind)
    # the anatomy measures come from the segmenter's masks too: the same with or without `_gt` files
    assert [p.read_text() for p in to_gt] == [p.read_text() for p in to_blind]
    assert len(to_gt[0].read_text().splitlines()) == 1 + len(with_gt.patient_ids)
    assert with_gt.ed_mask is not None and with_gt.ed_full is not None
    assert (with_gt.ed_mask > 0).any() and (with_gt.es_mask > 0).any()  # the segmenter's masks
    sha = file_sha256(cohorts["model"])
    assert set(blind.masks_models.values()) == {(str(Path(cohorts["model"]).resolve()), sha)}
    assert origin.masks.out_of_sample is None and "not known" in origin.masks.note  # a given model: its training data unknown


def test_segmenter_failure_is_an_error_not_a_fallback(cohorts, tmp_path):
    cfg = _config(tmp_path / "missing.safetensors")
    with pytest.raises(DataError, match="segmenter weights not found"):
        prepare_data(cohorts["with_gt"], cfg, cache_dir=tmp_path / "c")


def _results(run: Path, split: str) -> list[dict]:
    pattern = "holdout/cells/*/*/result.json" if split == "holdout" else "splits/split_*/cells/*/*/result.json"
    return [json.loads(p.read_text()) for p in sorted(run.glob(pattern))]


def test_study_on_segmenter_masks_without_gt_files(cohorts, tmp_path, monkeypatch):
    RecordingPretrain().install(monkeypatch)
    run = tmp_path / "run"
    run_study(cohorts["blind"], run, _config(cohorts["model"]), report=False)
    info = json.loads((run / "run.json").read_text())
    assert info["masks_source"] == "segmenter" and "training patients are not known" in info["masks_note"]
    assert info["masks_out_of_sample"] is None
    masks = json.loads((run / "prepared" / "masks.json").read_text())
    assert {m["sha256"] for m in masks["masks_models"].values()} == {file_sha256(cohorts["model"])}
    ok = [r for r in _results(run, "0") if r["status"] == "ok"]
    assert len(ok) == 4 and all(r["masks_source"] == "segmenter" for r in ok)
    notes = json.loads((run / "tables" / "table1.json").read_text())
    assert "whole acquired field of view" in json.dumps(notes) and "oracle" not in json.dumps(notes)
    assert (run / "qc" / "empty_mask_slices.csv").read_text().startswith("patient_id,slice_index,reason")


@pytest.mark.slow
def test_holdout_in_other_class_order_is_scored_in_the_study_order(cohorts, tmp_path, monkeypatch):
    RecordingPretrain().install(monkeypatch)
    run = tmp_path / "run"
    run_study(cohorts["blind"], run, _config(cohorts["model"]), test_data=cohorts["holdout"], report=False)
    hold = [r for r in _results(run, "holdout") if r["status"] == "ok"]
    assert hold and all(r["classes"] == ["NOR", "DCM", "HCM"] for r in hold)
    truth = {d.name: next(line.split(":")[1].strip() for line in (d / "Info.cfg").read_text().splitlines()
                          if line.startswith("Group")) for d in Path(cohorts["holdout"]).iterdir()}
    for r in hold:  # labels in the study's order: HCM is 2 there (1 in the holdout's own order)
        expected = [["NOR", "DCM", "HCM"].index(truth[p]) for p in r["test"]["patient_ids"]]
        assert r["test"]["labels"] == expected and 2 in expected
        assert np.asarray(r["test"]["probabilities"]).shape == (len(expected), 3)
    assert (run / "tables" / "holdout_table1.md").exists()


def test_unlabelled_test_cohort_is_refused_before_any_work(cohorts, tmp_path):
    with pytest.raises(DataError, match="without a label"):
        run_study(cohorts["blind"], tmp_path / "run", _config(cohorts["model"]), test_data=cohorts["unlabelled"],
                  report=False)
    assert not (tmp_path / "run" / "prepared").exists()


def test_tables_name_oracle_masks_and_the_full_image_fov():
    cfg = tiny_config(prepare={"full_fov_mm": 250.0})
    notes = " ".join(table_setup(cfg, ("A", "B"), MasksOrigin("ground_truth")).run_notes)
    assert "oracle masks" in notes and "250 mm field of view" in notes
    notes = " ".join(table_setup(tiny_config(), ("A", "B"), MasksOrigin("segmenter")).run_notes)
    assert "oracle" not in notes and "whole acquired field of view" in notes


def test_test_cohort_holding_a_study_patient_under_a_new_id_is_refused(cohorts, tmp_path, monkeypatch):
    """Ids differ, images do not: the --test cohort is compared with the study cohort by image content."""
    import cmrprior.experiments.cohort_data as cd

    monkeypatch.setattr(cd, "prepare_data", lambda *a, **k: (_ for _ in ()).throw(AssertionError("prepared")))
    test = acdc_copy(cohorts["holdout"], tmp_path / "test")  # new patients ...
    acdc_copy(cohorts["with_gt"], test, rename="renamed", only=("patient002",))  # ... and a study patient renamed
    assert (test / "renamed002").is_dir()
    with pytest.raises(DataError, match=r"renamed002 = study patient patient002") as err:
        run_study(cohorts["blind"], tmp_path / "run", _config(cohorts["model"]), test_data=test, report=False)
    assert str(test) in str(err.value) and "1 patient(s)" in str(err.value)

