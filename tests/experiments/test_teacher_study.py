"""The Seg-teacher init in the study: it learns from the split's training patients only, from the study's own
masks on the pixels of the images it is applied to, and its encoder is what the cells are built on."""

import json

import numpy as np
import pytest

import cmrprior.experiments.pretraining as pretraining_mod
from cmrprior.classify.inputs import build_slice_set
from cmrprior.errors import ConfigError
from cmrprior.experiments.study import run_study
from cmrprior.ssl.teacher import pretrain_teacher

from .study_doubles import install_cohort, tiny_cohort, tiny_config


def test_teacher_sees_training_patients_and_their_study_masks_only(tmp_path, monkeypatch):
    cohort = tiny_cohort()
    install_cohort(monkeypatch, {"COHORT": cohort})
    calls = []

    def recording_teacher(images, masks, config, out_dir, **kw):
        calls.append({"images": images.copy(), "masks": masks.copy(), "val": kw["val"], "out": out_dir})
        return pretrain_teacher(images, masks, config, out_dir, **kw)

    monkeypatch.setattr(pretraining_mod, "pretrain_teacher", recording_teacher)
    cfg = tiny_config(classifier={"inits": ["seg_teacher"]}, teacher={"epochs": 2, "batch_size": 8})
    run = tmp_path / "run"
    run_study("COHORT", run, cfg, report=False)

    splits = json.loads((run / "splits.json").read_text())
    assert len(calls) == len(splits) == 2
    spec = cfg.image_spec("segmented")
    reference = build_slice_set(cohort, spec, cfg.classifier.input_size)
    for split, call in zip(splits, calls):
        done = json.loads((run / f"splits/split_{split['index']}/pretrain/segmented/tiny/teacher/done.json").read_text())
        assert not set(done["patient_ids"] + done["val_patient_ids"]) & set(split["test"])
        assert (done["precision"], done["channels_last"]) == ("fp32", False)  # how it computed, for the report
        # exactly the segmented images and study masks of the inner training patients, ED then ES
        sub = reference.subset_patients(done["patient_ids"])
        np.testing.assert_array_equal(call["images"], np.concatenate([sub.ed, sub.es]))
        np.testing.assert_array_equal(call["masks"], np.concatenate([sub.ed_mask, sub.es_mask]))
        val = reference.subset_patients(done["val_patient_ids"])
        np.testing.assert_array_equal(call["val"][1], np.concatenate([val.ed_mask, val.es_mask]))
        for images in ("full", "segmented"):
            result = json.loads((run / f"splits/split_{split['index']}/cells/tiny/seg_teacher__{images}/result.json").read_text())
            assert result["status"] == "ok"
            assert result["pretrain_checkpoint"] == done["checkpoint"]
            assert not set(result["seen_patient_ids"]["pretrain"]) & set(split["test"])
    assert "Seg-teacher" in (run / "tables" / "table2.md").read_text()


def test_study_masks_line_up_with_the_images_they_teach():
    cohort = tiny_cohort()
    for images in ("full", "segmented"):
        s = build_slice_set(cohort, tiny_config().image_spec(images), 16)
        # the cohort's LV cavity is its brightest structure: at 16 px its pixels stay the brightest
        assert s.ed[s.ed_mask == 3].mean() > s.ed[s.ed_mask == 0].mean() + 0.3
        assert s.es[s.es_mask == 3].mean() > s.es[s.es_mask == 2].mean() + 0.3


def test_teacher_needs_masks_on_the_images_pixels(tmp_path, monkeypatch):
    install_cohort(monkeypatch, {"COHORT": tiny_cohort()})
    cfg = tiny_config(classifier={"inits": ["seg_teacher"]}, images={"segmented_mode": "crop"}, teacher={"epochs": 1})
    with pytest.raises(ConfigError, match="Seg-teacher init needs the heart masks"):
        run_study("COHORT", tmp_path / "run", cfg, report=False)
