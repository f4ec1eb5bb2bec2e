"""The SimCLR network: a registry backbone (encoder f) plus a projection head (g), its NT-Xent loss on
two views, and a BatchNorm re-estimation for eval-mode feature extraction.

`model_args` (a plain dict stored in every checkpoint) is what `build_model` needs to rebuild the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cmrprior.models.heads import ProjectionHead
from cmrprior.models.registry import create_backbone
from cmrprior.ssl.config import PretrainConfig
from cmrprior.ssl.loss import nt_xent_loss


class SimCLRModel(nn.Module):
    """Encoder f (a registry backbone) + projection head g: `(B, C, H, W)` -> `(B, proj_dim)`."""

    def __init__(self, encoder: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.forward_features(x))


def model_args_of(config: PretrainConfig) -> dict[str, Any]:
    """The `model_args` of the single-channel network that `config` pre-trains."""
    return {
        "backbone": config.backbone,
        "in_chans": 1,
        "backbone_kwargs": dict(config.backbone_kwargs),
        "proj_hidden_dim": config.proj_hidden_dim,
        "proj_dim": config.proj_dim,
        "proj_batch_norm": config.proj_batch_norm,
    }


def build_model(model_args: dict[str, Any]) -> SimCLRModel:
    """Rebuild the model from the `model_args` stored in a checkpoint."""
    enc = create_backbone(model_args["backbone"], in_chans=model_args["in_chans"], **model_args["backbone_kwargs"])
    head = ProjectionHead(enc.num_features, model_args["proj_hidden_dim"], model_args["proj_dim"],
                          batch_norm=model_args["proj_batch_norm"])
    return SimCLRModel(enc, head)


def simclr_loss(model: nn.Module, v1: torch.Tensor, v2: torch.Tensor, *, temperature: float, precision: str,
                gather: bool = False, objective: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """Forward both views in one batch `(2b, C, H, W)`, NT-Xent (float32) of the two halves, or
    `objective(z1, z2, gather=...)` when given (another pretext's loss, e.g. `cmrprior.ssl.vicreg`).

    `precision` "bf16" runs the forward under bf16 autocast, "fp32" without.
    """
    with torch.autocast(device_type=v1.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        z = model(torch.cat([v1, v2], dim=0))
    b = v1.shape[0]
    if objective is not None:
        return objective(z[:b], z[b:], gather=gather)
    return nt_xent_loss(z[:b], z[b:], temperature=temperature, gather=gather)


@torch.no_grad()
def recalibrate_batchnorm(encoder: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> nn.Module:
    """Re-estimate the running statistics of every BatchNorm of `encoder` (in place) as the exact average
    over `images (N, C, H, W)` (momentum None, "precise BN"), then return it in eval mode.

    Use before eval-mode feature extraction from an encoder whose running statistics lag its weights.
    """
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    for lo in range(0, images.shape[0], batch_size):
        encoder(images[lo : lo + batch_size])
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return encoder.eval()
