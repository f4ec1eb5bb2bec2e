"""Segmentation loss: Dice + cross-entropy (MONAI `DiceCELoss`), the usual choice for cardiac MRI U-Nets.

Dice is computed over the whole batch (`batch=True`, robust to slices where a structure is absent) on
the three heart structures (background excluded); cross-entropy on all four classes.
"""

from __future__ import annotations

from torch import nn


def make_seg_loss(lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> nn.Module:
    """`loss(logits (B, C, H, W), target (B, 1, H, W) int64) -> scalar`:
    `lambda_dice * (1 - mean_c Dice_c) + lambda_ce * CE`, softmax Dice over classes 1..C-1."""
    from monai.losses import DiceCELoss  # imported here: MONAI takes seconds to import

    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        lambda_dice=lambda_dice,
        lambda_ce=lambda_ce,
    )
