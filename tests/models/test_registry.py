"""Backbone registry: shape table, interface, Grad-CAM layer, argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cmrprior.errors import ConfigError
from cmrprior.models.registry import create_backbone, list_backbones, register_backbone

# name, in_chans, input size, expected F
SHAPES = [
    ("tiny", 1, 32, 64),
    ("tiny", 3, 40, 64),
    ("resnet18", 1, 64, 512),
    ("resnet18", 2, 48, 512),
    ("resnet50", 1, 32, 2048),
    ("vgg16", 1, 32, 512),
    ("densenet121", 1, 32, 1024),
]


def test_list_backbones():
    assert {"vgg16", "densenet121", "resnet18", "resnet50", "tiny"} <= set(list_backbones())


@pytest.mark.parametrize("name,in_chans,size,nf", SHAPES)
def test_shapes_interface_and_gradcam_layer(name, in_chans, size, nf):
    """Shape table; forward == forward_features; the first conv takes in_chans channels; the
    `gradcam_layer` module's output, globally averaged (after ReLU for DenseNet), is the feature vector."""
    torch.manual_seed(0)
    net = create_backbone(name, in_chans=in_chans).eval()
    assert net.num_features == nf
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == in_chans
    seen = {}
    net.get_submodule(net.gradcam_layer).register_forward_hook(lambda m, i, o: seen.__setitem__("map", o.detach().clone()))
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        f = net.forward_features(x)
        assert f.shape == (2, nf)
        assert torch.equal(net(x), f)
    fmap = seen["map"]
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, nf)
    if name == "densenet121":
        fmap = torch.relu(fmap)
    torch.testing.assert_close(fmap.mean(dim=(2, 3)), f, rtol=1e-5, atol=1e-6)


def test_unknown_and_bad_arguments():
    with pytest.raises(ConfigError, match="unknown backbone 'nope'"):
        create_backbone("nope")
    with pytest.raises(ConfigError, match="in_chans"):
        create_backbone("tiny", in_chans=0)
    with pytest.raises(ConfigError, match="extra arguments"):
        create_backbone("resnet18", widths=(8,))
    with pytest.raises(ConfigError, match="norm"):
        create_backbone("tiny", norm="layer")


def test_register_decorator_and_duplicate():
    name = "_test_linear_backbone"

    class Flat(nn.Module):
        num_features = 4

        def __init__(self, in_chans):
            super().__init__()
            self.in_chans = in_chans
            self.lin = nn.Linear(in_chans, 4)

        def forward_features(self, x):
            return self.lin(x.mean(dim=(2, 3)))

        forward = forward_features

    if name not in list_backbones():
        register_backbone(name)(lambda in_chans=1: Flat(in_chans))
    net = create_backbone(name, in_chans=2)
    assert net(torch.zeros(3, 2, 5, 5)).shape == (3, 4)
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone(name)(lambda in_chans=1: Flat(in_chans))


def test_tiny_seeded_init_is_deterministic():
    torch.manual_seed(3)
    a = create_backbone("tiny").state_dict()
    torch.manual_seed(3)
    b = create_backbone("tiny").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
