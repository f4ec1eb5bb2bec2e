"""Grad-CAM against the closed form for GAP + linear heads, a model that sees one quadrant, and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from saliency_doubles import EdEsModel, make_model, quadrant

from cmrprior.errors import ConfigError
from cmrprior.saliency.gradcam import gradcam, normalise_maps, resolve_gradcam_layer


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _reference_cam(model: EdEsModel, ed: torch.Tensor, es: torch.Tensor, target: torch.Tensor):
    """CAM (Zhou et al. 2016) by hand: with GAP and a linear head, Grad-CAM's weight of channel k for class c
    is W[c, k] / (h w), so the map is ReLU(sum_k W[c, k] A_k) / (h w), upsampled bilinearly."""
    f = model.encoder_ed.num_features
    out = []
    for enc, x, cols in ((model.encoder_ed, ed, slice(0, f)), (model.encoder_es, es, slice(f, 2 * f))):
        with torch.no_grad():
            a = enc.feature_map(x)  # (B, C, h, w)
            w = model.head.weight[:, cols][target]  # (B, C)
            cam = torch.relu(torch.einsum("bc,bchw->bhw", w, a)) / (a.shape[2] * a.shape[3])
            out.append(F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
    return out


@pytest.mark.parametrize("inplace", [False, True])
def test_gradcam_matches_closed_form_cam(inplace):
    model = make_model(channels=5, n_classes=4, seed=1, inplace=inplace)
    g = torch.Generator().manual_seed(0)
    ed, es = torch.randn(3, 1, 16, 20, generator=g), torch.randn(3, 1, 16, 20, generator=g)
    res = gradcam(model, ed, es)
    with torch.no_grad():
        logits = model(ed, es)
    assert torch.equal(res.target, logits.argmax(1))
    torch.testing.assert_close(res.logits, logits)
    ref_ed, ref_es = _reference_cam(model, ed, es, res.target)
    assert res.ed.shape == (3, 16, 20) and res.es.shape == (3, 16, 20)
    torch.testing.assert_close(res.ed, ref_ed, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.es, ref_es, rtol=1e-5, atol=1e-7)
    assert res.ed.abs().sum() > 0


def test_chosen_class_per_sample_and_scalar():
    model = make_model(channels=4, n_classes=3, seed=2)
    ed, es = torch.randn(2, 1, 12, 12), torch.randn(2, 1, 12, 12)
    t = torch.tensor([2, 0])
    res = gradcam(model, ed, es, target_class=t)
    assert torch.equal(res.target, t)
    ref_ed, _ = _reference_cam(model, ed, es, t)
    torch.testing.assert_close(res.ed, ref_ed, rtol=1e-5, atol=1e-7)
    res1 = gradcam(model, ed, es, target_class=1)
    assert res1.target.tolist() == [1, 1]
    with pytest.raises(ConfigError, match="out of range"):
        gradcam(model, ed, es, target_class=3)


def test_model_that_sees_one_quadrant_has_saliency_only_there():
    h = w = 32
    q = quadrant(h, w)
    model = make_model(channels=6, region=q, seed=3)
    with torch.no_grad():  # class 0 weighs every channel positively: its map is non-zero where features are
        model.head.weight[0].abs_()
    ed, es = torch.rand(4, 1, h, w) + 0.5, torch.rand(4, 1, h, w) + 0.5
    res = gradcam(model, ed, es, target_class=0)
    # the conv's receptive field (1 px) and bilinear upsampling (none here: same size) may bleed 1 px
    near = torch.zeros(h, w, dtype=torch.bool)
    near[: h // 2 + 1, : w // 2 + 1] = True
    for cam in (res.ed, res.es):
        total = cam.sum(dim=(1, 2))
        inside = (cam * near).sum(dim=(1, 2))
        assert (total > 0).all()
        assert torch.all(inside / total > 0.999)
        assert float(cam[:, h // 2 + 2 :, :].abs().max()) == 0.0
        assert float(cam[:, :, w // 2 + 2 :].abs().max()) == 0.0


def test_frozen_encoders_and_state_restored():
    model = make_model(seed=4)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    ed, es = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = gradcam(model, ed, es)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.isfinite(res.ed).all() and torch.isfinite(res.es).all()
    # hooks are removed: a plain forward afterwards is unaffected
    assert not model.encoder_ed.body[1]._forward_hooks


def test_missing_encoders_and_bad_layer_name():
    model = make_model()
    with pytest.raises(ConfigError, match="encoder"):
        gradcam(model, torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), encoder_attrs=("a", "b"))
    model.encoder_ed.gradcam_layer = "body.9"
    with pytest.raises(ConfigError, match="body.9"):
        resolve_gradcam_layer(model.encoder_ed)
    with pytest.raises(ConfigError, match=r"\(B, 1, H, W\)"):
        gradcam(model, torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))


def test_last_conv_fallback_and_normalise():
    enc = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 3, 3))
    assert resolve_gradcam_layer(enc) is enc[2]
    maps = torch.tensor([[[0.0, 2.0], [-1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    n = normalise_maps(maps)
    torch.testing.assert_close(n, torch.tensor([[[0.0, 1.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]]))


from cmrprior.models import registry  # noqa: E402  (a missing module must fail, not skip)


@pytest.mark.parametrize(
    "name",
    [
        "tiny",
        "resnet18",
        pytest.param("vgg16", marks=pytest.mark.slow),
        pytest.param("densenet121", marks=pytest.mark.slow),
        pytest.param("resnet50", marks=pytest.mark.slow),
    ],
)
def test_every_registry_backbone(name):
    """Each backbone's gradcam_layer resolves and gives finite, non-trivial maps for both branches."""
    if name not in registry.list_backbones():
        pytest.skip(f"{name} not registered")
    torch.manual_seed(0)
    enc_ed = registry.create_backbone(name, in_chans=1)
    enc_es = registry.create_backbone(name, in_chans=1)
    layer = resolve_gradcam_layer(enc_ed)
    assert layer is enc_ed.get_submodule(enc_ed.gradcam_layer)
    model = EdEsModel(enc_ed, enc_es, n_classes=5)
    with torch.no_grad():  # class 2 grows with every pooled feature: its map must be non-zero where features fire
        model.head.weight[2].abs_()
    size = 64 if name != "tiny" else 32
    g = torch.Generator().manual_seed(1)
    ed, es = torch.randn(1, 1, size, size, generator=g), torch.randn(1, 1, size, size, generator=g)
    res = gradcam(model, ed, es, target_class=2)
    for cam in (res.ed, res.es):
        assert cam.shape == (1, size, size)
        assert torch.isfinite(cam).all() and (cam >= 0).all()
    assert float(res.ed.sum() + res.es.sum()) > 0
