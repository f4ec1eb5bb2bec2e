"""Affine-matrix helpers against explicit matrix products, and both augmentations' thetas against a slow
reference composition of the same steps."""

from __future__ import annotations

import math

import pytest
import torch

from cmrprior.segmentation import augment as seg_augment
from cmrprior.ssl import augment as ssl_augment
from cmrprior.utils import affine


def _rot(a: float) -> torch.Tensor:
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


@pytest.mark.parametrize("h, w", [(1, 1), (32, 32), (24, 40), (50, 30)])
def test_rotation_is_pixel_space_rotation(h, w):
    angles = torch.tensor([0.0, 0.3, -1.2, math.pi / 2])
    d = torch.diag(torch.tensor([w / max(h, w), h / max(h, w)]))
    ref = torch.stack([torch.linalg.inv(d) @ _rot(float(a)) @ d for a in angles])
    torch.testing.assert_close(affine.rotation(angles, h, w), ref)


def test_scalings_are_diagonal_products_and_theta_layout():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 2, 2, generator=g)
    sx, sy = torch.randn(5, generator=g), torch.randn(5, generator=g)
    diag = torch.diag_embed(torch.stack([sx, sy], dim=-1))
    torch.testing.assert_close(affine.scale_rows(m, sx, sy), diag @ m)
    torch.testing.assert_close(affine.scale_cols(m, sx, sy), m @ diag)
    shift = torch.randn(5, 2, generator=g)
    t = affine.theta(m, shift)
    assert t.shape == (5, 2, 3) and t.dtype == torch.float32
    assert torch.equal(t[:, :, :2], m) and torch.equal(t[:, :, 2], shift)
    assert torch.equal(affine.flip_sign(torch.tensor([True, False])), torch.tensor([-1.0, 1.0]))


def test_ssl_theta_is_crop_flip_rotation():
    p = ssl_augment.sample_view_params(8, ssl_augment.ViewAugmentConfig(rotate_prob=1.0), torch.Generator().manual_seed(3))
    h, w = 40, 52
    d = torch.diag(torch.tensor([w / max(h, w), h / max(h, w)]))
    for i in range(8):
        flip = torch.diag(torch.tensor([-1.0 if p.hflip[i] else 1.0, -1.0 if p.vflip[i] else 1.0]))
        crop = torch.diag(torch.stack([p.crop_w[i], p.crop_h[i]]))
        ref = torch.cat([crop @ flip @ torch.linalg.inv(d) @ _rot(float(p.angle[i])) @ d,
                         torch.stack([p.crop_cx[i], p.crop_cy[i]])[:, None]], dim=1)
        torch.testing.assert_close(ssl_augment.affine_matrices(p, h, w)[i], ref)


def test_segmentation_theta_is_zoom_rotation_flip_or_identity():
    cfg = seg_augment.SegAugmentConfig(flip_prob=0.5, prob=0.6)
    p = seg_augment.draw_augment_params(10, (16, 16), cfg, torch.Generator().manual_seed(5))
    theta = seg_augment.affine_matrices(p)
    assert p.active.any() and not p.active.all()
    for i in range(10):
        if not p.active[i]:
            assert torch.equal(theta[i], torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
            continue
        flip = torch.diag(torch.tensor([-1.0 if p.flip_x[i] else 1.0, -1.0 if p.flip_y[i] else 1.0]))
        ref = torch.cat([_rot(float(p.angle_rad[i])) @ flip / p.scale[i], p.shift_xy[i][:, None]], dim=1)
        torch.testing.assert_close(theta[i], ref)
