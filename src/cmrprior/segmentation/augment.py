"""Seeded batch augmentation for segmentation training, on tensors.

All random values of a batch are drawn in one place (`draw_augment_params`, from a `torch.Generator`), in
the spirit of MONAI's `RandomizableTransform`; `apply_augment` is then deterministic. The same geometric
transform is applied to image and mask (bilinear for images, nearest for masks, zeros outside).

Images enter already normalised to about [0, 1] (`normalise_slices`); the intensity steps (gamma, contrast,
brightness, Gaussian noise) act on that range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cmrprior.errors import ConfigError
from cmrprior.segmentation.config import SegAugmentConfig  # noqa: F401 - re-exported
from cmrprior.utils import affine


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample random values, all `(B,)` except `noise` `(B, 1, H, W)`; `active` False = identity."""

    active: torch.Tensor
    angle_rad: torch.Tensor
    scale: torch.Tensor
    shift_xy: torch.Tensor  # (B, 2) in normalised [-1, 1] grid units
    flip_x: torch.Tensor
    flip_y: torch.Tensor
    gamma: torch.Tensor
    contrast: torch.Tensor
    brightness: torch.Tensor
    noise_std: torch.Tensor
    noise: torch.Tensor


def normalise_slices(images: torch.Tensor, low_pct: float = 1.0, high_pct: float = 99.0) -> torch.Tensor:
    """Scale each slice so its `low_pct`/`high_pct` percentiles map to 0/1 (clipped to [0, 1]).

    Makes the network independent of the upstream intensity normalisation (any per-volume affine scaling).
    `images` `(B, 1, H, W)` float; a constant slice becomes all zero.
    """
    b = images.shape[0]
    flat = images.reshape(b, -1).float()
    q = torch.quantile(flat, torch.tensor([low_pct / 100, high_pct / 100], dtype=flat.dtype), dim=1)
    lo, hi = q[0].view(b, 1, 1, 1), q[1].view(b, 1, 1, 1)
    span = (hi - lo).clamp_min(1e-6)
    out = ((images.float() - lo) / span).clamp(0, 1)
    return torch.where((hi - lo) > 1e-6, out, torch.zeros_like(out))


def draw_augment_params(
    batch_size: int, image_hw: tuple[int, int], config: SegAugmentConfig, generator: torch.Generator
) -> AugmentParams:
    """Draw every random value of one batch from `generator` (the only place randomness enters)."""
    g = generator

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch_size, generator=g)

    active = torch.rand(batch_size, generator=g) < config.prob
    angle = u(-config.rotate_deg, config.rotate_deg) * math.pi / 180
    scale = torch.exp(u(math.log(config.scale_min), math.log(config.scale_max)))
    shift = (torch.rand(batch_size, 2, generator=g) * 2 - 1) * config.translate * 2
    flip_x = torch.rand(batch_size, generator=g) < config.flip_prob
    flip_y = torch.rand(batch_size, generator=g) < config.flip_prob
    gamma = torch.exp(u(-math.log(config.gamma_max), math.log(config.gamma_max)))
    contrast = u(1 - config.contrast, 1 + config.contrast)
    brightness = u(-config.brightness, config.brightness)
    noise_std = u(0.0, config.noise_std_max)
    noise = torch.randn(batch_size, 1, *image_hw, generator=g)
    return AugmentParams(active, angle, scale, shift, flip_x, flip_y, gamma, contrast, brightness, noise_std, noise)


def affine_matrices(params: AugmentParams) -> torch.Tensor:
    """`(B, 2, 3)` matrices for `F.affine_grid` (output grid -> input grid); identity where inactive.

    A scale s > 1 zooms in (structures look larger): the output samples a region 1/s the size.
    """
    zoom = affine.rotation(params.angle_rad) * (1.0 / params.scale)[:, None, None]
    theta = affine.theta(affine.scale_cols(zoom, affine.flip_sign(params.flip_x), affine.flip_sign(params.flip_y)),
                         params.shift_xy)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand_as(theta)
    return torch.where(params.active.view(-1, 1, 1), theta, identity)


def apply_augment(
    images: torch.Tensor, masks: torch.Tensor, params: AugmentParams, out_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply drawn parameters. `images` float `(B, 1, H, W)` in ~[0, 1]; `masks` int64 `(B, H, W)`.

    `out_size` S (optional, <= H = W): return the central `S x S` window of the transformed images (a
    random crop, since the transform includes the random translation); pixel-aligned with the input
    when a sample is inactive and H - S is even. `params.noise` must then be `(B, 1, S, S)`.
    Returns new tensors (`(B, 1, S, S)`, `(B, S, S)`, default S = H); inputs are not modified.
    """
    b, c, h, w = images.shape
    theta = affine_matrices(params).to(images.dtype)
    if out_size is not None:
        if h != w or out_size > h:
            raise ConfigError(f"out_size {out_size} needs square images of at least that size, got {h}x{w}")
        theta = theta.clone()
        theta[:, :, :2] = theta[:, :, :2] * (out_size / h)
        h = w = out_size
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    img = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    msk = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    msk = msk[:, 0].round().long()
    act = params.active.view(-1, 1, 1, 1)
    gamma = params.gamma.view(-1, 1, 1, 1)
    out = img.clamp_min(0) ** gamma
    out = out * params.contrast.view(-1, 1, 1, 1) + params.brightness.view(-1, 1, 1, 1)
    out = out + params.noise_std.view(-1, 1, 1, 1) * params.noise.to(images.dtype)
    ident = img.clamp(0, 1) if images.shape[-1] != h else images
    img = torch.where(act, out, ident)
    return img, msk


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: SegAugmentConfig,
    generator: torch.Generator,
    out_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw parameters from `generator` and apply them: `(B, 1, H, W)`, `(B, H, W)` -> `(B, 1, S, S)`,
    `(B, S, S)` with S = `out_size` or H."""
    hw = (out_size, out_size) if out_size is not None else tuple(images.shape[-2:])
    params = draw_augment_params(images.shape[0], hw, config, generator)
    return apply_augment(images, masks, params, out_size=out_size)
