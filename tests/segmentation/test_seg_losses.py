"""Dice + CE loss against a slow reference written from the definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmrprior.segmentation.losses import make_seg_loss


def reference(logits, target, lambda_dice=1.0, lambda_ce=1.0, eps=1e-5):
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target[:, 0], logits.shape[1]).permute(0, 3, 1, 2).float()
    dices = []
    for c in range(1, logits.shape[1]):  # background excluded, batch pooled
        inter = (prob[:, c] * onehot[:, c]).sum()
        denom = prob[:, c].sum() + onehot[:, c].sum()
        dices.append(1 - (2 * inter + eps) / (denom + eps))
    ce = F.cross_entropy(logits, target[:, 0])
    return lambda_dice * torch.stack(dices).mean() + lambda_ce * ce


@pytest.mark.parametrize("b, hw, seed", [(1, (8, 8), 0), (4, (16, 12), 1), (3, (5, 7), 2)])
@pytest.mark.parametrize("ld, lc", [(1.0, 1.0), (0.5, 2.0)])
def test_matches_reference(b, hw, seed, ld, lc):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, 4, *hw, generator=g)
    target = torch.randint(0, 4, (b, 1, *hw), generator=g)
    torch.testing.assert_close(make_seg_loss(ld, lc)(logits, target), reference(logits, target, ld, lc), rtol=1e-5, atol=1e-5)


def test_perfect_prediction_is_near_zero_and_gradient_flows():
    target = torch.randint(0, 4, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    logits = F.one_hot(target[:, 0], 4).permute(0, 3, 1, 2).float() * 50
    assert float(make_seg_loss()(logits, target)) < 1e-3
    logits = torch.zeros(2, 4, 8, 8, requires_grad=True)
    make_seg_loss()(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
