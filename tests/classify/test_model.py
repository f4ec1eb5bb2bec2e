"""The ED/ES two-branch diagnosis model."""

import numpy as np
import pytest
import torch

from cmrprior.classify.model import DiagnosisModel, build_model, load_classifier, save_classifier
from cmrprior.errors import ConfigError, WeightsUnavailableError
from cmrprior.models.registry import create_backbone


@pytest.mark.parametrize("k,b,s", [(5, 3, 32), (2, 1, 40)])
def test_shapes_and_concatenation(k, b, s):
    m = build_model("tiny", "none", k, seed=0).eval()
    ed, es = torch.rand(b, s, s), torch.rand(b, s, s)
    logits = m(ed, es)
    assert logits.shape == (b, k)
    f = m.features(ed, es)
    assert f.shape == (b, 2 * m.ed_encoder.num_features)
    # features are [ED encoder(ED), ES encoder(ES)] and the head is one linear layer on them
    ref = torch.cat([m.ed_encoder.forward_features(ed[:, None]), m.es_encoder.forward_features(es[:, None])], 1)
    assert torch.allclose(f, ref)
    assert torch.allclose(logits, ref @ m.head.weight.T + m.head.bias, atol=1e-6)


def test_branches_are_separate_and_see_their_own_frame():
    m = build_model("tiny", "none", 3, seed=0).eval()
    ed, es = torch.rand(2, 32, 32), torch.rand(2, 32, 32)
    f1 = m.features(ed, es)
    f2 = m.features(ed, torch.rand(2, 32, 32))
    n = m.ed_encoder.num_features
    assert torch.allclose(f1[:, :n], f2[:, :n]) and not torch.allclose(f1[:, n:], f2[:, n:])
    assert m.ed_encoder is not m.es_encoder


def test_seeded_init_is_reproducible():
    a = build_model("tiny", "none", 3, seed=4).state_dict()
    b = build_model("tiny", "none", 3, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sscl_init_loads_checkpoint_into_both_branches(monkeypatch, tmp_path):
    import sys
    import types

    enc = create_backbone("tiny")
    torch.nn.init.constant_(enc.features[0][0].weight, 0.123)
    fake = types.ModuleType("cmrprior.ssl.checkpoint")
    fake.load_encoder = lambda path: enc
    monkeypatch.setitem(sys.modules, "cmrprior.ssl.checkpoint", fake)
    m = build_model("tiny", "full_sscl", 3, checkpoint=tmp_path / "x.pt")
    for branch in (m.ed_encoder, m.es_encoder):
        assert torch.all(branch.features[0][0].weight == 0.123)
    with pytest.raises(ConfigError):
        build_model("tiny", "segmented_sscl", 3)


def test_imagenet_unavailable_offline_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import cmrprior.models.weights as w

    monkeypatch.setattr(w, "_download", lambda url, dst: (_ for _ in ()).throw(OSError("offline")), raising=False)
    with pytest.raises(WeightsUnavailableError):
        build_model("resnet18", "imagenet", 3)


def test_save_load_roundtrip(tmp_path):
    m = build_model("tiny", "none", 4, seed=1).eval()
    save_classifier(m, tmp_path / "m.pt", backbone="tiny", classes=list("abcd"), meta={"x": 1})
    m2, info = load_classifier(tmp_path / "m.pt")
    x = torch.rand(2, 32, 32)
    assert torch.allclose(m(x, x), m2(x, x)) and info["classes"] == list("abcd") and info["meta"] == {"x": 1}


def test_bad_classes():
    with pytest.raises(ConfigError):
        DiagnosisModel(create_backbone("tiny"), create_backbone("tiny"), 1)
