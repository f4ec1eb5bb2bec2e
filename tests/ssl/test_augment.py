"""Batch views: determinism, per-sample randomness, identity, flips/rotation vs torch references."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cmrprior.errors import ConfigError
from cmrprior.ssl.augment import (
    ViewAugmentConfig,
    ViewParams,
    apply_view_params,
    random_views,
    sample_view_params,
    two_views,
)


def _images(b=4, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=g)


def _params(b, **kw):
    base = dict(
        crop_w=torch.ones(b), crop_h=torch.ones(b), crop_cx=torch.zeros(b), crop_cy=torch.zeros(b),
        hflip=torch.zeros(b, dtype=torch.bool), vflip=torch.zeros(b, dtype=torch.bool), angle=torch.zeros(b),
        brightness=torch.zeros(b), contrast=torch.ones(b), gamma=torch.ones(b), noise_std=torch.zeros(b), noise_seed=0,
    )
    base.update(kw)
    return ViewParams(**base)


def test_seeded_determinism_and_different_seeds():
    x = _images()
    cfg = ViewAugmentConfig()
    a = random_views(x, cfg, torch.Generator().manual_seed(1))
    b = random_views(x, cfg, torch.Generator().manual_seed(1))
    c = random_views(x, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_per_sample_parameters_differ():
    x = _images(1).repeat(6, 1, 1, 1)  # six copies of the same image
    v = random_views(x, ViewAugmentConfig(), torch.Generator().manual_seed(0))
    flat = v.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))
    v1, v2 = two_views(x, ViewAugmentConfig(), torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == x.shape and not torch.allclose(v1, v2)


def test_identity_when_all_probabilities_zero():
    x = _images()
    v = random_views(x, ViewAugmentConfig.none(), torch.Generator().manual_seed(0))
    assert torch.equal(v, x) and v is not x


def test_input_not_modified():
    x = _images()
    x0 = x.clone()
    random_views(x, ViewAugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(x, x0)


@pytest.mark.parametrize("h,w", [(16, 16), (12, 20)])
def test_flips_match_torch_flip(h, w):
    x = _images(4, h, w)
    hf = torch.tensor([True, False, True, False])
    vf = torch.tensor([False, True, True, False])
    got = apply_view_params(x, _params(4, hflip=hf, vflip=vf))
    for i in range(4):
        ref = x[i]
        if hf[i]:
            ref = torch.flip(ref, dims=(-1,))
        if vf[i]:
            ref = torch.flip(ref, dims=(-2,))
        torch.testing.assert_close(got[i], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_multiples_of_90_match_rot90(k):
    x = _images(3, 15, 15)
    got = apply_view_params(x, _params(3, angle=torch.full((3,), k * math.pi / 2)))
    torch.testing.assert_close(got, torch.rot90(x, k, dims=(-2, -1)), rtol=0, atol=1e-5)


def test_rotation_of_non_square_image_keeps_distances():
    # a 180-degree turn of a non-square image is exact (no shear from the aspect ratio)
    x = _images(2, 10, 18)
    got = apply_view_params(x, _params(2, angle=torch.full((2,), math.pi)))
    torch.testing.assert_close(got, torch.rot90(x, 2, dims=(-2, -1)), rtol=0, atol=1e-5)


def test_crop_is_a_resized_subwindow():
    # crop the left half (w = 0.5, centre x = -0.5): an image linear in x maps to a linear ramp over
    # the left half's range (interior pixels, exact for bilinear interpolation of a linear function)
    w = 16
    xs = torch.arange(w, dtype=torch.float32)
    x = xs.view(1, 1, 1, w).repeat(1, 1, 8, 1)
    got = apply_view_params(x, _params(1, crop_w=torch.tensor([0.5]), crop_cx=torch.tensor([-0.5])))
    # output pixel j (normalised u_j = (2j+1)/w - 1) samples input at 0.5*u_j - 0.5 -> pixel ((0.5u-0.5)+1)*w/2 - 0.5
    u = (2 * xs + 1) / w - 1
    expected = ((0.5 * u - 0.5) + 1) * w / 2 - 0.5
    torch.testing.assert_close(got[0, 0, 3, 1:-1], expected[1:-1], rtol=0, atol=1e-4)


def test_intensity_transforms_hand_values():
    x = _images(2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    got = apply_view_params(x, _params(2, contrast=torch.tensor([2.0, 1.0]), brightness=torch.tensor([0.0, 0.5])))
    torch.testing.assert_close(got[0], ((x - mean) * 2 + mean)[0])
    torch.testing.assert_close(got[1], (x + 0.5 * std)[1])
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    got = apply_view_params(x, _params(2, gamma=torch.tensor([2.0, 2.0])))
    torch.testing.assert_close(got, lo + (hi - lo) * ((x - lo) / (hi - lo)) ** 2)


def test_noise_level_and_seed():
    x = torch.zeros(2, 1, 64, 64) + torch.linspace(0, 1, 64)  # std > 0
    std = x.std(dim=(1, 2, 3))
    p = _params(2, noise_std=torch.tensor([0.0, 0.5]), noise_seed=11)
    got = apply_view_params(x, p)
    assert torch.equal(got[0], x[0])
    assert abs((got[1] - x[1]).std().item() - 0.5 * std[1].item()) < 0.05 * std[1].item()
    assert torch.equal(apply_view_params(x, p), got)


def test_sampled_ranges_respected():
    cfg = ViewAugmentConfig(rotate_prob=1.0, rotate_degrees=10, contrast_prob=1.0, crop_prob=1.0)
    p = sample_view_params(500, cfg, torch.Generator().manual_seed(0))
    assert p.angle.abs().max() <= math.radians(10) + 1e-6
    assert ((p.contrast >= 0.6) & (p.contrast <= 1.4)).all()
    area = p.crop_w * p.crop_h
    assert (area <= 1.0 + 1e-6).all() and (area >= 0.35 - 1e-6).all()
    assert ((p.crop_cx.abs() + p.crop_w) <= 1 + 1e-6).all()
    flips = sample_view_params(2000, ViewAugmentConfig(), torch.Generator().manual_seed(0)).hflip.float().mean()
    assert 0.45 < flips < 0.55


def test_bad_config():
    with pytest.raises(ConfigError, match="hflip_prob"):
        ViewAugmentConfig(hflip_prob=1.5)
    with pytest.raises(ConfigError, match="crop_scale"):
        ViewAugmentConfig(crop_scale=(0.0, 1.2))
    assert dataclasses.is_dataclass(ViewAugmentConfig())


def test_out_size_resizes_in_the_same_resampling():
    x = _images(2, 32, 32)
    got = apply_view_params(x, _params(2), out_size=16)
    ref = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    v1, v2 = two_views(x, ViewAugmentConfig(), torch.Generator().manual_seed(0), out_size=24)
    assert v1.shape == v2.shape == (2, 1, 24, 24)
