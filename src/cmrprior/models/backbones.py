"""The built-in backbones: torchvision's VGG16, DenseNet121, ResNet18/50 and a tiny CNN for tests.

Each is wrapped so that `forward_features(x (B, C, H, W)) -> (B, F)` returns globally
average-pooled features (VGG16: the 512-channel map of `features` pooled, F = 512, not the 4096-d
classifier output; DenseNet121: F = 1024; ResNet18: 512; ResNet50: 2048; tiny: 64 by default).

The first convolution takes `in_chans` channels. With random init it is a fresh convolution
(Kaiming-normal init); pretrained RGB weights are adapted in `cmrprior.models.weights`
(summed over the colour axis for one channel), not by repeating the image three times.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from cmrprior.errors import ConfigError
from cmrprior.models.registry import register_backbone


class TorchvisionBackbone(nn.Module):
    """A torchvision classification network with its classifier replaced by the identity.

    `trunk` keeps torchvision's module names, so a torchvision state dict loads after prefixing
    `trunk.` (see `cmrprior.models.weights`). Attributes: `arch` (torchvision name), `in_chans`,
    `num_features`, `gradcam_layer` (dotted module name), `first_conv` (dotted name of the input
    convolution), `head_prefixes` (torchvision keys dropped when loading).
    """

    def __init__(
        self,
        arch: str,
        trunk: nn.Module,
        *,
        in_chans: int,
        num_features: int,
        first_conv: str,
        gradcam_layer: str,
        head_prefixes: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.arch = arch
        self.trunk = trunk
        self.in_chans = in_chans
        self.num_features = num_features
        self.first_conv = f"trunk.{first_conv}"
        self.gradcam_layer = f"trunk.{gradcam_layer}"
        self.head_prefixes = head_prefixes
        _replace_input_conv(self, self.first_conv, in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, in_chans, H, W)` -> `(B, num_features)`."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _replace_input_conv(model: nn.Module, dotted: str, in_chans: int) -> None:
    """Swap the convolution at `dotted` for one with `in_chans` inputs (same geometry), Kaiming init."""
    old = model.get_submodule(dotted)
    assert isinstance(old, nn.Conv2d)
    if old.in_channels == in_chans:
        return
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _check_no_kwargs(name: str, kwargs: dict) -> None:
    if kwargs:
        raise ConfigError(f"backbone {name!r} takes no extra arguments, got {sorted(kwargs)}")


@register_backbone("resnet18")
def resnet18(in_chans: int = 1, **kwargs) -> TorchvisionBackbone:
    return _resnet("resnet18", torchvision.models.resnet18, 512, in_chans, kwargs)


@register_backbone("resnet50")
def resnet50(in_chans: int = 1, **kwargs) -> TorchvisionBackbone:
    return _resnet("resnet50", torchvision.models.resnet50, 2048, in_chans, kwargs)


def _resnet(name: str, ctor: Callable[..., nn.Module], nf: int, in_chans: int, kwargs: dict) -> TorchvisionBackbone:
    _check_no_kwargs(name, kwargs)
    trunk = ctor(weights=None)
    trunk.fc = nn.Identity()
    return TorchvisionBackbone(
        name, trunk, in_chans=in_chans, num_features=nf, first_conv="conv1", gradcam_layer="layer4", head_prefixes=("fc.",)
    )


class _VGGTrunk(nn.Module):
    """torchvision's VGG16 `features` (same module names) + global average pooling.

    Built from `torchvision.models.vgg.make_layers` rather than `vgg16()`, which would first create and
    initialise the 120M-parameter classifier that is thrown away here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=False)
        for m in self.features.modules():  # torchvision's VGG init for convolutions
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


@register_backbone("vgg16")
def vgg16(in_chans: int = 1, **kwargs) -> TorchvisionBackbone:
    """VGG16 without batch norm (as Keras VGG16 used by the study); 13 convs, F = 512; Grad-CAM on the last max-pool."""
    _check_no_kwargs("vgg16", kwargs)
    return TorchvisionBackbone(
        "vgg16", _VGGTrunk(), in_chans=in_chans, num_features=512, first_conv="features.0",
        gradcam_layer="features.30", head_prefixes=("classifier.",),
    )


@register_backbone("densenet121")
def densenet121(in_chans: int = 1, **kwargs) -> TorchvisionBackbone:
    """DenseNet121, F = 1024; `gradcam_layer` is the final norm of `features` (ReLU follows)."""
    _check_no_kwargs("densenet121", kwargs)
    trunk = torchvision.models.densenet121(weights=None)
    trunk.classifier = nn.Identity()
    return TorchvisionBackbone(
        "densenet121", trunk, in_chans=in_chans, num_features=1024, first_conv="features.conv0",
        gradcam_layer="features.norm5", head_prefixes=("classifier.",),
    )


class TinyCNN(nn.Module):
    """A small CNN for tests and smoke runs: `len(widths)` blocks of conv3x3(stride 2) + norm + ReLU.

    `norm`: "batch" | "group" | "none" ("none" makes batch-split computations exact, e.g. for the
    distributed-equivalence test). Output `(B, widths[-1])` after global average pooling.
    """

    arch = "tiny"

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64), norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "group", "none"):
            raise ConfigError(f"tiny backbone: norm must be 'batch', 'group' or 'none', got {norm!r}")
        if not widths or any(int(w) < 1 for w in widths):
            raise ConfigError(f"tiny backbone: widths must be positive integers, got {widths!r}")
        layers: list[nn.Module] = []
        prev = in_chans
        for i, w in enumerate(widths):
            block: list[nn.Module] = [nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=norm == "none")]
            if norm == "batch":
                block.append(nn.BatchNorm2d(w))
            elif norm == "group":
                block.append(nn.GroupNorm(min(8, w), w))
            block.append(nn.ReLU(inplace=True))
            layers.append(nn.Sequential(*block))
            prev = w
        self.features = nn.Sequential(*layers)
        self.in_chans = in_chans
        self.num_features = int(widths[-1])
        self.gradcam_layer = f"features.{len(widths) - 1}"
        self.first_conv = "features.0.0"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, in_chans, H, W)` -> `(B, num_features)`."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@register_backbone("tiny")
def tiny(in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64), norm: str = "batch") -> TinyCNN:
    return TinyCNN(in_chans=in_chans, widths=tuple(widths), norm=norm)
