"""Where the masks come from is one record (`runs.MasksOrigin`) in memory, and the same keys on disk: run.json and
result.json written before the record existed load into it and are written back unchanged."""

from __future__ import annotations

import json

import pytest

from cmrprior.runs import CellKey, CellResult, MasksOrigin, RunFolder, RunInfo

# run.json as the code before MasksOrigin wrote it (`dataclasses.asdict` of the old RunInfo), with a --test cohort
OLD_RUN_JSON = {
    "layout_version": 2, "classes": ["NOR", "DCM"], "masks_source": "segmenter",
    "masks_note": "masks: out-of-sample segmenter for every patient",
    "image_specs": [{"images": "full", "mode": "full", "margin_mm": 0.0}], "input_size": 32,
    "pixel_spacing_mm": 1.5, "masks_out_of_sample": True, "test_masks_note": "full segmenter (4 patients)",
    "test_masks_out_of_sample": None,
}
# result.json of a failed cell as the code before MasksOrigin wrote it
OLD_RESULT_JSON = {
    "split": "0", "backbone": "tiny", "init": "none", "images": "full", "status": "failed", "seed": 7,
    "classes": ["NOR", "DCM"], "masks_source": "ground_truth", "masks_note": "oracle masks: expert masks",
    "image_mode": "full", "input_size": 32, "mode": "linear", "reason": "boom", "hyperparameters": {},
    "search": {}, "history": [], "final_train_loss": None, "seen_patient_ids": {}, "pretrain_checkpoint": None,
    "wall_s": 1.5,
}


def _on_disk(obj) -> dict:
    return json.loads(json.dumps(obj))


def test_an_old_run_json_loads_into_the_record_and_is_written_back_unchanged(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(OLD_RUN_JSON))
    info = RunFolder(tmp_path).info()
    assert info.masks == MasksOrigin("segmenter", "masks: out-of-sample segmenter for every patient", True)
    assert info.test_masks == MasksOrigin("segmenter", "full segmenter (4 patients)", None)
    RunFolder(tmp_path).write_info(info)
    assert json.loads((tmp_path / "run.json").read_text()) == OLD_RUN_JSON
    alone = RunInfo.from_json({**OLD_RUN_JSON, "test_masks_note": None, "test_masks_out_of_sample": None})
    assert alone.test_masks is None


def test_an_old_result_json_loads_into_the_record_and_is_written_back_unchanged():
    cell = CellResult.from_json(OLD_RESULT_JSON)
    assert cell.key == CellKey("0", "tiny", "none", "full")
    assert cell.masks == MasksOrigin("ground_truth", "oracle masks: expert masks", None)
    assert _on_disk(cell.to_json()) == OLD_RESULT_JSON  # an unknown out-of-sample flag adds no key
    known = CellResult.from_json({**OLD_RESULT_JSON, "masks_source": "segmenter", "masks_out_of_sample": False})
    assert known.masks.out_of_sample is False and _on_disk(known.to_json())["masks_out_of_sample"] is False


@pytest.mark.parametrize("study, test, expect", [
    # the same note once; out of sample only when both cohorts' masks are
    (("a", True), ("a", True), ("a", True)),
    (("a", True), ("b", None), ("training patients (study cohort): a; test patients (held-out cohort): b", None)),
    (("a", None), ("a", False), ("a", False)),
    (("a", False), ("b", True), ("training patients (study cohort): a; test patients (held-out cohort): b", False)),
    (("a", None), ("a", None), ("a", None)),
])
def test_the_held_out_models_masks_combine_both_cohorts(study, test, expect):
    combined = MasksOrigin("ground_truth", *study).with_test(MasksOrigin("segmenter", *test))
    assert combined == MasksOrigin("segmenter", *expect)
