"""VICReg (Bardes, Ponce & LeCun, ICLR 2022): non-contrastive pre-training, the study's second pretext.

For the projections z1, z2 `(N, D)` of two views of the same N images:

    invariance  s(z1, z2) = mean over n, d of (z1[n, d] - z2[n, d])^2
    variance    v(z)      = mean over d of max(0, 1 - sqrt(Var_n z[:, d] + eps))     (unbiased variance)
    covariance  c(z)      = sum over d != d' of C(z)[d, d']^2 / D,   C(z) = (z - mean)^T (z - mean) / (N - 1)
    loss = sim_weight * s + var_weight * (v(z1) + v(z2)) / 2 + cov_weight * (c(z1) + c(z2))

(lambda = 25, mu = 25, nu = 1 in the paper; the variance term averaged over the two branches as lightly's
`VICRegLoss` does.) No other image of the batch is a negative: the loss needs no large batches, and what it
learns from heart-masked images is not set by which other hearts share the batch, unlike SimCLR's NT-Xent.

In the study VICReg runs in SimCLR's loop (`cmrprior.ssl.pretrain.pretrain`, `objective=`), with SimCLR's
views, optimiser, epochs, early stopping and projection sizes (the `pretrain` section), so the two methods
differ in their objective only (and the head's batch norm, which VICReg's expander has). Its own settings
are the study's `vicreg` section (`VICRegConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmrprior.errors import ConfigError


@dataclass(frozen=True)
class VICRegConfig:
    """The study's `vicreg` section: the batch sizes pre-trained (one run each; the cells choose among them by
    CV, as for SimCLR), the loss weights, and the projection head's batch norm."""

    batch_sizes: tuple[int, ...] = (64,)
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    eps: float = 1e-4
    proj_batch_norm: bool = True

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 2:
            raise ConfigError(f"vicreg.batch_sizes must be a non-empty list of sizes >= 2 (the variance of a "
                              f"batch), got {self.batch_sizes}")
        if min(self.sim_weight, self.var_weight, self.cov_weight) < 0 or not self.eps > 0:
            raise ConfigError("vicreg: the weights must be >= 0 and eps > 0")

    def objective(self) -> "VICRegObjective":
        return VICRegObjective(self.sim_weight, self.var_weight, self.cov_weight, self.eps)


def vicreg_loss(z1: Any, z2: Any, *, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                eps: float = 1e-4, gather: bool = False) -> Any:
    """The VICReg loss (module doc) of projections `z1`, `z2` `(N, D)`, a float32 scalar (computed in float32
    inside an autocast region). `gather`: the variance and covariance over all processes' projections
    (torch.distributed), the invariance over this process's pairs. Raises ConfigError for mismatched shapes or
    N < 2."""
    import torch
    import torch.nn.functional as F

    from cmrprior.ssl.distributed import gather_with_grad

    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ConfigError(f"vicreg_loss: z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ConfigError("vicreg_loss: needs N >= 2 (variance over the batch)")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        a, b = z1.float(), z2.float()
        invariance = F.mse_loss(a, b)
        if gather:
            a, b = gather_with_grad(a)[0], gather_with_grad(b)[0]
        variance = (_variance(a, eps) + _variance(b, eps)) / 2
        covariance = _covariance(a) + _covariance(b)
        return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def _variance(z: Any, eps: float) -> Any:
    import torch

    return torch.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance(z: Any) -> Any:
    import torch

    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


@dataclass(frozen=True)
class VICRegObjective:
    """`vicreg_loss` with fixed weights, as the pre-training loop's objective (`cmrprior.ssl.pretrain`)."""

    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    eps: float = 1e-4

    def __call__(self, z1: Any, z2: Any, *, gather: bool = False) -> Any:
        return vicreg_loss(z1, z2, sim_weight=self.sim_weight, var_weight=self.var_weight, cov_weight=self.cov_weight,
                           eps=self.eps, gather=gather)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records of the objective: a resume under another objective is refused."""
        return {"name": "vicreg", "sim_weight": self.sim_weight, "var_weight": self.var_weight,
                "cov_weight": self.cov_weight, "eps": self.eps}
