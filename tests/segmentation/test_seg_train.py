"""Training loop: runs end to end, resumes exactly after a kill, refuses a changed config, needs masks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation.train import SegTrainConfig, split_patients, train_segmenter
from seg_doubles import TINY, make_cohort

CFG = SegTrainConfig(unet=TINY, max_epochs=2, batch_size=4, train_crop=24, warmup_steps=2, val_fraction=0.34,
                     checkpoint_every=2, num_threads=1)


def _weights(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_train_writes_model_log_and_split(tmp_path):
    cohort = make_cohort()
    model = train_segmenter(cohort, CFG, tmp_path)
    assert model == tmp_path / "model.safetensors" and model.exists()
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all(0 <= r["val_dice"] <= 1 for r in lines)
    split = json.loads((tmp_path / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"]) and len(split["val"]) == 3  # ceil(0.34 * 6), stratified
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["unet_args"]["channels"] == [4, 8] and meta["config"]["seed"] == 0
    # the final model is the best epoch's weights
    best = max(lines, key=lambda r: r["val_dice"])["epoch"]
    assert meta["epoch"] == best
    a, b = load_file(str(model)), load_file(str(tmp_path / "best.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    cohort = make_cohort()
    total = 7  # mid-epoch 1: 18 train samples (3 patients x 3 slices x 2 phases) / batch 4 = 5 steps per epoch
    full = train_segmenter(cohort, dataclasses.replace(CFG, max_steps=total), tmp_path / "full")
    assert full.name == "checkpoint.pt"
    killed = train_segmenter(cohort, dataclasses.replace(CFG, max_steps=3), tmp_path / "killed")
    assert killed.name == "checkpoint.pt"
    resumed = train_segmenter(cohort, dataclasses.replace(CFG, max_steps=total), tmp_path / "killed")
    wa, wb = _weights(full), _weights(resumed)
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    # and the killed run really stopped earlier (different weights at step 3)
    import torch

    early = train_segmenter(cohort, dataclasses.replace(CFG, max_steps=3), tmp_path / "early")
    we = torch.load(early, weights_only=True)["model"]
    assert any(not np.array_equal(wa[k].numpy(), we[k].numpy()) for k in wa)


def test_resume_across_an_epoch_boundary_with_validation(tmp_path):
    cohort = make_cohort()
    ref = train_segmenter(cohort, CFG, tmp_path / "ref")
    train_segmenter(cohort, dataclasses.replace(CFG, max_steps=8), tmp_path / "cut")  # epoch 1, step 2
    out = train_segmenter(cohort, CFG, tmp_path / "cut")
    a, b = load_file(str(ref)), load_file(str(out))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    la = (tmp_path / "ref" / "log.jsonl").read_text().splitlines()
    lb = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_dice"] for x in la] == [json.loads(x)["val_dice"] for x in lb]


def test_changed_config_is_refused(tmp_path):
    cohort = make_cohort()
    train_segmenter(cohort, dataclasses.replace(CFG, max_steps=1), tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        train_segmenter(cohort, dataclasses.replace(CFG, lr=0.5), tmp_path)


def test_needs_masks(tmp_path):
    cohort = dataclasses.replace(make_cohort(), ed_mask=None, es_mask=None)
    with pytest.raises(DataError, match="masks"):
        train_segmenter(cohort, CFG, tmp_path)


def test_split_is_by_patient_and_seeded():
    cohort = make_cohort(n_patients=10)
    tr, va = split_patients(cohort, 0.3, seed=1)
    assert sorted(tr + va) == sorted(cohort.patient_ids) and not set(tr) & set(va)
    assert (tr, va) == split_patients(cohort, 0.3, seed=1)
    # single-class cohort: falls back to a seeded random split of patients
    one = dataclasses.replace(cohort, patients=tuple(dataclasses.replace(p, label="NOR") for p in cohort.patients))
    tr1, va1 = split_patients(one, 0.3, seed=1)
    assert len(va1) == 3 and not set(tr1) & set(va1)


def test_config_json_round_trip():
    assert SegTrainConfig.from_json(json.loads(json.dumps(CFG.to_json()))) == CFG


def test_a_run_with_init_starts_from_those_weights_and_resumes_from_its_checkpoint(tmp_path):
    """Reference: the initial model's weights themselves (a run cut before its first step holds them), and an
    uninterrupted run with the same init (a killed run resumes from its checkpoint, not from the init again)."""
    cohort = make_cohort()
    first = train_segmenter(cohort, CFG, tmp_path / "first")
    cfg = dataclasses.replace(CFG, lr=1e-3).with_init(first)
    assert cfg.init == str(first) and len(cfg.init_sha256) == 64
    start = _weights(train_segmenter(cohort, dataclasses.replace(cfg, max_steps=0), tmp_path / "start"))
    want = load_file(str(first))
    assert set(start) == set(want) and all(np.array_equal(start[k].numpy(), want[k].numpy()) for k in want)
    scratch = _weights(train_segmenter(cohort, dataclasses.replace(CFG, max_steps=0), tmp_path / "scratch"))
    assert any(not np.array_equal(scratch[k].numpy(), want[k].numpy()) for k in want)
    full = train_segmenter(cohort, dataclasses.replace(cfg, max_steps=7), tmp_path / "full")
    train_segmenter(cohort, dataclasses.replace(cfg, max_steps=3), tmp_path / "killed")
    resumed = train_segmenter(cohort, dataclasses.replace(cfg, max_steps=7), tmp_path / "killed")
    wa, wb = _weights(full), _weights(resumed)
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    assert json.loads((tmp_path / "start" / "split.json").read_text())["train"]  # an ordinary run folder


def test_bad_initial_weights_are_refused(tmp_path):
    from cmrprior.segmentation.network import UNetArgs, build_unet, save_segmenter

    cohort = make_cohort()
    with pytest.raises(DataError, match="missing.safetensors.*not found"):
        CFG.with_init(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="together"):
        dataclasses.replace(CFG, init="x.safetensors")
    other = UNetArgs(channels=(4, 16), strides=(2,), num_res_units=0)
    wide = save_segmenter(build_unet(other), other, tmp_path / "wide.safetensors")
    with pytest.raises(DataError, match="wide.safetensors.*network arguments"):
        train_segmenter(cohort, CFG.with_init(wide), tmp_path / "a")
    same = save_segmenter(build_unet(TINY), TINY, tmp_path / "same.safetensors")
    cfg = CFG.with_init(same)
    save_segmenter(build_unet(TINY), TINY, same)  # other random weights in the same file
    with pytest.raises(DataError, match="same.safetensors.*changed"):
        train_segmenter(cohort, cfg, tmp_path / "b")


_TIMING = {"train_seconds", "slices_per_s", "peak_rss_mb"}


def _records(folder):
    """log.jsonl without the fields that measure time or memory."""
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in _TIMING} for x in lines]


def test_a_run_killed_between_its_epoch_record_and_its_checkpoint_writes_no_record_twice(tmp_path,
                                                                                          kill_before_checkpoint):
    """Reference: an uninterrupted run. The kill comes after epoch 0's line is in log.jsonl and before the
    checkpoint that says epoch 0 is done: the resumed run trains the rest of epoch 0 again and must write its
    line once (the old loop appended it a second time)."""
    cohort = make_cohort()
    ref = train_segmenter(cohort, CFG, tmp_path / "ref")
    kill_before_checkpoint(tmp_path / "cut" / "checkpoint.pt", tmp_path / "cut" / "log.jsonl", 1)
    with pytest.raises(Exception, match="killed before writing"):
        train_segmenter(cohort, CFG, tmp_path / "cut")
    assert len(_records(tmp_path / "cut")) == 1
    out = train_segmenter(cohort, CFG, tmp_path / "cut")
    assert _records(tmp_path / "cut") == _records(tmp_path / "ref") and [r["epoch"] for r in _records(tmp_path / "ref")] == [0, 1]
    a, b = load_file(str(ref)), load_file(str(out))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_a_checkpoint_without_records_takes_its_finished_epochs_from_log_jsonl(tmp_path):
    """Checkpoints written before the loop state held the epoch records (and torch's RNG) still resume: the
    finished epochs' lines come from log.jsonl, the lines after the checkpoint are dropped."""
    import torch

    cohort = make_cohort()
    train_segmenter(cohort, CFG, tmp_path / "ref")
    train_segmenter(cohort, dataclasses.replace(CFG, max_steps=7), tmp_path / "old")  # epoch 1, step 2
    path = tmp_path / "old" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["state"].pop("history")
    ckpt.pop("rng")
    torch.save(ckpt, path)
    with open(tmp_path / "old" / "log.jsonl", "a") as fh:  # a line the killed run wrote after its checkpoint
        fh.write(json.dumps({"epoch": 1, "train_loss": 9.0}) + "\n")
    train_segmenter(cohort, CFG, tmp_path / "old")
    assert _records(tmp_path / "old") == _records(tmp_path / "ref")


def test_the_same_seed_gives_the_same_weights_and_another_seed_other_weights(tmp_path):
    cohort = make_cohort()
    cfg = dataclasses.replace(CFG, max_epochs=1, val_fraction=0.0)
    a, b = (load_file(str(train_segmenter(cohort, cfg, tmp_path / n))) for n in ("a", "b"))
    c = load_file(str(train_segmenter(cohort, dataclasses.replace(cfg, seed=1), tmp_path / "c")))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert any(not np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)
