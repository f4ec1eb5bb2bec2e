"""SimCLR views for single-channel CMR, applied to whole batches on the tensor's device.

The study's augmentations: random (resized) crop, contrast/brightness/gamma, horizontal and vertical
flips, rotation, Gaussian noise. Each has a probability and a range; parameters are drawn per sample.

Following MONAI's `RandomizableTransform`, all random values are drawn in ONE place,
`sample_view_params(batch, config, generator)`, from a `torch.Generator`; `apply_view_params(x, params)`
is deterministic. Crop + flips + rotation are composed into one 2x3 affine matrix per sample and
applied with a single `affine_grid`/`grid_sample` call for the whole batch (bilinear,
`align_corners=False`, zeros outside the image). Rotation is in pixel space (no shear on non-square
images); a positive angle turns the image like `torch.rot90(x, 1, dims=(-2, -1))`.

Order of operations: geometry (crop, flips, rotation), then brightness (add), contrast (scale around
the image mean), gamma (on the image's own min-max range), Gaussian noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cmrprior.errors import ConfigError
from cmrprior.ssl.config import ViewAugmentConfig  # noqa: F401 - re-exported
from cmrprior.utils import affine


@dataclass(frozen=True)
class ViewParams:
    """Per-sample parameters (all `(B,)` float32 on CPU unless noted)."""

    crop_w: torch.Tensor  # crop width as a fraction of the image width
    crop_h: torch.Tensor
    crop_cx: torch.Tensor  # crop centre in normalised coordinates [-1, 1]
    crop_cy: torch.Tensor
    hflip: torch.Tensor  # bool
    vflip: torch.Tensor  # bool
    angle: torch.Tensor  # radians
    brightness: torch.Tensor  # additive, in units of the image std
    contrast: torch.Tensor
    gamma: torch.Tensor
    noise_std: torch.Tensor  # in units of the image std
    noise_seed: int  # seeds the device generator for the noise field

    def is_identity_geometry(self) -> bool:
        return bool(
            (self.crop_w == 1).all() and (self.crop_h == 1).all() and (self.crop_cx == 0).all()
            and (self.crop_cy == 0).all() and not self.hflip.any() and not self.vflip.any() and (self.angle == 0).all()
        )


def sample_view_params(batch: int, config: ViewAugmentConfig, generator: torch.Generator) -> ViewParams:
    """Draw every random value for a batch of `batch` views from `generator` (a CPU generator)."""

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    def on(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < p

    # random resized crop: area fraction s, aspect ratio r (log-uniform), centre so the crop fits
    s = u(*config.crop_scale)
    r = torch.exp(u(math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])))
    w = torch.sqrt(s * r).clamp(max=1.0)
    h = torch.sqrt(s / r).clamp(max=1.0)
    cx = (2 * torch.rand(batch, generator=generator) - 1) * (1 - w)
    cy = (2 * torch.rand(batch, generator=generator) - 1) * (1 - h)
    crop = on(config.crop_prob)
    one, zero = torch.ones(batch), torch.zeros(batch)
    hflip = on(config.hflip_prob)
    vflip = on(config.vflip_prob)
    angle = torch.deg2rad(u(-config.rotate_degrees, config.rotate_degrees))
    rot = on(config.rotate_prob)
    bright = u(-config.brightness, config.brightness)
    b_on = on(config.brightness_prob)
    contrast = u(*config.contrast)
    c_on = on(config.contrast_prob)
    gamma = torch.exp(u(math.log(config.gamma[0]), math.log(config.gamma[1])))
    g_on = on(config.gamma_prob)
    noise = u(*config.noise_std)
    n_on = on(config.noise_prob)
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return ViewParams(
        crop_w=torch.where(crop, w, one),
        crop_h=torch.where(crop, h, one),
        crop_cx=torch.where(crop, cx, zero),
        crop_cy=torch.where(crop, cy, zero),
        hflip=hflip,
        vflip=vflip,
        angle=torch.where(rot, angle, zero),
        brightness=torch.where(b_on, bright, zero),
        contrast=torch.where(c_on, contrast, one),
        gamma=torch.where(g_on, gamma, one),
        noise_std=torch.where(n_on, noise, zero),
        noise_seed=noise_seed,
    )


def affine_matrices(params: ViewParams, height: int, width: int) -> torch.Tensor:
    """`(B, 2, 3)` matrices mapping output normalised (x, y) to input normalised (x, y) (affine_grid's theta).

    input = Crop(Flip(Rot(output))): Rot rotates in pixel units, Flip negates x and/or y,
    Crop scales by the crop size and shifts to the crop centre.
    """
    rot = affine.rotation(params.angle, height, width)
    fx, fy = affine.flip_sign(params.hflip), affine.flip_sign(params.vflip)
    linear = affine.scale_rows(rot, params.crop_w * fx, params.crop_h * fy)
    return affine.theta(linear, torch.stack([params.crop_cx, params.crop_cy], dim=-1))


def apply_view_params(x: torch.Tensor, params: ViewParams, out_size: int | None = None) -> torch.Tensor:
    """Apply drawn parameters to `x (B, C, H, W)` float; returns a new tensor on the same device,
    `(B, C, out_size, out_size)` when `out_size` is given (the resize is part of the one resampling),
    else `(B, C, H, W)`."""
    if x.ndim != 4 or x.shape[0] != params.angle.shape[0]:
        raise ConfigError(f"apply_view_params: expected (B, C, H, W) with B = {params.angle.shape[0]}, got {tuple(x.shape)}")
    b, c, h, w = x.shape
    dev = x.device
    out = x
    oh, ow = (h, w) if out_size is None else (out_size, out_size)
    if (oh, ow) != (h, w) or not params.is_identity_geometry():
        theta = affine_matrices(params, h, w).to(device=dev, dtype=x.dtype)
        grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def col(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=dev, dtype=x.dtype).view(b, 1, 1, 1)

    need_std = bool((params.brightness != 0).any() or (params.noise_std != 0).any())
    std = out.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6) if need_std else None
    if (params.brightness != 0).any():
        out = out + col(params.brightness) * std
    if (params.contrast != 1).any():
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * col(params.contrast) + mean
    if (params.gamma != 1).any():
        lo = out.amin(dim=(1, 2, 3), keepdim=True)
        rng = (out.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
        out = lo + rng * ((out - lo) / rng).clamp(0, 1).pow(col(params.gamma))
    if (params.noise_std != 0).any():
        g = torch.Generator(device=dev)
        g.manual_seed(params.noise_seed)
        noise = torch.randn(out.shape, generator=g, device=dev, dtype=out.dtype)
        out = out + noise * col(params.noise_std) * std
    return out if out is not x else x.clone()


def random_views(
    x: torch.Tensor, config: ViewAugmentConfig, generator: torch.Generator, out_size: int | None = None
) -> torch.Tensor:
    """One random view of every image of `x (B, C, H, W)` (parameters from `generator`)."""
    return apply_view_params(x, sample_view_params(x.shape[0], config, generator), out_size=out_size)


def two_views(
    x: torch.Tensor, config: ViewAugmentConfig, generator: torch.Generator, out_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent views of `x (B, C, H, W)`, made in one batched pass over `2B` images."""
    v = random_views(torch.cat([x, x], dim=0), config, generator, out_size=out_size)
    return v[: x.shape[0]], v[x.shape[0] :]
