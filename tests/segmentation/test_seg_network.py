"""The U-Net wrapper: argument checks, output shapes, safetensors round trip."""

from __future__ import annotations

import json

import pytest
import torch

from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation.network import UNetArgs, build_unet, count_parameters, load_segmenter, save_segmenter

from seg_doubles import TINY


@pytest.mark.parametrize(
    "args, hw",
    [
        (TINY, (16, 16)),
        (TINY, (32, 48)),
        (UNetArgs(channels=(4, 8, 16), strides=(2, 2), num_res_units=1), (32, 32)),
        (UNetArgs(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, out_channels=3, in_channels=2), (16, 24)),
    ],
)
def test_output_shape(args, hw):
    net = build_unet(args)
    x = torch.zeros(2, args.in_channels, *hw)
    assert net(x).shape == (2, args.out_channels, *hw)
    assert args.divisor == 2 ** len(args.strides)


def test_default_is_the_documented_unet():
    args = UNetArgs()
    assert args.channels == (16, 32, 64, 128, 256) and args.strides == (2, 2, 2, 2) and args.num_res_units == 2
    assert args.out_channels == 4 and args.in_channels == 1
    # hand count differs by version details; check the order of magnitude of the shipped network
    assert 1e5 < count_parameters(build_unet(args)) < 2e6


@pytest.mark.parametrize(
    "kw",
    [dict(channels=(4,), strides=()), dict(channels=(4, 8), strides=(2, 2)), dict(out_channels=1), dict(dropout=1.0),
     dict(channels=(0, 8), strides=(2,))],
)
def test_bad_args_raise(kw):
    with pytest.raises(ConfigError):
        UNetArgs(**{**dict(channels=(4, 8), strides=(2,)), **kw})


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = build_unet(TINY).eval()
    path = save_segmenter(net, TINY, tmp_path / "m.safetensors", {"note": "x"})
    loaded, args, meta = load_segmenter(path)
    assert args == TINY and meta["note"] == "x"
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(loaded(x), net(x))
    assert json.loads((tmp_path / "m.json").read_text())["unet_args"]["channels"] == [4, 8]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_segmenter(tmp_path / "none.safetensors")
    net = build_unet(TINY)
    path = save_segmenter(net, TINY, tmp_path / "m.safetensors")
    other = UNetArgs(channels=(4, 16), strides=(2,), num_res_units=0)
    (tmp_path / "m.json").write_text(json.dumps({"unet_args": other.to_json()}))
    with pytest.raises(DataError, match="m.safetensors"):
        load_segmenter(path)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(DataError, match="m.json"):
        load_segmenter(path)
