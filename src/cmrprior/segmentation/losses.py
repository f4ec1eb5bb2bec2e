"""Segmentation loss: Dice + cross-entropy (MONAI `DiceCELoss`), the usual choice for cardiac MRI U-Nets.

Dice is computed on the three heart structures (background excluded), cross-entropy on all four classes. By
default Dice pools the whole batch (`dice_over="batch"`), robust to slices where a structure is absent; with
`dice_over="slice"` it is the mean of each slice's Dice, so a small structure (an end-systolic LV cavity, an apical
slice) weighs as much as a large one, and a structure drawn on a slice where it is absent costs a whole slice's
Dice (an absent structure left absent scores 1).
"""

from __future__ import annotations

from torch import nn

from cmrprior.errors import ConfigError
from cmrprior.segmentation.config import DICE_OVER


def make_seg_loss(lambda_dice: float = 1.0, lambda_ce: float = 1.0, dice_over: str = "batch") -> nn.Module:
    """`loss(logits (B, C, H, W), target (B, 1, H, W) int64) -> scalar`:
    `lambda_dice * (1 - mean Dice) + lambda_ce * CE`, softmax Dice over classes 1..C-1, pooled over the batch
    (`dice_over="batch"`) or per slice and then averaged over slices and classes (`"slice"`)."""
    if dice_over not in DICE_OVER:
        raise ConfigError(f"segmenter loss: dice_over must be one of {list(DICE_OVER)}, got {dice_over!r}")
    from monai.losses import DiceCELoss  # imported here: MONAI takes seconds to import

    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=dice_over == "batch",
        lambda_dice=lambda_dice,
        lambda_ce=lambda_ce,
    )
