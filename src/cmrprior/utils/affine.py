"""2D affine matrices for `torch.nn.functional.affine_grid` (shared by the SSL and segmentation augmentations).

Conventions of `affine_grid(theta, align_corners=False)`: `theta (B, 2, 3)` maps an output point in
normalised coordinates (x, y in [-1, 1], x along the width) to the input point it samples. A transform
is built as a linear part `(B, 2, 2)` (rotation, then per-row or per-column scalings, which compose a
flip or a zoom before or after the rotation) and a translation `(B, 2)`.
"""

from __future__ import annotations

import torch


def rotation(angle: torch.Tensor, height: int = 1, width: int = 1) -> torch.Tensor:
    """`(B, 2, 2)` rotation by `angle (B,)` radians in pixel space, in normalised coordinates.

    For a non-square `height x width` image the normalised axes have different pixel lengths, so the
    matrix is `D^-1 R D` with `D = diag(ax, ay)` the half-extents in common units; this turns the image
    without shearing it. The defaults (a square) give the plain rotation matrix. A positive angle turns
    the image like `torch.rot90(x, 1, dims=(-2, -1))`.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    ax = width / max(height, width)
    ay = height / max(height, width)
    return torch.stack([torch.stack([cos, -sin * ay / ax], dim=-1), torch.stack([sin * ax / ay, cos], dim=-1)], dim=-2)


def flip_sign(flip: torch.Tensor) -> torch.Tensor:
    """-1.0 where `flip (B,)` is True, else 1.0: the factor that mirrors one axis."""
    return torch.where(flip, -1.0, 1.0)


def scale_rows(linear: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """`diag(sx, sy) @ linear`: scale x and y AFTER `linear` (on the input side). `sx`, `sy` `(B,)`."""
    return linear * torch.stack([sx, sy], dim=-1)[:, :, None]


def scale_cols(linear: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """`linear @ diag(sx, sy)`: scale x and y BEFORE `linear` (on the output side). `sx`, `sy` `(B,)`."""
    return linear * torch.stack([sx, sy], dim=-1)[:, None, :]


def theta(linear: torch.Tensor, shift_xy: torch.Tensor) -> torch.Tensor:
    """`(B, 2, 3)` float32 theta of linear part `(B, 2, 2)` and translation `shift_xy (B, 2)` (normalised units)."""
    out = torch.zeros(linear.shape[0], 2, 3)
    out[:, :, :2] = linear
    out[:, :, 2] = shift_xy
    return out
