"""Pretrained weights for backbones: torchvision's ImageNet weights or a local state-dict file.

`resolve_weights(name, weights)` returns a state dict (CPU tensors):

* `"imagenet"`: torchvision's default ImageNet weights for the architecture, read from torch hub's
  cache `$TORCH_HOME/hub/checkpoints/<file>` (default `~/.cache/torch/hub/checkpoints`), downloaded
  there when missing and the network allows it. Offline without the file ->
  `WeightsUnavailableError` naming the exact path and file name to place and the `weights=` /
  `--weights` alternative.
* a path: `.safetensors` (safetensors) or anything else with `torch.load(weights_only=True)`;
  a dict with a `state_dict`/`model` entry is unwrapped.

`load_backbone_weights(model, state)` accepts torchvision key layout (classifier keys dropped,
`trunk.` prefix added) or cmrprior's own, and adapts the first convolution to `model.in_chans`:
summed over the RGB axis for one channel (a grey image x gives conv_sum(x) = conv_rgb([x, x, x])),
kept for three, cycled and rescaled by 3/in_chans otherwise.

`grey_normalization()` is the input normalisation that goes with the summed first convolution (see there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from cmrprior.errors import ConfigError, WeightsUnavailableError

# torchvision's per-channel (R, G, B) input normalisation of every ImageNet weight set (its ImageClassification preset).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_TV_ARCH = {"vgg16": "vgg16", "densenet121": "densenet121", "resnet18": "resnet18", "resnet50": "resnet50"}


def imagenet_weights_url(name: str) -> str:
    """URL of torchvision's default ImageNet weights for backbone `name`."""
    import torchvision  # ~3 s to import; only needed for the ImageNet URLs

    if name not in _TV_ARCH:
        raise WeightsUnavailableError(f"backbone {name!r} has no ImageNet weights (available for {sorted(_TV_ARCH)})")
    return torchvision.models.get_model_weights(_TV_ARCH[name]).DEFAULT.url


def imagenet_cache_path(name: str) -> Path:
    """Where torch hub caches the ImageNet weights of `name` (`$TORCH_HOME/hub/checkpoints/<file>`)."""
    url = imagenet_weights_url(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _download(url: str, dst: Path) -> None:
    """Download `url` to `dst` with torch hub (hash-checked). Separate so tests can replace it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=_hash_prefix(url), progress=False)


def _hash_prefix(url: str) -> str | None:
    m = re.search(r"-([a-f0-9]{6,})\.", os.path.basename(url))
    return m.group(1) if m else None


def resolve_weights(name: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """The state dict that `weights` names for backbone `name` (see module doc).

    Raises WeightsUnavailableError (file missing, unreadable, or ImageNet weights not cached and
    not downloadable).
    """
    if isinstance(weights, str) and weights.lower() == "imagenet":
        path = imagenet_cache_path(name)
        if not path.exists():
            url = imagenet_weights_url(name)
            try:
                _download(url, path)
            except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
                raise WeightsUnavailableError(
                    f"ImageNet weights for {name!r} are not cached and could not be downloaded ({exc.__class__.__name__}: "
                    f"{exc}). Download {url} on a machine with internet and put it at {path} "
                    f"(torch hub cache: set TORCH_HOME to change the folder), or pass the file directly with "
                    f"weights='/path/{path.name}' (CLI: --weights /path/{path.name})."
                ) from exc
        return read_state_dict(path)
    return read_state_dict(Path(weights))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch file (weights_only). Raises WeightsUnavailableError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"{path}: cannot read weights ({exc.__class__.__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path}: not a state dict of tensors")
    return state


_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-conv weight `(O, I, kh, kw)` -> `(O, in_chans, kh, kw)`.

    I == in_chans: unchanged. in_chans == 1: sum over I (a grey image seen as I equal channels gives
    the same response). Otherwise channels are cycled and rescaled by I / in_chans.
    """
    n_in = weight.shape[1]
    if n_in == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // n_in)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (n_in / in_chans)


def grey_normalization(
    mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> tuple[float, float]:
    """(mu, sigma) of one grey channel for a stem whose RGB filters were summed (`adapt_input_conv`).

    The network was trained on x_c = (v_c - m_c) / s_c per colour c. A grey image g in [0, 1] is the colour
    image v_c = g, so its exact normalised input is x_c = (g - m_c) / s_c, three slightly different channels.
    The summed stem computes conv(W_R + W_G + W_B, y) = conv(W_c, [y, y, y]) for ONE channel y, so the
    best it can be given is the y closest to all three: y = mean_c x_c (least squares, pointwise), i.e.

        y = g * mean_c(1 / s_c) - mean_c(m_c / s_c) = (g - mu) / sigma,
        sigma = 1 / mean_c(1 / s_c),   mu = sigma * mean_c(m_c / s_c).

    ImageNet: mu = 0.4488, sigma = 0.2260 (within 1e-3 of the plain means of m_c and s_c). What stays off,
    x_c - y, is at most 0.21 in units of the normalised input for g in [0, 1] (blue channel); a one-channel
    stem (most have no bias) cannot absorb per-channel offsets exactly. Raises ConfigError for bad statistics.
    """
    if len(mean) != len(std) or not mean or min(std) <= 0:
        raise ConfigError(f"grey_normalization: mean and std of the same length, std > 0; got {mean}, {std}")
    inv = sum(1.0 / s for s in std) / len(std)
    sigma = 1.0 / inv
    mu = sigma * sum(m / s for m, s in zip(mean, std)) / len(std)
    return mu, sigma


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "<state dict>") -> None:
    """Load `state` into a registry backbone (torchvision or cmrprior key layout), adapting the first conv.

    Raises WeightsUnavailableError when keys or shapes do not match (naming `source`).
    """
    own = model.state_dict()
    if not any(k in own for k in state):
        prefix = "trunk." if any(k.startswith("trunk.") for k in own) else ""
        head = tuple(getattr(model, "head_prefixes", ()))
        mapped = {}
        for k, v in state.items():
            if head and k.startswith(head):
                continue
            k = _DENSENET_OLD_KEY.sub(r"\1\2", k)
            mapped[prefix + k] = v
        state = mapped
    first = getattr(model, "first_conv", None)
    if first is not None and f"{first}.weight" in state:
        state = dict(state)
        state[f"{first}.weight"] = adapt_input_conv(state[f"{first}.weight"], model.in_chans)
    for k in own:  # checkpoints from before BatchNorm counted batches lack these buffers
        if k.endswith("num_batches_tracked") and k not in state:
            state = dict(state)
            state[k] = own[k]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise WeightsUnavailableError(
            f"{source}: weights do not fit backbone {getattr(model, 'arch', type(model).__name__)!r}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, wrong shape {bad_shape[:5]}"
        )
    model.load_state_dict(state, strict=True)
