"""NT-Xent against a slow reference from the SimCLR pseudocode, lightly, pytorch-metric-learning,
a hand-computed value, symmetry, gradients, autocast."""

from __future__ import annotations

import math

import pytest
import torch

from cmrprior.errors import ConfigError
from cmrprior.ssl.loss import nt_xent_loss
from cmrprior.ssl.model import simclr_loss


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR Algorithm 1, with loops: z_{2k-1}, z_{2k} are the two views of image k."""
    n = z1.shape[0]
    z = []
    for k in range(n):
        z += [z1[k], z2[k]]
    z = [v.double() for v in z]

    def sim(u, v):
        return (u @ v) / (u.norm() * v.norm())

    def ell(i, j):
        num = torch.exp(sim(z[i], z[j]) / tau)
        den = sum(torch.exp(sim(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        return -torch.log(num / den)

    total = sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n))
    return total / (2 * n)


CASES = [(1, 0.1), (2, 0.5), (5, 0.1), (16, 0.07), (33, 1.0)]


@pytest.mark.parametrize("n,tau", CASES)
def test_matches_pseudocode_reference(n, tau):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)
    got = nt_xent_loss(z1, z2, temperature=tau)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference_nt_xent(z1, z2, tau), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,tau", CASES)
def test_matches_lightly(n, tau):
    from lightly.loss import NTXentLoss as LightlyNTXent

    g = torch.Generator().manual_seed(100 + n)
    z1, z2 = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    ref = LightlyNTXent(temperature=tau)(z1, z2)
    torch.testing.assert_close(nt_xent_loss(z1, z2, temperature=tau), ref, rtol=1e-5, atol=1e-5)
    # the pre-training's loss: both views through the model in one batch, then NT-Xent of the halves
    views = z1.reshape(n, 1, 4, 4), z2.reshape(n, 1, 4, 4)
    got = simclr_loss(torch.nn.Flatten(), *views, temperature=tau, precision="fp32")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,tau", [c for c in CASES if c[0] > 1])
def test_matches_pytorch_metric_learning(n, tau):
    from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent

    g = torch.Generator().manual_seed(200 + n)
    z1, z2 = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    labels = torch.arange(n).repeat(2)
    ref = PMLNTXent(temperature=tau)(torch.cat([z1, z2]), labels)
    torch.testing.assert_close(nt_xent_loss(z1, z2, temperature=tau), ref, rtol=1e-5, atol=1e-5)


def test_hand_computed_value():
    # N = 2, orthogonal unit vectors: view pairs identical, images orthogonal.
    # For each of the 4 views: cos with partner 1, with the 2 others 0:
    # l = -log(e^{1/t} / (e^{1/t} + 2)); with t = 0.5: -log(e^2 / (e^2 + 2)).
    z1 = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    z2 = torch.tensor([[2.0, 0.0], [0.0, 0.5]])  # norms do not matter
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert abs(nt_xent_loss(z1, z2, temperature=0.5).item() - expected) < 1e-6
    # antipodal partner: cos = -1 with partner, 0 with the others
    z2b = -z1
    expected_b = -math.log(math.exp(-2) / (math.exp(-2) + 2))
    assert abs(nt_xent_loss(z1, z2b, temperature=0.5).item() - expected_b) < 1e-6


def test_symmetric_in_views_and_invariant_to_batch_order():
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    a = nt_xent_loss(z1, z2)
    torch.testing.assert_close(nt_xent_loss(z2, z1), a)
    perm = torch.randperm(9, generator=g)
    torch.testing.assert_close(nt_xent_loss(z1[perm], z2[perm]), a)


def test_gradient_matches_reference():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    z2 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    a1, a2 = z1.clone().float().requires_grad_(), z2.clone().float().requires_grad_()
    nt_xent_loss(a1, a2, temperature=0.2).backward()
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    reference_nt_xent(r1, r2, 0.2).backward()
    torch.testing.assert_close(a1.grad.double(), r1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a2.grad.double(), r2.grad, rtol=1e-4, atol=1e-6)


def test_float32_under_autocast():
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(8, 8)
    x1, x2 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = lin(x1), lin(x2)
        assert z1.dtype == torch.bfloat16
        loss = nt_xent_loss(z1, z2, temperature=0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, nt_xent_loss(z1.float(), z2.float()))
    bf16 = simclr_loss(lin, x1, x2, temperature=0.1, precision="bf16")
    assert bf16.dtype == torch.float32


def test_bad_arguments():
    with pytest.raises(ConfigError, match="temperature"):
        nt_xent_loss(torch.ones(2, 3), torch.ones(2, 3), temperature=0)
    with pytest.raises(ConfigError, match="must both be"):
        nt_xent_loss(torch.ones(2, 3), torch.ones(3, 3))
