"""Input attributions that do not depend on a layer choice: integrated gradients and occlusion.

Integrated gradients (Sundararajan et al., ICML 2017): for input x, baseline x' and target logit f,
IG_i(x) = (x_i - x'_i) * integral_0^1 d f(x' + a (x - x')) / d x_i da, computed here with
Gauss-Legendre quadrature over `steps` points (as captum does by default). Completeness:
sum_i IG_i = f(x) - f(x') up to the quadrature error; `IntegratedGradients.delta` reports that gap.
Both inputs (ED and ES) are interpolated together, so the attributions of the two branches add up.

Occlusion (Zeiler & Fergus, 2014): the drop of the target logit when a square window of one branch's
image is replaced by a constant, averaged over all windows that cover a pixel.

The model is called as `model(ed, es) -> logits (B, K)` with `ed`, `es` float (B, 1, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cmrprior.errors import ConfigError
from cmrprior.saliency.gradcam import _targets


@dataclass(frozen=True)
class IntegratedGradients:
    """Attributions `ed`, `es` float32 (B, 1, H, W) (signed); `target` int64 (B,);
    `delta` float32 (B,) = sum(attributions) - (f(x) - f(baseline)) for the target logit."""

    ed: torch.Tensor
    es: torch.Tensor
    target: torch.Tensor
    delta: torch.Tensor


def integrated_gradients(
    model: nn.Module,
    ed: torch.Tensor,
    es: torch.Tensor,
    *,
    target_class: int | torch.Tensor | None = None,
    baseline_ed: torch.Tensor | float = 0.0,
    baseline_es: torch.Tensor | float = 0.0,
    steps: int = 32,
    chunk: int = 8,
) -> IntegratedGradients:
    """Integrated gradients of the target logit w.r.t. both inputs.

    ed, es: (B, 1, H, W). target_class: None = predicted class, int, or (B,) tensor.
    baseline_*: a constant or a tensor broadcastable to the input (default: zeros, i.e. the intensity
    mean after per-volume normalisation). steps: quadrature points (>= 1). chunk: points evaluated per
    forward pass (memory: B * chunk images). The model runs in eval mode; parameters are untouched.
    """
    if steps < 1 or chunk < 1:
        raise ConfigError(f"integrated_gradients: steps and chunk must be >= 1, got {steps}, {chunk}")
    if ed.shape != es.shape or ed.ndim != 4:
        raise ConfigError(f"integrated_gradients: ed and es must both be (B, 1, H, W), got {tuple(ed.shape)}, {tuple(es.shape)}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor((nodes + 1.0) / 2.0, dtype=torch.float32)
    wts = torch.tensor(weights / 2.0, dtype=torch.float32)
    x_ed, x_es = ed.detach().float(), es.detach().float()
    b_ed = torch.broadcast_to(torch.as_tensor(baseline_ed, dtype=torch.float32), x_ed.shape)
    b_es = torch.broadcast_to(torch.as_tensor(baseline_es, dtype=torch.float32), x_es.shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits_x = model(x_ed, x_es)
            logits_b = model(b_ed, b_es)
        target = _targets(target_class, logits_x)
        n = x_ed.shape[0]
        grad_ed = torch.zeros_like(x_ed)
        grad_es = torch.zeros_like(x_es)
        for start in range(0, steps, chunk):
            a = alphas[start : start + chunk]
            w = wts[start : start + chunk]
            m = a.numel()
            a5 = a.view(m, 1, 1, 1, 1)
            p_ed = (b_ed.unsqueeze(0) + a5 * (x_ed - b_ed).unsqueeze(0)).reshape(m * n, *x_ed.shape[1:])
            p_es = (b_es.unsqueeze(0) + a5 * (x_es - b_es).unsqueeze(0)).reshape(m * n, *x_es.shape[1:])
            p_ed.requires_grad_(True)
            p_es.requires_grad_(True)
            with torch.enable_grad():
                out = model(p_ed, p_es)
                score = out.gather(1, target.repeat(m)[:, None]).sum()
                g_ed, g_es = torch.autograd.grad(score, [p_ed, p_es])
            grad_ed += (g_ed.view(m, *x_ed.shape) * w.view(m, 1, 1, 1, 1)).sum(0)
            grad_es += (g_es.view(m, *x_es.shape) * w.view(m, 1, 1, 1, 1)).sum(0)
    finally:
        model.train(was_training)
    attr_ed = (x_ed - b_ed) * grad_ed
    attr_es = (x_es - b_es) * grad_es
    gap = logits_x.gather(1, target[:, None])[:, 0] - logits_b.gather(1, target[:, None])[:, 0]
    delta = attr_ed.flatten(1).sum(1) + attr_es.flatten(1).sum(1) - gap
    return IntegratedGradients(ed=attr_ed, es=attr_es, target=target, delta=delta.float())


def occlusion(
    model: nn.Module,
    ed: torch.Tensor,
    es: torch.Tensor,
    *,
    target_class: int | torch.Tensor | None = None,
    window: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    batch_windows: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Occlusion maps of both branches: returns (ed_map, es_map, target), maps float32 (B, H, W).

    map[b, i, j] = mean over windows covering (i, j) of f(x)[t] - f(x with that window of this branch
    set to `fill`)[t]; positive where hiding the pixel lowers the target logit. Pixels covered by no
    window (when stride > window) are 0. Costs 2 * ceil((H-window)/stride + 1)^2 forward passes per batch.
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"occlusion: window and stride must be >= 1, got {window}, {stride}")
    x = {"ed": ed.detach().float(), "es": es.detach().float()}
    b, _, h, w = x["ed"].shape
    if window > min(h, w):
        raise ConfigError(f"occlusion: window {window} larger than the image {h}x{w}")
    ys = _starts(h, window, stride)
    xs = _starts(w, window, stride)
    boxes = [(y0, x0) for y0 in ys for x0 in xs]
    was_training = model.training
    model.eval()
    maps = {}
    try:
        with torch.no_grad():
            ref = model(x["ed"], x["es"])
            target = _targets(target_class, ref)
            ref_t = ref.gather(1, target[:, None])[:, 0]
            for branch in ("ed", "es"):
                acc = torch.zeros(b, h, w)
                cnt = torch.zeros(h, w)
                for s in range(0, len(boxes), batch_windows):
                    group = boxes[s : s + batch_windows]
                    m = len(group)
                    occ = x[branch].unsqueeze(0).repeat(m, 1, 1, 1, 1)  # (m, B, 1, H, W)
                    for k, (y0, x0) in enumerate(group):
                        occ[k, :, :, y0 : y0 + window, x0 : x0 + window] = fill
                    other = x["es" if branch == "ed" else "ed"].unsqueeze(0).expand(m, -1, -1, -1, -1)
                    args = (occ, other) if branch == "ed" else (other, occ)
                    out = model(args[0].reshape(m * b, 1, h, w), args[1].reshape(m * b, 1, h, w))
                    drop = ref_t.repeat(m) - out.gather(1, target.repeat(m)[:, None])[:, 0]
                    drop = drop.view(m, b)
                    for k, (y0, x0) in enumerate(group):
                        acc[:, y0 : y0 + window, x0 : x0 + window] += drop[k].view(b, 1, 1)
                        cnt[y0 : y0 + window, x0 : x0 + window] += 1
                maps[branch] = torch.where(cnt > 0, acc / cnt.clamp_min(1), torch.zeros_like(acc))
    finally:
        model.train(was_training)
    return maps["ed"], maps["es"], target


def _starts(size: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:  # cover the last rows/columns too
        starts.append(size - window)
    return starts
