"""Pre-training loop on a tiny backbone: loss falls, kill + resume == uninterrupted, files, encoder loading."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cmrprior.errors import ConfigError, DataError
from cmrprior.ssl.checkpoint import load_encoder
from cmrprior.ssl.config import PretrainConfig
from cmrprior.ssl.model import recalibrate_batchnorm
from cmrprior.ssl.pretrain import pretrain, select_batch_size


def _blobs(n, size=32, seed=0):
    """Images with a bright disc of random radius/position: something to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(8, size - 8, 2)
        r = rng.uniform(3, 8)
        out[i] = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) + 0.05 * rng.standard_normal((size, size))
    return out


CFG = PretrainConfig(backbone="tiny", backbone_kwargs={"widths": (8, 16)}, image_size=32, batch_size=8, epochs=2, device="cpu",
                     proj_hidden_dim=16, proj_dim=8, lr=1e-3, val_batch_size=8, progress=False, seed=3)


def _states_equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    train, val = _blobs(24), _blobs(10, seed=1)
    full = pretrain(train, CFG, tmp_path / "full", val_images=val)
    assert full.finished and len(full.history) == 2
    # "killed" after 4 of 6 steps (mid epoch 2), then the same command again
    part = pretrain(train, dataclasses.replace(CFG, max_steps=4), tmp_path / "resumed", val_images=val)
    assert not part.finished and len(part.history) == 1
    resumed = pretrain(train, CFG, tmp_path / "resumed", val_images=val)
    assert resumed.finished
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert _states_equal(a["model"], b["model"])
    assert a["state"]["step"] == b["state"]["step"] == 6
    for ha, hb in zip(full.history, resumed.history):
        assert {k: v for k, v in ha.items() if k != "seconds"} == {k: v for k, v in hb.items() if k != "seconds"}
    # optimizer state too
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    # metrics.jsonl mirrors the history
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[1]["val_loss"] == resumed.history[1]["val_loss"]


def test_resume_refuses_a_different_config(tmp_path):
    train = _blobs(16)
    pretrain(train, dataclasses.replace(CFG, epochs=1), tmp_path / "r")
    with pytest.raises(ConfigError, match="different configuration.*lr"):
        pretrain(train, dataclasses.replace(CFG, lr=0.5), tmp_path / "r")
    # more epochs is a valid continuation
    res = pretrain(train, dataclasses.replace(CFG, epochs=2), tmp_path / "r")
    assert [h["epoch"] for h in res.history] == [1, 2]


def test_heldout_loss_falls_and_encoder_loads(tmp_path):
    train, val = _blobs(64, seed=2), _blobs(16, seed=5)
    cfg = dataclasses.replace(CFG, epochs=4, batch_size=16, lr=3e-3, precision="fp32")
    res = pretrain(train, cfg, tmp_path / "run", val_images=val)
    vals = [h["val_loss"] for h in res.history]
    assert min(vals[1:]) < vals[0]
    assert res.best_val_loss == min(vals)
    enc = load_encoder(res.checkpoint)
    ckpt = torch.load(res.checkpoint, weights_only=True)
    assert ckpt["val_loss"] == res.best_val_loss
    assert _states_equal(enc.state_dict(), ckpt["encoder"])
    assert enc.forward_features(torch.zeros(2, 1, 32, 32)).shape == (2, 16)
    assert load_encoder(tmp_path / "run").num_features == 16  # a run folder works too


def test_early_stopping(tmp_path):
    train, val = _blobs(16), _blobs(8, seed=1)
    # lr so small that the held-out loss cannot improve by min_delta: stops after `patience` epochs
    cfg = dataclasses.replace(CFG, epochs=10, patience=2, lr=1e-9, min_delta=1.0)
    res = pretrain(train, cfg, tmp_path / "r", val_images=val)
    assert res.stopped_early and len(res.history) == 3


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match=r"must be \(N, H, W\)"):
        pretrain(np.zeros((4, 1, 8, 8), np.float32), CFG, tmp_path / "a")
    bad = _blobs(8)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        pretrain(bad, CFG, tmp_path / "b")
    with pytest.raises(ConfigError, match="precision"):
        PretrainConfig(precision="fp16")
    with pytest.raises(DataError, match="not found"):
        load_encoder(tmp_path / "nothing.pt")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read checkpoint to resume"):
        pretrain(_blobs(8), CFG, tmp_path / "c")
    with pytest.raises(DataError, match="cannot read checkpoint"):
        load_encoder(tmp_path / "c" / "last.pt")


