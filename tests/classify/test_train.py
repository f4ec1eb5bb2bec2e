"""Training: the cached-feature linear path equals the end-to-end frozen path; finetune; early stopping."""

import copy
import json

import numpy as np
import pytest
import torch

from cmrprior.classify.data import SliceSet, resize_stack
from cmrprior.classify.model import build_model
from cmrprior.classify.train import extract_features, fit_end_to_end, fit_head, head_proba, predict_proba
from cmrprior.errors import ConfigError


def toy_set(n_patients=12, slices=3, size=24, k=3, seed=0, signal=1.0):
    """Class k shows a bright square at a class-specific place in ED (and a dimmer one in ES)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_patients) % k
    ed, es, lab, pidx = [], [], [], []
    for p in range(n_patients):
        for _ in range(slices):
            a = rng.random((size, size)).astype(np.float32) * 0.3
            b = rng.random((size, size)).astype(np.float32) * 0.3
            r = 2 + 6 * labels[p]
            a[r : r + 5, r : r + 5] += signal
            b[r : r + 5, 4:9] += 0.5 * signal
            ed.append(a), es.append(b), lab.append(labels[p]), pidx.append(p)
    return SliceSet(np.stack(ed), np.stack(es), np.array(lab, np.int64), np.array(pidx, np.int64),
                    tuple(f"p{i:03d}" for i in range(n_patients)))


def test_linear_cached_features_equal_end_to_end():
    data = toy_set()
    m1 = build_model("tiny", "none", 3, seed=0)
    m2 = copy.deepcopy(m1)
    kw = dict(lr=1e-2, weight_decay=1e-4, epochs=4, batch_size=8, seed=3)
    r1 = fit_end_to_end(m1, data, mode="linear", **kw)
    feats = extract_features(m2, data)
    r2 = fit_head(m2.head, feats, data.labels, **kw)
    assert torch.allclose(m1.head.weight, m2.head.weight, atol=1e-5)
    assert torch.allclose(m1.head.bias, m2.head.bias, atol=1e-5)
    assert [h["train_loss"] for h in r1.history] == pytest.approx([h["train_loss"] for h in r2.history], rel=1e-5)
    # encoders untouched by linear training
    m0 = build_model("tiny", "none", 3, seed=0)
    for k, v in m0.ed_encoder.state_dict().items():
        assert torch.equal(v, m1.ed_encoder.state_dict()[k])
    # and the two paths predict the same
    assert np.allclose(predict_proba(m1, data), head_proba(m2.head, feats), atol=1e-5)


def test_linear_learns_separable_task_and_validation_history():
    data = toy_set(n_patients=18, signal=2.0)
    val = toy_set(n_patients=9, seed=1, signal=2.0)
    m = build_model("tiny", "none", 3, seed=0)
    feats = extract_features(m, data)
    vf = extract_features(m, val)
    res = fit_head(m.head, feats, data.labels, lr=3e-2, epochs=30, batch_size=16, seed=0,
                   val=(vf, val.labels, val.patient_index, val.n_patients))
    assert len(res.history) == 30 and all(h["val_auc"] is not None for h in res.history)
    assert max(h["val_auc"] for h in res.history) > 0.9
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_early_stopping_restores_best_epoch():
    data = toy_set(n_patients=6)
    val = toy_set(n_patients=6, seed=5, signal=-1.0)  # validation that disagrees: loss goes up
    m = build_model("tiny", "none", 3, seed=0)
    f, vf = extract_features(m, data), extract_features(m, val)
    res = fit_head(m.head, f, data.labels, lr=5e-2, epochs=40, batch_size=6, seed=0,
                   val=(vf, val.labels, val.patient_index, val.n_patients), patience=3)
    best = min(res.history, key=lambda h: h["val_loss"])
    assert res.stopped_early and len(res.history) < 40
    assert res.best_epoch == best["epoch"]
    vp = head_proba(m.head, vf)
    loss = -np.log(vp[np.arange(len(val.labels)), val.labels]).mean()
    assert loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_finetune_updates_encoders_with_lower_lr():
    data = toy_set(n_patients=6)
    m = build_model("tiny", "none", 3, seed=0)
    before = copy.deepcopy(m.state_dict())
    fit_end_to_end(m, data, mode="finetune", lr=1e-2, encoder_lr=1e-3, epochs=1, batch_size=6, seed=0)
    after = m.state_dict()
    assert not torch.equal(before["ed_encoder.features.0.0.weight"], after["ed_encoder.features.0.0.weight"])
    with pytest.raises(ConfigError):
        fit_end_to_end(m, data, mode="bogus", lr=1e-2)


def test_resize_stack():
    x = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    y = resize_stack(x, 32)
    assert y.shape == (2, 32, 32) and y.dtype == np.float32
    assert np.allclose(y.mean(), x.mean(), atol=0.01)
    assert resize_stack(x, 64) is x


def test_subset_patients_keeps_patient_structure():
    data = toy_set(n_patients=5)
    sub = data.subset_patients(["p003", "p001"])
    assert sub.patient_ids == ("p003", "p001") and sub.n_patients == 2
    assert np.array_equal(sub.patient_labels, data.patient_labels[[3, 1]])
    assert np.array_equal(sub.ed[0], data.ed[data.patient_index == 3][0])


def test_fold_standardization_is_exact():
    from torch import nn

    from cmrprior.classify.train import fold_standardization, standardization

    rng = np.random.default_rng(0)
    f = (rng.normal(size=(50, 6)) * [1, 10, 0.1, 5, 2, 3] + [0, 4, -2, 1, 0, 9]).astype(np.float32)
    mean, sd = standardization(f)
    assert np.allclose(((f - mean) / sd).mean(0), 0, atol=1e-5) and np.allclose(((f - mean) / sd).std(0), 1, atol=1e-4)
    head = nn.Linear(6, 3)
    want = head_proba(head, (f - mean) / sd)
    fold_standardization(head, mean, sd)
    assert np.allclose(head_proba(head, f), want, atol=1e-6)


@pytest.mark.parametrize("n, bs, merge, expect", [
    (10, 4, False, [(0, 4), (4, 8), (8, 10)]),
    (10, 4, True, [(0, 4), (4, 8), (8, 10)]),
    (9, 4, False, [(0, 4), (4, 8), (8, 9)]),
    (9, 4, True, [(0, 4), (4, 9)]),
    (1, 4, True, [(0, 1)]),  # one item in all: nothing to merge with
    (8, 4, True, [(0, 4), (4, 8)]),
])
def test_batch_bounds(n, bs, merge, expect):
    from cmrprior.classify.train import batch_bounds

    assert batch_bounds(n, bs, merge_single=merge) == expect


def test_finetune_never_trains_batch_norm_on_one_image():
    """DenseNet121 at 32 px ends on a 1 x 1 map: batch norm in training mode cannot take a batch of one."""
    data = toy_set(n_patients=5, slices=1, size=32)  # 5 slice pairs, batches of 4: the last one would have 1
    model = build_model("densenet121", "none", 3, seed=0)
    seen = []
    model.ed_encoder.trunk.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]) if m.training else None)
    fit_end_to_end(model, data, mode="finetune", lr=1e-3, encoder_lr=1e-3, epochs=1, batch_size=4, seed=0)
    assert seen == [5]


def _finetune(out_dir=None, epochs=6, seed=0):
    data, val = toy_set(n_patients=6), toy_set(n_patients=6, seed=5, signal=-1.0)
    m = build_model("tiny", "none", 3, seed=0)
    res = fit_end_to_end(m, data, mode="finetune", lr=3e-2, encoder_lr=1e-2, epochs=epochs, batch_size=5, seed=seed,
                         val=val, patience=2, out_dir=out_dir)
    return m, res


def _same_fit(a, b) -> None:
    (ma, ra), (mb, rb) = a, b
    sa, sb = ma.state_dict(), mb.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (ra.history, ra.best_epoch, ra.stopped_early) == (rb.history, rb.best_epoch, rb.stopped_early)
    assert all(np.array_equal(x, y) for x, y in zip(ra.val_patient_probs, rb.val_patient_probs, strict=True))


def test_a_killed_finetune_resumes_to_the_uninterrupted_fit(tmp_path, kill_before_checkpoint):
    """Reference: the same fit in memory, uninterrupted (early stopping and the best epoch's weights included).
    The kill comes after epoch 2's record and before its checkpoint."""
    whole = _finetune()
    kill_before_checkpoint(tmp_path / "last.pt", tmp_path / "metrics.jsonl", 2)
    with pytest.raises(Exception, match="killed before writing"):
        _finetune(tmp_path)
    resumed = _finetune(tmp_path)
    _same_fit(whole, resumed)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == whole[1].history


def test_a_linear_fit_stopped_after_k_epochs_continues_to_the_uninterrupted_fit(tmp_path):
    data = toy_set()
    feats = extract_features(build_model("tiny", "none", 3, seed=0), data)

    def fit(epochs, out_dir=None):
        torch.manual_seed(1)
        head = torch.nn.Linear(feats.shape[1], 3)
        return head, fit_head(head, feats, data.labels, lr=1e-2, epochs=epochs, batch_size=8, seed=3, out_dir=out_dir)

    (ha, ra) = fit(5)
    fit(2, tmp_path)
    (hb, rb) = fit(5, tmp_path)
    assert torch.equal(ha.weight, hb.weight) and torch.equal(ha.bias, hb.bias) and ra.history == rb.history
    with pytest.raises(ConfigError, match="last.pt.*different classifier configuration.*lr"):
        fit_head(torch.nn.Linear(feats.shape[1], 3), feats, data.labels, lr=0.5, epochs=5, out_dir=tmp_path)


def test_the_same_seed_gives_the_same_fit_and_another_seed_another():
    _same_fit(_finetune(epochs=2), _finetune(epochs=2))
    a, b = _finetune(epochs=2)[0].state_dict(), _finetune(epochs=2, seed=1)[0].state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)
