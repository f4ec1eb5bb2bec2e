"""Weights loading: local files the test writes (torch and safetensors), first-conv adaptation,
offline ImageNet error. Nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from cmrprior.errors import ConfigError, WeightsUnavailableError
from cmrprior.models import weights as W
from cmrprior.models.registry import create_backbone


def _tv_resnet18_state(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_grey_conv_equals_rgb_conv_on_repeated_image():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 7, 7)
    x = torch.randn(2, 1, 20, 20)
    grey = F.conv2d(x, W.adapt_input_conv(w, 1), stride=2, padding=3)
    rgb = F.conv2d(x.repeat(1, 3, 1, 1), w, stride=2, padding=3)
    torch.testing.assert_close(grey, rgb, rtol=1e-5, atol=1e-5)
    # hand computation for a single output pixel
    assert torch.allclose(W.adapt_input_conv(w, 1)[0, 0, 0, 0], w[0, 0, 0, 0] + w[0, 1, 0, 0] + w[0, 2, 0, 0])
    assert torch.equal(W.adapt_input_conv(w, 3), w)
    w5 = W.adapt_input_conv(w, 5)
    assert w5.shape == (8, 5, 7, 7)
    torch.testing.assert_close(w5[:, 3], w[:, 0] * 3 / 5)


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "wrapped"])
def test_local_torchvision_file_loads_into_grey_backbone(tmp_path, fmt):
    state = _tv_resnet18_state()
    path = tmp_path / f"resnet18.{ 'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "wrapped":
        torch.save({"state_dict": state, "epoch": 3}, path)
    else:
        torch.save(state, path)
    net = create_backbone("resnet18", in_chans=1, weights=path)
    own = net.state_dict()
    assert torch.equal(own["trunk.conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    for k, v in state.items():
        if k.startswith("fc.") or k == "conv1.weight":
            continue
        assert torch.equal(own["trunk." + k], v), k
    if fmt != "pth":
        return
    # behaviour: grey backbone on x == torchvision RGB resnet18 (fc removed) on x repeated 3 times
    ref = torchvision.models.resnet18(weights=None)
    ref.load_state_dict(state)
    ref.fc = torch.nn.Identity()
    ref.eval(), net.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_vgg16_torchvision_layout(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    feats = make_layers(cfgs["D"])
    state = {f"features.{k}": v for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(3, 3)  # torchvision's head: dropped on loading
    torch.save(state, tmp_path / "vgg16.pth")
    net = create_backbone("vgg16", weights=tmp_path / "vgg16.pth")
    assert torch.equal(net.state_dict()["trunk.features.0.weight"], state["features.0.weight"].sum(1, keepdim=True))
    assert torch.equal(net.state_dict()["trunk.features.28.weight"], state["features.28.weight"])


def test_own_layout_roundtrip(tmp_path):
    torch.manual_seed(1)
    a = create_backbone("tiny")
    torch.save(a.state_dict(), tmp_path / "tiny.pt")
    torch.manual_seed(2)
    b = create_backbone("tiny", weights=tmp_path / "tiny.pt")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_imagenet_from_cache_and_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))

    def offline(url, dst):
        raise OSError("network unreachable")

    monkeypatch.setattr(W, "_download", offline)
    cache = W.imagenet_cache_path("resnet18")
    assert cache == tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("resnet18", weights="imagenet")
    msg = str(err.value)
    assert str(cache) in msg and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "--weights" in msg
    # once the file is where the message says, it loads
    cache.parent.mkdir(parents=True)
    state = _tv_resnet18_state(5)
    torch.save(state, cache)
    net = create_backbone("resnet18", weights="imagenet")
    assert torch.equal(net.state_dict()["trunk.layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_densenet_old_key_names_and_missing_buffers(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.densenet121(weights=None).state_dict()
    # torchvision's published file uses 'norm.1' style keys and predates num_batches_tracked
    old = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        old[k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.")] = v
    assert any(".norm.1." in k for k in old)
    torch.save(old, tmp_path / "d.pth")
    net = create_backbone("densenet121", weights=tmp_path / "d.pth")
    assert torch.equal(net.state_dict()["trunk.features.denseblock1.denselayer1.norm1.weight"],
                       state["features.denseblock1.denselayer1.norm1.weight"])


def test_bad_files(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_backbone("tiny", weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsUnavailableError, match="bad.pth: cannot read"):
        create_backbone("tiny", weights=bad)
    torch.save(_tv_resnet18_state(), tmp_path / "r18.pth")
    with pytest.raises(WeightsUnavailableError, match="do not fit backbone 'tiny'"):
        create_backbone("tiny", weights=tmp_path / "r18.pth")


def test_grey_normalization_by_hand_and_against_torchvision():
    # hand computation: sigma = 1 / mean(1 / s_c), mu = sigma * mean(m_c / s_c)
    inv = (1 / 0.229 + 1 / 0.224 + 1 / 0.225) / 3  # 4.425181...
    sigma = 1 / inv
    mu = sigma * (0.485 / 0.229 + 0.456 / 0.224 + 0.406 / 0.225) / 3
    got = W.grey_normalization()
    assert got == pytest.approx((mu, sigma), abs=1e-12)
    assert got == pytest.approx((0.4487999, 0.2259795), abs=1e-6)
    # the constants are torchvision's preset for its ImageNet weights
    preset = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert tuple(preset.mean) == W.IMAGENET_MEAN and tuple(preset.std) == W.IMAGENET_STD
    # (g - mu) / sigma is the channel mean of torchvision's normalisation of the grey image as RGB
    g = torch.linspace(0, 1, 11).reshape(1, 1, 11)
    rgb = torchvision.transforms.functional.normalize(g.repeat(3, 1, 1), list(W.IMAGENET_MEAN), list(W.IMAGENET_STD))
    torch.testing.assert_close((g[0] - got[0]) / got[1], rgb.mean(0), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError):
        W.grey_normalization((0.5,), (0.0,))
