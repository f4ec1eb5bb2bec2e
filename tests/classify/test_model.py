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
    import cmrprior.classify.model as model_mod

    enc = create_backbone("tiny")
    torch.nn.init.constant_(enc.features[0][0].weight, 0.123)
    monkeypatch.setattr(model_mod, "load_encoder", lambda path: enc)
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
    save_classifier(m, tmp_path / "m.pt", classes=list("abcd"), meta={"x": 1})
    m2, info = load_classifier(tmp_path / "m.pt")
    x = torch.rand(2, 32, 32)
    assert torch.allclose(m(x, x), m2(x, x)) and info["classes"] == list("abcd") and info["meta"] == {"x": 1}


def test_bad_classes():
    with pytest.raises(ConfigError):
        DiagnosisModel(create_backbone("tiny"), create_backbone("tiny"), 1)


def test_save_load_roundtrip_keeps_backbone_arguments(tmp_path):
    """A backbone built with extra arguments reloads from the checkpoint alone."""
    enc = create_backbone("tiny", widths=(8, 12), norm="none")
    m = DiagnosisModel(enc, create_backbone("tiny", widths=(8, 12), norm="none"), 3).eval()
    save_classifier(m, tmp_path / "m.pt", classes=list("abc"), meta={})
    m2, _ = load_classifier(tmp_path / "m.pt")
    x = torch.rand(2, 32, 32)
    assert m2.ed_encoder.model_args["backbone_kwargs"] == {"widths": (8, 12), "norm": "none"}
    assert torch.allclose(m(x, x), m2(x, x))


def test_imagenet_init_normalises_inside_the_model_and_reloads(tmp_path, monkeypatch):
    """Local ImageNet file: the model on a [0, 1] grey image equals torchvision's RGB network (fc removed) on
    [y, y, y] with y = (g - mu) / sigma, hand-computed from torchvision's channel statistics."""
    import torchvision

    from cmrprior.models import weights as W

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    torch.manual_seed(3)
    state = torchvision.models.resnet18(weights=None).state_dict()
    W.imagenet_cache_path("resnet18").parent.mkdir(parents=True)
    torch.save(state, W.imagenet_cache_path("resnet18"))
    m = build_model("resnet18", "imagenet", 3, seed=0).eval()
    sigma = 1 / ((1 / 0.229 + 1 / 0.224 + 1 / 0.225) / 3)
    mu = sigma * (0.485 / 0.229 + 0.456 / 0.224 + 0.406 / 0.225) / 3
    assert float(m.input_mean) == pytest.approx(mu, abs=1e-7) and float(m.input_std) == pytest.approx(sigma, abs=1e-7)
    ref = torchvision.models.resnet18(weights=None)
    ref.load_state_dict(state)
    ref.fc = torch.nn.Identity()
    ref.eval()
    ed, es = torch.rand(2, 32, 32), torch.rand(2, 32, 32)
    with torch.no_grad():
        y = ((ed - mu) / sigma)[:, None].repeat(1, 3, 1, 1)
        torch.testing.assert_close(m.features(ed, es)[:, :512], ref(y), rtol=1e-4, atol=1e-4)
    save_classifier(m, tmp_path / "m.pt", classes=list("abc"), meta={})
    m2, _ = load_classifier(tmp_path / "m.pt")
    assert float(m2.input_mean) == float(m.input_mean) and float(m2.input_std) == float(m.input_std)
    with torch.no_grad():
        assert torch.equal(m(ed, es), m2(ed, es))
    assert float(build_model("tiny", "none", 3).input_std) == 1.0  # the other inits see their images as they are


def test_checkpoint_without_normalisation_buffers_loads_as_identity(tmp_path):
    m = build_model("tiny", "none", 3, seed=2).eval()
    save_classifier(m, tmp_path / "m.pt", classes=list("abc"), meta={})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("input_")}
    torch.save(payload, tmp_path / "old.pt")
    m2, _ = load_classifier(tmp_path / "old.pt")
    x = torch.rand(2, 32, 32)
    assert torch.equal(m(x, x), m2(x, x)) and float(m2.input_mean) == 0.0
