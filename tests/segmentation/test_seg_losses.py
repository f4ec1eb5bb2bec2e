"""Dice + CE loss against a slow reference written from the definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmrprior.segmentation.losses import make_seg_loss


def reference(logits, target, lambda_dice=1.0, lambda_ce=1.0, eps=1e-5, per_slice=False):
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target[:, 0], logits.shape[1]).permute(0, 3, 1, 2).float()
    groups = [slice(i, i + 1) for i in range(len(logits))] if per_slice else [slice(None)]
    dices = []
    for g in groups:
        for c in range(1, logits.shape[1]):  # background excluded
            inter = (prob[g, c] * onehot[g, c]).sum()
            denom = prob[g, c].sum() + onehot[g, c].sum()
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


@pytest.mark.parametrize("seed", [0, 1])
def test_per_slice_dice_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 10, 9, generator=g)
    target = torch.randint(0, 4, (3, 1, 10, 9), generator=g)
    target[1][target[1] == 3] = 0  # a slice without LV cavity: its Dice counts as a slice of its own
    got = make_seg_loss(dice_over="slice")(logits, target)
    torch.testing.assert_close(got, reference(logits, target, per_slice=True), rtol=1e-5, atol=1e-5)
    assert abs(float(got) - float(reference(logits, target))) > 1e-3  # not the batch-pooled value


def test_per_slice_dice_weighs_a_small_structure_like_a_large_one():
    """Two slices, each with one LV cavity; the network misses the small one entirely. Pooled over the batch the
    miss costs its share of the voxels; per slice it costs half of the LV term."""
    target = torch.zeros(2, 1, 20, 20, dtype=torch.long)
    target[0, 0, 2:18, 2:18] = 3  # 256 voxels
    target[1, 0, 9:11, 9:11] = 3  # 4 voxels, missed below
    pred = target.clone()
    pred[1, 0, 9:11, 9:11] = 0
    logits = F.one_hot(pred[:, 0], 4).permute(0, 3, 1, 2).float() * 50
    lv_term = lambda loss: float(loss(logits, target))  # noqa: E731  classes 1, 2 absent everywhere: Dice 1
    batch, per_slice = lv_term(make_seg_loss(lambda_ce=0.0)), lv_term(make_seg_loss(lambda_ce=0.0, dice_over="slice"))
    assert batch == pytest.approx((1 - 2 * 256 / (256 + 260)) / 3, abs=1e-4)
    assert per_slice == pytest.approx((1.0 / 2) / 3, abs=1e-4)


def test_unknown_pooling_is_refused():
    from cmrprior.errors import ConfigError
    from cmrprior.segmentation.config import SegTrainConfig

    with pytest.raises(ConfigError, match="dice_over"):
        make_seg_loss(dice_over="voxel")
    with pytest.raises(ConfigError, match="dice_over"):
        SegTrainConfig(dice_over="voxel")


def test_perfect_prediction_is_near_zero_and_gradient_flows():
    target = torch.randint(0, 4, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    logits = F.one_hot(target[:, 0], 4).permute(0, 3, 1, 2).float() * 50
    assert float(make_seg_loss()(logits, target)) < 1e-3
    logits = torch.zeros(2, 4, 8, 8, requires_grad=True)
    make_seg_loss()(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def _boundary_by_loops(target):
    """Pixels whose 3x3 neighbourhood inside the image holds more than one label, by explicit loops."""
    b, _, h, w = target.shape
    out = torch.zeros(b, 1, h, w, dtype=torch.bool)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                window = target[n, 0, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
                out[n, 0, i, j] = len(torch.unique(window)) > 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_pixels_match_loops(seed):
    from cmrprior.segmentation.losses import boundary_pixels

    g = torch.Generator().manual_seed(seed)
    target = torch.zeros(2, 1, 12, 11, dtype=torch.long)
    target[0, 0, 3:9, 2:8] = 2
    target[0, 0, 5:7, 4:6] = 3
    target[1] = torch.randint(0, 4, (1, 12, 11), generator=g)
    assert torch.equal(boundary_pixels(target), _boundary_by_loops(target))


def test_boundary_pixels_by_hand():
    """A 2x2 square of label 3 in a 6x6 background: the boundary is the 4x4 ring around and including it."""
    from cmrprior.segmentation.losses import boundary_pixels

    target = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    target[0, 0, 2:4, 2:4] = 3
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1:5, 1:5] = True
    assert torch.equal(boundary_pixels(target)[0, 0], expected)
    assert not boundary_pixels(torch.ones(1, 1, 5, 5, dtype=torch.long)).any()  # one label, no edge effect


@pytest.mark.parametrize("w, dice_over", [(2.0, "batch"), (0.5, "slice")])
def test_boundary_weighted_ce_matches_reference(w, dice_over):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 4, 10, 9, generator=g)
    target = torch.randint(0, 4, (3, 1, 10, 9), generator=g)
    target[2] = 0
    target[2, 0, 2:7, 3:8] = 3  # a slice with few boundary pixels
    ce = F.cross_entropy(logits, target[:, 0], reduction="none")
    weights = 1 + w * _boundary_by_loops(target)[:, 0].float()
    expected = reference(logits, target, lambda_ce=0.0, per_slice=dice_over == "slice") + (weights * ce).mean()
    got = make_seg_loss(dice_over=dice_over, boundary_weight=w)(logits, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert float(got) > float(make_seg_loss(dice_over=dice_over)(logits, target)) + 1e-3  # the weights count


def test_boundary_weight_gradient_and_refusals():
    from cmrprior.errors import ConfigError
    from cmrprior.segmentation.config import SegTrainConfig

    target = torch.randint(0, 4, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(2, 4, 8, 8, requires_grad=True)
    make_seg_loss(boundary_weight=1.0)(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="boundary_weight"):
        make_seg_loss(boundary_weight=-1.0)
    with pytest.raises(ConfigError, match="ce_boundary"):
        SegTrainConfig(ce_boundary=float("nan"))


def test_recipe_digest_leaves_out_later_settings_at_their_earlier_value():
    """A model trained before `dice_over`, `ce_boundary` and `draw_seed` existed (its stored config lacks them) is of the same
    recipe as one trained now at their defaults; another boundary weight is another recipe."""
    import dataclasses
    import json

    from cmrprior.segmentation.config import SegTrainConfig, recipe_digest

    now = json.loads(json.dumps(SegTrainConfig().to_json()))
    before = {k: v for k, v in now.items() if k not in ("dice_over", "ce_boundary", "draw_seed")}
    assert recipe_digest(now) == recipe_digest(before)
    weighted = json.loads(json.dumps(dataclasses.replace(SegTrainConfig(), ce_boundary=2.0).to_json()))
    assert recipe_digest(weighted) != recipe_digest(now)
    assert recipe_digest(json.loads(json.dumps(SegTrainConfig(dice_over="slice").to_json()))) != recipe_digest(now)
