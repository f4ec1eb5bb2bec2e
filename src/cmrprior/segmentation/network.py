"""The segmentation network: MONAI's 2D U-Net over short-axis slices, 4 classes (BG, RV, MYO, LV).

`UNetArgs` holds every constructor argument; it is stored next to the weights (JSON) so a model file is
self-describing. Weights are saved as safetensors (no pickle) and loaded with `load_segmenter`.

An ensemble (`SegmenterEnsemble`, written by `cmrprior.segmentation.ensemble`) is stored the same way: one
safetensors file holding every member's weights (`members.<i>.` prefixes) and a JSON whose `members` list
gives each member's `UNetArgs`. `load_segmenter` returns it like a single U-Net, so sets, basal models,
sha256 checks and the inference engines treat it as one segmenter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation.config import N_CLASSES, UNetArgs  # noqa: F401 - re-exported
from cmrprior.utils import atomic

def build_unet(args: UNetArgs) -> nn.Module:
    """A MONAI 2D U-Net from `args` (randomly initialised from torch's global generator)."""
    from monai.networks.nets import UNet  # imported here: MONAI takes seconds to import

    return UNet(
        spatial_dims=2,
        in_channels=args.in_channels,
        out_channels=args.out_channels,
        channels=args.channels,
        strides=args.strides,
        num_res_units=args.num_res_units,
        dropout=args.dropout,
        norm=args.norm,
    )


LOG_FLOOR = -80.0  # exp(-80) ~ 2e-35: below any float32 probability a network gives


def log_mean(probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
    """The log of the mean of several passes' class probabilities, floored at `LOG_FLOOR` where a mean is 0:
    what a segmenter that averages passes returns, so that every caller, which takes the softmax of a
    segmenter's output, gets the mean probabilities."""
    return torch.log(torch.stack(list(probabilities)).mean(dim=0)).clamp_min(LOG_FLOOR)


class SegmenterEnsemble(nn.Module):
    """U-Nets of one input and output layout whose class probabilities are averaged.

    `forward` returns the log of the members' mean softmax (`log_mean`)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def locator(self) -> nn.Module:
        """The network of the heart-finding pass (`segmentation.volumes.find_centre`): the first member
        alone. That pass yields a centre, not labels, and on a whole field of view it is the slowest one."""
        return self.members[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_mean([torch.softmax(m(x).float(), dim=1) for m in self.members])


def ensemble_args(members: Sequence[UNetArgs]) -> UNetArgs:
    """The arguments callers see for an ensemble: the first member's (inputs, classes and divisor are the
    same for all). Raises ConfigError when the members differ in any of them."""
    first = members[0]
    for other in members[1:]:
        if (other.in_channels, other.out_channels, other.divisor) != (first.in_channels, first.out_channels,
                                                                       first.divisor):
            raise ConfigError(f"ensemble members differ in input slices, classes or divisor: "
                              f"{(first.in_channels, first.out_channels, first.divisor)} and "
                              f"{(other.in_channels, other.out_channels, other.divisor)}")
    return first


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_segmenter(model: nn.Module, args: UNetArgs, path: str | Path, extra: dict | None = None) -> Path:
    """Write `path` (.safetensors) and `path` with suffix .json (model args + `extra` metadata), atomically."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic.atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic.write_json(path.with_suffix(".json"), {"unet_args": args.to_json(), **(extra or {})})
    return path


def load_segmenter(path: str | Path) -> tuple[nn.Module, UNetArgs, dict]:
    """Load a segmenter written by `save_segmenter` (a U-Net, or a `SegmenterEnsemble` when its JSON lists
    `members`): (model in eval mode, args, metadata).

    Raises:
        DataError: missing weights or JSON, or weights that do not match the stored arguments.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists():
        raise DataError(path, "segmenter weights not found")
    if not meta_path.exists():
        raise DataError(meta_path, "segmenter arguments (JSON next to the weights) not found")
    try:
        meta = json.loads(meta_path.read_text())
        args = UNetArgs.from_json(meta["unet_args"])
        members = [UNetArgs.from_json(m["unet_args"]) for m in meta.get("members", [])]
        if members:
            args = ensemble_args(members)
    except (ConfigError, ValueError, KeyError, TypeError) as exc:
        raise DataError(meta_path, f"unreadable segmenter arguments: {exc}") from exc
    model = SegmenterEnsemble([build_unet(a) for a in members]) if members else build_unet(args)
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(path, f"cannot load segmenter weights: {exc}") from exc
    model.eval()
    return model, args, meta
