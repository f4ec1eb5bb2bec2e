"""Segmentation loss: Dice + cross-entropy (MONAI `DiceCELoss`), the usual choice for cardiac MRI U-Nets.

Dice is computed on the three heart structures (background excluded), cross-entropy on all four classes. By
default Dice pools the whole batch (`dice_over="batch"`), robust to slices where a structure is absent; with
`dice_over="slice"` it is the mean of each slice's Dice, so a small structure (an end-systolic LV cavity, an apical
slice) weighs as much as a large one, and a structure drawn on a slice where it is absent costs a whole slice's
Dice (an absent structure left absent scores 1).

With `boundary_weight` w > 0 each pixel on a boundary of the target (its 3x3 neighbourhood holds more than one
label) counts 1 + w times in the cross-entropy: the pixels where a thin end-systolic cavity and its wall meet,
which a loss averaged over all pixels weighs as little as a pixel of background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmrprior.errors import ConfigError
from cmrprior.segmentation.config import DICE_OVER


def boundary_pixels(target: torch.Tensor) -> torch.Tensor:
    """Bool `(B, 1, H, W)`: pixels of `target` `(B, 1, H, W)` whose 3x3 neighbourhood (inside the image) holds
    more than one label."""
    y = target.float()
    return F.max_pool2d(y, 3, 1, 1) != -F.max_pool2d(-y, 3, 1, 1)  # padding is -inf: the edge adds no label


class _BoundaryDiceCE(nn.Module):
    """`lambda_dice * Dice loss + lambda_ce * mean((1 + w [boundary]) * CE)`."""

    def __init__(self, dice: nn.Module, lambda_dice: float, lambda_ce: float, boundary_weight: float) -> None:
        super().__init__()
        self.dice, self.lambda_dice, self.lambda_ce, self.w = dice, lambda_dice, lambda_ce, boundary_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target[:, 0], reduction="none")
        weights = 1.0 + self.w * boundary_pixels(target)[:, 0].to(ce.dtype)
        return self.lambda_dice * self.dice(logits, target) + self.lambda_ce * (weights * ce).mean()


def make_seg_loss(lambda_dice: float = 1.0, lambda_ce: float = 1.0, dice_over: str = "batch",
                  boundary_weight: float = 0.0) -> nn.Module:
    """`loss(logits (B, C, H, W), target (B, 1, H, W) int64) -> scalar`:
    `lambda_dice * (1 - mean Dice) + lambda_ce * CE`, softmax Dice over classes 1..C-1, pooled over the batch
    (`dice_over="batch"`) or per slice and then averaged over slices and classes (`"slice"`); the CE of boundary
    pixels weighted `1 + boundary_weight` (0: MONAI's `DiceCELoss` itself)."""
    if dice_over not in DICE_OVER:
        raise ConfigError(f"segmenter loss: dice_over must be one of {list(DICE_OVER)}, got {dice_over!r}")
    if not boundary_weight >= 0:
        raise ConfigError(f"segmenter loss: boundary_weight must be >= 0, got {boundary_weight}")
    from monai.losses import DiceCELoss, DiceLoss  # imported here: MONAI takes seconds to import

    if boundary_weight > 0:
        dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=dice_over == "batch")
        return _BoundaryDiceCE(dice, lambda_dice, lambda_ce, float(boundary_weight))
    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=dice_over == "batch",
        lambda_dice=lambda_dice,
        lambda_ce=lambda_ce,
    )
