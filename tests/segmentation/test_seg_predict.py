"""segment_prepared, the default-model lookup, and cross-validation folds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cmrprior.errors import DataError, WeightsUnavailableError
from cmrprior.segmentation import predict as predict_mod
from cmrprior.segmentation.cv import FOLD_SPLIT_FILE, cross_validate, make_folds
from cmrprior.segmentation.network import build_unet, save_segmenter
from cmrprior.segmentation.postprocess import postprocess_labels
from cmrprior.segmentation.predict import predict_slices, segment_prepared
from cmrprior.segmentation.train import SegTrainConfig
from seg_doubles import TINY, make_cohort


def _model(tmp_path):
    torch.manual_seed(1)
    return save_segmenter(build_unet(TINY), TINY, tmp_path / "m.safetensors")


def test_segment_prepared_replaces_masks_only(tmp_path):
    cohort = make_cohort(n_patients=3)
    ed0 = cohort.ed.copy()
    out = segment_prepared(cohort, _model(tmp_path), postprocess=False)
    np.testing.assert_array_equal(out.ed, cohort.ed)
    np.testing.assert_array_equal(cohort.ed, ed0)
    assert out.ed_mask.shape == cohort.ed.shape and out.ed_mask.dtype == np.uint8
    from cmrprior.segmentation.network import load_segmenter

    model, _, _ = load_segmenter(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(out.es_mask, predict_slices(model, cohort.es))
    # with post-processing: each patient's stack is cleaned on its own
    post = segment_prepared(cohort, tmp_path / "m.safetensors")
    for p in range(3):
        idx = np.flatnonzero(cohort.patient_index == p)
        np.testing.assert_array_equal(post.ed_mask[idx], postprocess_labels(out.ed_mask[idx]))


def test_missing_shipped_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(predict_mod, "SHIPPED_MODEL", tmp_path / "nothing.safetensors")
    with pytest.raises(WeightsUnavailableError, match="nothing.safetensors"):
        segment_prepared(make_cohort(n_patients=1))


def test_folds_are_by_patient_and_cover_everyone():
    cohort = make_cohort(n_patients=8)
    folds = make_folds(cohort, 2, seed=0)
    held = [set(te) for _, te in folds]
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == set(cohort.patient_ids)
    for tr, te in folds:
        assert set(tr).isdisjoint(te)


def test_cross_validation_runs_and_resumes(tmp_path):
    cohort = make_cohort(n_patients=8)
    cfg = SegTrainConfig(unet=TINY, max_epochs=1, batch_size=8, train_crop=None, warmup_steps=1, val_fraction=0.25,
                         num_threads=1)
    rows = cross_validate(cohort, cfg, tmp_path, folds=2)
    assert len(rows) == 16 and {r["fold"] for r in rows} == {0, 1}
    assert (tmp_path / "cv_summary.csv").exists()
    stamp = (tmp_path / "fold_0" / "metrics.csv").stat().st_mtime_ns
    again = cross_validate(cohort, cfg, tmp_path, folds=2)  # finished folds are read back, not redone
    assert (tmp_path / "fold_0" / "metrics.csv").stat().st_mtime_ns == stamp
    assert [r["dice_LV"] for r in again] == pytest.approx([r["dice_LV"] for r in rows], nan_ok=True)


def test_patients_with_the_same_images_are_held_out_by_the_same_fold():
    cohort = make_cohort(n_patients=10)
    ids = cohort.patient_ids
    plain = make_folds(cohort, 3, seed=0)
    fold_of = {p: f for f, (_, te) in enumerate(plain) for p in te}
    kept = ids[0]
    dup = next(p for p in ids if fold_of[p] != fold_of[kept])  # a pair the plain folds split apart
    joined = make_folds(cohort, 3, seed=0, duplicates=[(kept, dup)])
    for f, (tr, te) in enumerate(joined):
        want_test = [p for p in plain[f][1] if p != dup] + ([dup] if f == fold_of[kept] else [])
        assert te == want_test
        assert tr == [p for p in ids if p not in te]  # the cohort's order
    # only the two folds the duplicate left and joined change
    assert [f for f in range(3) if joined[f] != plain[f]] == sorted({fold_of[kept], fold_of[dup]})


def test_a_fold_made_with_other_patients_is_not_resumed(tmp_path):
    cohort = make_cohort(n_patients=8)
    cfg = SegTrainConfig(unet=TINY, max_epochs=1, batch_size=8, train_crop=None, warmup_steps=1, val_fraction=0.25,
                         num_threads=1)
    (train, test), _ = make_folds(cohort, 2, seed=0)
    other = {"train": train[1:] + test[:1], "test": test[1:] + train[:1]}  # one patient swapped
    split_file = tmp_path / "fold_0" / FOLD_SPLIT_FILE
    split_file.parent.mkdir()
    split_file.write_text(json.dumps(other))
    with pytest.raises(DataError, match="fold_0/test_patients.json.*other patients"):
        cross_validate(cohort, cfg, tmp_path, folds=2)
    assert not (tmp_path / "fold_0" / "metrics.csv").exists()
    split_file.write_text("{")
    with pytest.raises(DataError, match="fold_0/test_patients.json.*unreadable fold split"):
        cross_validate(cohort, cfg, tmp_path, folds=2)


def test_cross_validation_from_an_earlier_run_starts_each_fold_from_that_folds_model(tmp_path):
    """Fold k starts from the earlier run's fold k model (its sha256 is recorded); an earlier run whose folds
    held out other patients (another seed) is refused, since its fold models saw this run's held-out patients."""
    from cmrprior.segmentation.predict import file_sha256

    cohort = make_cohort(n_patients=8)
    cfg = SegTrainConfig(unet=TINY, max_epochs=1, batch_size=8, train_crop=None, warmup_steps=1, val_fraction=0.25,
                         num_threads=1)
    cross_validate(cohort, cfg, tmp_path / "first", folds=2)
    cross_validate(cohort, cfg, tmp_path / "again", folds=2, init_cv=tmp_path / "first")
    for k in (0, 1):
        used = json.loads((tmp_path / "again" / f"fold_{k}" / "model.json").read_text())["config"]
        assert used["init"] == str(tmp_path / "first" / f"fold_{k}" / "model.safetensors")
        assert used["init_sha256"] == file_sha256(tmp_path / "first" / f"fold_{k}" / "model.safetensors")
    cross_validate(cohort, dataclasses.replace(cfg, seed=3), tmp_path / "seed3", folds=2)
    assert make_folds(cohort, 2, seed=3)[0][1] != make_folds(cohort, 2, seed=0)[0][1]
    with pytest.raises(DataError, match="fold_0/test_patients.json.*held out other patients"):
        cross_validate(cohort, cfg, tmp_path / "bad", folds=2, init_cv=tmp_path / "seed3")
