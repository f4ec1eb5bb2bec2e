"""Test-time rotation averaging (`segmentation.tta`) against torch.rot90, rotation-equivariant models and the
slice-by-slice definition, and its place in `SegInference`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from cmrprior.errors import ConfigError
from cmrprior.experiments.config import StudyConfig
from cmrprior.segmentation import volumes
from cmrprior.segmentation.inference import SegInference, load_for_inference
from cmrprior.segmentation.network import build_unet, save_segmenter
from cmrprior.segmentation.tta import RotationAverage, rotate
from seg_doubles import TINY


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random image `(1, 1, h, w)`: bilinear interpolation of it is close to exact."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=(h, w)), 3)
    return torch.from_numpy(smooth.astype(np.float32))[None, None]


def test_rotation_by_90_degrees_is_rot90():
    x = _image(24, 24)
    np.testing.assert_allclose(rotate(x, 90, "zeros"), torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5)
    np.testing.assert_allclose(rotate(x, -90, "zeros"), torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5)


def test_rotation_is_of_pixels_on_a_non_square_image():
    # a disc right of the centre of a 40 x 80 image goes to a disc of the same size below or above it
    h, w = 40, 80
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2 - 12) ** 2 <= 6**2).astype(np.float32)
    out = rotate(torch.from_numpy(disc)[None, None], 90, "zeros")[0, 0].numpy()
    cy, cx = ndimage.center_of_mass(out)
    assert abs(cx - (w - 1) / 2) < 0.5 and abs(abs(cy - (h - 1) / 2) - 12) < 0.5
    assert abs(out.sum() - disc.sum()) / disc.sum() < 0.05
    rows, cols = np.flatnonzero(out.max(axis=1) > 0.5), np.flatnonzero(out.max(axis=0) > 0.5)
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1  # a disc, not an ellipse


def test_rotating_back_restores_the_interior():
    # bilinear interpolation reproduces a linear ramp exactly, so rotating a ramp there and back restores it
    rows, cols = np.mgrid[:48, :40].astype(np.float32)
    x = torch.from_numpy(0.5 + 0.02 * rows - 0.03 * cols)[None, None]
    back = rotate(rotate(x, 20, "zeros"), -20, "zeros")
    np.testing.assert_allclose(back[..., 14:34, 12:28], x[..., 14:34, 12:28], atol=1e-4)
    assert not torch.allclose(rotate(x, 20, "zeros")[..., 14:34, 12:28], x[..., 14:34, 12:28], atol=1e-2)


class Pointwise(nn.Module):
    """Logits from each pixel's intensity alone: rotating the input rotates the output."""

    def forward(self, x):
        k = torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1)
        return torch.sin(3 * x + k) * 2


def test_an_equivariant_model_keeps_its_probabilities_inside_the_image():
    x = _image(32, 32, seed=2) * 3
    model = Pointwise()
    tta = torch.softmax(RotationAverage(model, (15.0, -15.0))(x), dim=1)
    plain = torch.softmax(model(x), dim=1)
    np.testing.assert_allclose(tta[..., 10:22, 10:22], plain[..., 10:22, 10:22], atol=0.02)


def test_averages_the_softmax_of_the_rotated_passes():
    # reference: the passes written out with torch.rot90 (exact pixel permutations)
    torch.manual_seed(3)
    model = build_unet(TINY).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = torch.softmax(RotationAverage(model, (90.0,))(x), dim=1)
        plain = torch.softmax(model(x), dim=1)
        turned = torch.rot90(torch.softmax(model(torch.rot90(x, k=1, dims=(2, 3))), dim=1), k=-1, dims=(2, 3))
    np.testing.assert_allclose(out, (plain + turned) / 2, atol=1e-5)
    assert not torch.allclose(plain, turned, atol=1e-3)  # the network is not rotation-invariant


def test_rotations_are_an_inference_setting(tmp_path):
    assert SegInference().rotations == ()
    cfg = StudyConfig.from_dict({"masks": {"inference": {"rotations": [15, -15]}}})
    assert cfg.masks.inference.rotations == (15, -15)
    assert StudyConfig.from_dict(cfg.to_dict()).masks == cfg.masks
    for bad in ([0], [120], ["x"], [15, 15], [float("nan")]):
        with pytest.raises(ConfigError, match="rotations"):
            SegInference(rotations=tuple(bad))
    torch.manual_seed(0)
    weights = save_segmenter(build_unet(TINY), TINY, tmp_path / "m.safetensors")
    runner, args, _, choice = load_for_inference(weights, SegInference(rotations=(15.0,)))
    assert isinstance(runner, RotationAverage) and runner.degrees == (15.0,) and choice.backend == "torch"
    assert runner.input_slices == TINY.in_channels and runner.locator is runner.model


class Counting(nn.Module):
    """Pointwise logits, counting the images it is called on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.conv = nn.Conv2d(1, 4, 1)
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.conv(x)


def test_only_the_window_pass_is_repeated():
    model = Counting()
    tta = RotationAverage(model, (10.0, -10.0))
    grid = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    volumes.find_centre(tta, grid, divisor=1)
    assert model.images == 3  # the heart-finding pass: once
    volumes.crop_probabilities(tta, grid, (32.0, 32.0), divisor=1, crop=32)
    assert model.images == 3 + 3 * 3
