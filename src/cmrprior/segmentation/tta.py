"""Test-time rotation averaging: the segmenter's probabilities averaged over rotated copies of its input.

`RotationAverage(model, degrees)` runs `model` on the input as given and on copies rotated in-plane by each
angle of `degrees` (bilinear, zero outside the image), rotates each copy's softmax probabilities back (edge
values outside), and returns the log of the mean (`network.log_mean`). It wraps either engine
(`segmentation.inference`: eager PyTorch or ONNX Runtime) and is set by `SegInference.rotations`.

The heart-finding pass on the whole field of view (`segmentation.volumes.find_centre`) runs the wrapped model
once (`locator`): it yields a centre, not labels. Each angle costs one more pass on the heart window.
Measured on ACDC (`MODEL_CARD.md`, "Test-time rotations"); not the default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cmrprior.segmentation.network import log_mean
from cmrprior.segmentation.predict import input_slices


def rotate(x: torch.Tensor, degrees: float, padding: str) -> torch.Tensor:
    """`x` `(B, C, H, W)` rotated in-plane by `degrees` about the image centre (bilinear; `padding`:
    "zeros" or "border" outside). The rotation is of pixel space, also for H != W, so `rotate(rotate(x, d),
    -d)` is `x` up to interpolation and the corners."""
    h, w = x.shape[-2:]
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # affine_grid works in coordinates normalised per axis: rescale so that the rotation is one of pixels
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)


class RotationAverage(nn.Module):
    """`model` with its softmax probabilities averaged over the input and its copies rotated by `degrees`
    (module docstring)."""

    def __init__(self, model: nn.Module, degrees: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.degrees = tuple(float(d) for d in degrees)
        self.input_slices = input_slices(model)

    @property
    def locator(self) -> nn.Module:
        """The network of the heart-finding pass: the wrapped model (its own locator for an ensemble)."""
        return getattr(self.model, "locator", self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = [torch.softmax(self.model(x).float(), dim=1)]
        for d in self.degrees:
            probs.append(rotate(torch.softmax(self.model(rotate(x, d, "zeros")).float(), dim=1), -d, "border"))
        return log_mean(probs)
