"""Test doubles for saliency: small ED/ES models whose answers are known by construction."""

from __future__ import annotations

import torch
from torch import nn


class ConvEncoder(nn.Module):
    """conv3x3 (no bias) -> ReLU -> global average pool, with the backbone interface.

    `forward_features(x (B,1,H,W)) -> (B, F)`, `num_features`, `gradcam_layer` names the ReLU output.
    `region`: optional bool (H, W); the encoder multiplies its input by it, so only that region is seen.
    """

    def __init__(self, channels: int = 4, region: torch.Tensor | None = None, inplace: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.ReLU(inplace=inplace))
        self.num_features = channels
        self.gradcam_layer = "body.1"
        self.register_buffer("region", None if region is None else region.float())

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.region is not None:
            x = x * self.region
        return self.body(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class EdEsModel(nn.Module):
    """The ED/ES interface: two encoders, concatenated features, one linear layer -> logits (B, K)."""

    def __init__(self, encoder_ed: nn.Module, encoder_es: nn.Module, n_classes: int = 3) -> None:
        super().__init__()
        self.encoder_ed = encoder_ed
        self.encoder_es = encoder_es
        self.head = nn.Linear(encoder_ed.num_features + encoder_es.num_features, n_classes)

    def forward(self, ed: torch.Tensor, es: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.encoder_ed.forward_features(ed), self.encoder_es.forward_features(es)], 1))


class LinearPixelModel(nn.Module):
    """logits = W_ed . ed + W_es . es + b (flattened); integrated gradients are exactly (x - x') * W."""

    def __init__(self, h: int, w: int, n_classes: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w_ed = nn.Parameter(torch.randn(n_classes, h * w, generator=g))
        self.w_es = nn.Parameter(torch.randn(n_classes, h * w, generator=g))
        self.b = nn.Parameter(torch.randn(n_classes, generator=g))

    def forward(self, ed: torch.Tensor, es: torch.Tensor) -> torch.Tensor:
        return ed.flatten(1) @ self.w_ed.T + es.flatten(1) @ self.w_es.T + self.b


def quadrant(h: int, w: int) -> torch.Tensor:
    """bool (H, W): the top-left quadrant."""
    m = torch.zeros(h, w, dtype=torch.bool)
    m[: h // 2, : w // 2] = True
    return m


def make_model(channels: int = 4, n_classes: int = 3, region: torch.Tensor | None = None, seed: int = 0, inplace: bool = False) -> EdEsModel:
    torch.manual_seed(seed)
    return EdEsModel(ConvEncoder(channels, region, inplace=inplace), ConvEncoder(channels, region, inplace=inplace), n_classes)
