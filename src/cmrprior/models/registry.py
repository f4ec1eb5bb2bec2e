"""Backbone registry: a dict of factories plus a decorator (the idea of timm's `_registry.py`, cut down).

Every registered factory builds an `nn.Module` with one interface, so downstream code takes any of them:

* `forward_features(x)`: `(B, C, H, W)` float -> `(B, F)` globally average-pooled features;
  `forward` is the same function.
* `num_features: int` = F.
* `gradcam_layer: str`: dotted name of the module whose output is the last convolutional feature map
  (the map that is pooled); `backbone.get_submodule(backbone.gradcam_layer)` returns it.
* `in_chans: int`, `arch: str`.

Usage::

    from cmrprior.models.registry import create_backbone
    net = create_backbone("vgg16", in_chans=1, weights=None)          # random init, never downloads
    net = create_backbone("resnet18", weights="imagenet")             # torchvision weights (cached)
    net = create_backbone("resnet18", weights="/path/resnet18-f37072fd.pth")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from cmrprior.errors import ConfigError
from cmrprior.models.weights import load_backbone_weights, resolve_weights

BackboneFactory = Callable[..., nn.Module]

_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register `factory(in_chans: int, **kw) -> nn.Module` under `name`.

    Raises ConfigError when `name` is already registered.
    """

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in _BACKBONES:
            raise ConfigError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = factory
        return factory

    return decorate


def _ensure_builtin() -> None:
    # Importing the module runs its @register_backbone decorators; it imports this module, hence not at the top.
    import cmrprior.models.backbones  # noqa: F401


def list_backbones() -> list[str]:
    """Sorted names of the registered backbones."""
    _ensure_builtin()
    return sorted(_BACKBONES)


def create_backbone(
    name: str,
    in_chans: int = 1,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build backbone `name` for `in_chans`-channel input.

    `weights`: None (random init), "imagenet" (torchvision's ImageNet weights: cache in
    `$TORCH_HOME/hub/checkpoints`, downloaded when missing and online), or a path to a state-dict file
    (`.pth`/`.pt` via `torch.load(weights_only=True)`, or `.safetensors`) in torchvision's key layout
    or cmrprior's own. Pretrained RGB first-conv weights are summed over the colour axis for
    `in_chans=1`. Extra keyword arguments go to the factory (e.g. `norm="none"` for `tiny`).

    Raises ConfigError (unknown name, bad argument), WeightsUnavailableError (weights not found).
    """
    _ensure_builtin()
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; available: {', '.join(sorted(_BACKBONES))}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"in_chans must be a positive integer, got {in_chans!r}")
    model = _BACKBONES[name](in_chans=in_chans, **kwargs)
    # What rebuilds this architecture: checkpoints store it so reloading needs no outside knowledge.
    model.model_args = {"backbone": name, "in_chans": in_chans, "backbone_kwargs": dict(kwargs)}
    if weights is not None:
        state = resolve_weights(name, weights)
        load_backbone_weights(model, state, source=str(weights))
    return model
