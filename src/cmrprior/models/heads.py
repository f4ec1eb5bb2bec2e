"""Heads on top of backbone features.

`ProjectionHead`: SimCLR's projection g(h) (Chen et al. 2020; eq. 1 of the study is computed on its
output): a 2-layer MLP `Linear(F, hidden) -> [BatchNorm1d] -> ReLU -> Linear(hidden, out)`.
Batch norm is off by default: without it the loss of a batch split over processes is exactly the
single-process loss (BatchNorm would need SyncBatchNorm for that).
"""

from __future__ import annotations

import torch
from torch import nn

from cmrprior.errors import ConfigError


class ProjectionHead(nn.Module):
    """`(B, in_dim)` -> `(B, out_dim)`."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128, batch_norm: bool = False) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"ProjectionHead: {name} must be a positive integer, got {v!r}")
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        self.net = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)
