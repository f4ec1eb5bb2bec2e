"""Which engine runs the segmenter at inference: eager PyTorch or ONNX Runtime (`SegInference.backend`).

- `torch`: the U-Net in eager PyTorch (the default: results do not depend on an optional package).
- `onnx`: the same weights exported to ONNX in memory and run by ONNX Runtime; refused when onnxruntime is
  missing or the exported graph's probabilities differ from eager PyTorch's.
- `auto`: ONNX Runtime when it is installed and its probabilities match eager PyTorch's (max absolute
  difference < `MAX_PROB_DIFF` on a seeded check batch), else PyTorch, with the reason logged.

Either engine may be wrapped in test-time rotation averaging (`SegInference.rotations`, `segmentation.tta`).

Measured by `bench/segment_speed.py` (end to end per ACDC frame, both engines in one run).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation.config import BACKENDS, SegInference  # noqa: F401 - re-exported
from cmrprior.segmentation.network import UNetArgs, load_segmenter

log = logging.getLogger(__name__)

MAX_PROB_DIFF = 1e-4  # softmax probabilities, ONNX Runtime against eager PyTorch
CHECK_SEED = 0


@dataclass(frozen=True)
class BackendChoice:
    """The engine that runs, why, and (when ONNX was tried) the max abs probability difference."""

    backend: str
    reason: str
    max_prob_diff: float | None = None


def check_batches(args: UNetArgs) -> list[torch.Tensor]:
    """Seeded check inputs `(B, in_channels, H, W)` in [0, 1]: a crop-pass batch and a non-square one
    (dynamic height and width)."""
    g = torch.Generator().manual_seed(CHECK_SEED)
    d = args.divisor
    sizes = ((2, max(128 // d, 1) * d, max(128 // d, 1) * d), (1, 5 * d, 7 * d))
    return [torch.rand(b, args.in_channels, h, w, generator=g) for b, h, w in sizes]


@torch.no_grad()
def max_prob_diff(reference: nn.Module, candidate: nn.Module, batches: list[torch.Tensor]) -> float:
    """Max absolute difference of the softmax probabilities of two modules over `batches`."""
    reference.eval()
    worst = 0.0
    for x in batches:
        p = torch.softmax(reference(x).float(), dim=1)
        q = torch.softmax(candidate(x).float(), dim=1)
        worst = max(worst, float((p - q).abs().max()))
    return worst


def _onnxruntime_missing() -> str | None:
    """Why ONNX Runtime cannot run here (None: it can)."""
    for name in ("onnxruntime", "onnx"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name} is not installed ({exc})"
    return None


def choose_backend(model: nn.Module, args: UNetArgs, config: SegInference,
                   where: str | Path = "segmenter") -> tuple[nn.Module, BackendChoice]:
    """The module to run for `config.backend` (see the module docstring) and why; the choice is logged.

    Raises:
        ConfigError: backend `onnx` without onnxruntime/onnx. DataError: backend `onnx` whose exported
            graph does not reproduce `model` (`where` names the weights).
    """
    if config.backend == "torch":
        return model, BackendChoice("torch", "backend: torch")
    missing = _onnxruntime_missing()
    if missing is not None:
        from cmrprior.segmentation.onnx_runtime import INSTALL_HINT

        if config.backend == "onnx":
            raise ConfigError(f"segmenter backend onnx: {missing}; {INSTALL_HINT}")
        choice = BackendChoice("torch", f"backend auto: {missing}, eager PyTorch runs")
        log.info("%s: %s", where, choice.reason)
        return model, choice
    from cmrprior.segmentation.onnx_runtime import OnnxSegmenter, onnx_bytes

    threads = config.threads or torch.get_num_threads()
    runner = OnnxSegmenter(onnx_bytes(model, args), threads=threads)
    diff = max_prob_diff(model, runner, check_batches(args))
    if np.isfinite(diff) and diff < MAX_PROB_DIFF:
        choice = BackendChoice("onnx", f"backend {config.backend}: ONNX Runtime ({threads} threads), max |dp| "
                                       f"{diff:.1e} against eager PyTorch", diff)
        log.info("%s: %s", where, choice.reason)
        return runner, choice
    problem = f"ONNX Runtime probabilities differ from eager PyTorch by {diff:.2e} (limit {MAX_PROB_DIFF:.0e})"
    if config.backend == "onnx":
        raise DataError(Path(where), problem)
    choice = BackendChoice("torch", f"backend auto: {problem}, eager PyTorch runs", diff)
    log.warning("%s: %s", where, choice.reason)
    return model, choice


def load_for_inference(path: str | Path, config: SegInference | None = None
                       ) -> tuple[nn.Module, UNetArgs, dict, BackendChoice]:
    """`load_segmenter`, `choose_backend`, then the test-time rotations of `config` (`segmentation.tta`):
    (module to call, args, metadata, choice).

    Raises:
        DataError, ConfigError: see `load_segmenter` and `choose_backend`.
    """
    config = config or SegInference()
    model, args, meta = load_segmenter(path)
    runner, choice = choose_backend(model, args, config, where=path)
    if config.rotations:
        from cmrprior.segmentation.tta import RotationAverage

        runner = RotationAverage(runner, config.rotations)
        log.info("%s: test-time rotations %s degrees on the heart window", path, list(config.rotations))
    return runner, args, meta, choice