def test_extra_unlabeled_and_select_batch_size(tmp_path):
    train, val, extra = _blobs(12), _blobs(8, seed=1), _blobs(4, seed=9)
    cfg = dataclasses.replace(CFG, epochs=1)
    res = pretrain(train, cfg, tmp_path / "x", val_images=val, extra_unlabeled=extra)
    assert res.history[0]["step"] == 2  # 16 images / batch 8
    best, results = select_batch_size(train, val, cfg, tmp_path / "grid", grid=(4, 8, 64))
    assert sorted(results) == [4, 8, 12]  # 64 capped at the 12 training images
    assert results[best].best_val_loss == min(r.best_val_loss for r in results.values())


def test_bf16_channels_last_path_runs(tmp_path):
    """The GPU default path (bf16 autocast + channels-last) also runs on CPU; the loss stays float32."""
    cfg = dataclasses.replace(CFG, epochs=1, precision="bf16", channels_last=True)
    res = pretrain(_blobs(16), cfg, tmp_path / "r", val_images=_blobs(8, seed=1))
    assert np.isfinite(res.history[0]["train_loss"]) and np.isfinite(res.history[0]["val_loss"])
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["config"]["precision"] == "bf16"


def test_recalibrate_batchnorm_matches_dataset_statistics():
    from cmrprior.models.registry import create_backbone

    torch.manual_seed(0)
    enc = create_backbone("tiny", widths=(4,))
    x = torch.from_numpy(_blobs(10)).unsqueeze(1) * 3 + 1
    recalibrate_batchnorm(enc, x, batch_size=4)
    assert not enc.training
    with torch.no_grad():
        pre = enc.features[0][0](x)  # conv output before the BN
    bn = enc.features[0][1]
    # batches of 4, 4, 2: per-batch means and unbiased variances averaged with equal weights
    # (torch's cumulative average for momentum=None)
    mean = torch.stack([pre[i:i + 4].mean(dim=(0, 2, 3)) for i in (0, 4, 8)]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    var = torch.stack([pre[i:i + 4].var(dim=(0, 2, 3), unbiased=True) for i in (0, 4, 8)]).mean(0)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)


def test_resume_refuses_other_images_and_keeps_the_run(tmp_path):
    """A checkpoint is continued only on the images it was trained on (same config, other data: refused)."""
    a, b = _blobs(16, seed=0), _blobs(16, seed=9)
    pretrain(a, dataclasses.replace(CFG, epochs=1), tmp_path / "r")
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"last.pt: the run folder holds a run pre-trained on other images"):
        pretrain(b, CFG, tmp_path / "r")
    with pytest.raises(ConfigError, match="other images"):  # the same training images, other held-out ones
        pretrain(a, CFG, tmp_path / "r", val_images=b[:4])
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    assert [h["epoch"] for h in pretrain(a, CFG, tmp_path / "r").history] == [1, 2]  # the same images resume


def test_a_run_killed_between_its_epoch_record_and_its_checkpoint_resumes_to_the_uninterrupted_run(
        tmp_path, kill_before_checkpoint):
    """Reference: an uninterrupted run; metrics.jsonl holds each epoch once, the weights are the same."""
    train, val = _blobs(24), _blobs(10, seed=1)
    full = pretrain(train, CFG, tmp_path / "full", val_images=val)
    kill_before_checkpoint(tmp_path / "cut" / "last.pt", tmp_path / "cut" / "metrics.jsonl", 1)
    with pytest.raises(Exception, match="killed before writing"):
        pretrain(train, CFG, tmp_path / "cut", val_images=val)
    resumed = pretrain(train, CFG, tmp_path / "cut", val_images=val)
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert [r["val_loss"] for r in lines] == [h["val_loss"] for h in full.history]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert _states_equal(a["model"], b["model"]) and resumed.best_val_loss == full.best_val_loss


def test_the_same_seed_gives_the_same_weights_and_another_seed_other_weights(tmp_path):
    train = _blobs(16)
    cfg = dataclasses.replace(CFG, epochs=1)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        pretrain(train, dataclasses.replace(cfg, seed=seed), tmp_path / name)
    a, b, c = (torch.load(tmp_path / n / "last.pt", weights_only=True)["model"] for n in "abc")
    assert _states_equal(a, b) and not _states_equal(a, c)
