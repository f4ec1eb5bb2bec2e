"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020), eq. 1 of the study.

For a batch of N images with two views each, z = [z1; z2] holds 2N projections. For view i with
positive partner j(i) (the other view of the same image):

    l_i = -log( exp(cos(z_i, z_j(i)) / tau) / sum_{k != i} exp(cos(z_i, z_k) / tau) )

and the loss is the mean of l_i over all 2N views (the study writes the sum; the mean only rescales
it and keeps the learning rate independent of the batch size). Every other view in the batch,
including the other view's negatives, is a negative.

Computed in float32 even inside an autocast region. With `gather=True` under torch.distributed the
negatives come from all processes (gradients flow back to their owners): the mean over each rank's
rows, averaged over ranks by DDP, equals the single-process loss on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmrprior.errors import ConfigError
from cmrprior.ssl.distributed import gather_with_grad


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.1, gather: bool = False) -> torch.Tensor:
    """NT-Xent loss of two views.

    z1, z2: `(N, D)` projections of view 1 and view 2 (row n of each is the same image).
    temperature: tau > 0. gather: use all processes' views as negatives (torch.distributed).
    Returns a float32 scalar. Raises ConfigError for mismatched shapes, N < 1 or tau <= 0.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ConfigError(f"nt_xent_loss: z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 1:
        raise ConfigError("nt_xent_loss: empty batch")
    if not temperature > 0:
        raise ConfigError(f"nt_xent_loss: temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        n = z1.shape[0]
        a = F.normalize(z1.float(), dim=1)
        b = F.normalize(z2.float(), dim=1)
        if gather:
            a_all, offset = gather_with_grad(a)
            b_all, _ = gather_with_grad(b)
        else:
            a_all, b_all, offset = a, b, 0
        total = a_all.shape[0]
        rows = torch.cat([a, b], dim=0)  # (2n, D) this process's views
        cols = torch.cat([a_all, b_all], dim=0)  # (2*total, D) all views
        logits = rows @ cols.T / temperature  # (2n, 2*total)
        idx = torch.arange(n, device=z1.device) + offset
        self_cols = torch.cat([idx, idx + total])
        pos_cols = torch.cat([idx + total, idx])
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[torch.arange(2 * n, device=z1.device), self_cols] = True
        logits = logits.masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(logits, pos_cols)

