"""Grad-CAM for the two branches (ED and ES) of the ED/ES diagnosis model.

Grad-CAM (Selvaraju et al., ICCV 2017): for a target class c and a convolutional feature map
A (B, C, h, w) the channel weights are the spatially averaged gradients
alpha_k = mean_{ij} d y_c / d A_k[i, j], and the map is ReLU(sum_k alpha_k A_k), upsampled
bilinearly to the input size. The study uses saliency maps to ask whether a model "looks at the heart".

The model is any `nn.Module` called as `model(ed, es) -> logits (B, K)` with ED images `ed` (B, 1, H, W)
and ES images `es` (B, 1, H, W); its two encoders are found as attributes (`ed_encoder`/`es_encoder`
by default, as `cmrprior.classify.model.DiagnosisModel` names them; `encoder_ed`/`encoder_es` also work).
The target layer inside each encoder is the module named by the backbone's
`gradcam_layer` attribute (a dotted sub-module name, as `nn.Module.get_submodule` takes, or a module),
searched on the encoder and then on its sub-modules; without one, the encoder's last `nn.Conv2d`.

Implemented with forward hooks and `torch.autograd.grad` (no extra dependency). The hook hands the
rest of the network a clone of the target layer's output, so in-place operations after the layer
(e.g. `ReLU(inplace=True)`) cannot overwrite the captured activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cmrprior.errors import ConfigError

ENCODER_ATTRS: tuple[str, str] = ("ed_encoder", "es_encoder")
_ALTERNATIVE_ATTRS: tuple[str, str] = ("encoder_ed", "encoder_es")


@dataclass(frozen=True)
class GradCamResult:
    """Grad-CAM maps for one batch.

    `ed`, `es`: float32 (B, H, W), non-negative, in the units of the target layer's activations times
    gradients (not normalised: normalise per image for display with `normalise_maps`).
    `target`: int64 (B,) class index each map explains. `logits`: float32 (B, K) of the forward pass.
    """

    ed: torch.Tensor
    es: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor


def resolve_gradcam_layer(encoder: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM uses for `encoder`.

    Order: `encoder.gradcam_layer` (str naming a sub-module, or a module); else the first sub-module
    (depth-first) that has a `gradcam_layer` attribute, resolved relative to that sub-module; else the
    last `nn.Conv2d` of `encoder`. Raises ConfigError when none exists or the name does not resolve.
    """
    for owner in encoder.modules():
        spec = getattr(owner, "gradcam_layer", None)
        if spec is None:
            continue
        if isinstance(spec, nn.Module):
            return spec
        if isinstance(spec, str):
            try:
                return owner.get_submodule(spec) if spec else owner
            except AttributeError as exc:
                raise ConfigError(
                    f"{type(owner).__name__}.gradcam_layer={spec!r} names no sub-module ({exc})"
                ) from exc
        raise ConfigError(f"{type(owner).__name__}.gradcam_layer must be a str or module, got {type(spec).__name__}")
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{type(encoder).__name__}: no gradcam_layer attribute and no Conv2d to use for Grad-CAM")
    return convs[-1]


def model_encoders(model: nn.Module, encoder_attrs: tuple[str, str] = ENCODER_ATTRS) -> tuple[nn.Module, nn.Module]:
    """The (ED, ES) encoders of an ED/ES model, found by attribute name; raises ConfigError if absent.

    With the default names, `encoder_ed`/`encoder_es` are tried when `ed_encoder`/`es_encoder` are absent.
    """
    if encoder_attrs == ENCODER_ATTRS and not hasattr(model, ENCODER_ATTRS[0]) and hasattr(model, _ALTERNATIVE_ATTRS[0]):
        encoder_attrs = _ALTERNATIVE_ATTRS
    found = []
    for name in encoder_attrs:
        enc = getattr(model, name, None)
        if not isinstance(enc, nn.Module):
            raise ConfigError(f"{type(model).__name__} has no encoder attribute {name!r} (needed for Grad-CAM)")
        found.append(enc)
    return found[0], found[1]


class _Capture:
    """Forward hook storing each output of a layer and passing a clone on (see module docstring)."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise ConfigError(f"Grad-CAM target layer {type(module).__name__} must return a tensor")
        if output.ndim != 4:
            raise ConfigError(
                f"Grad-CAM target layer {type(module).__name__} returns shape {tuple(output.shape)}, need (B, C, h, w)"
            )
        self.outputs.append(output)
        return output.clone()


def _cam(activation: torch.Tensor, grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return cam[:, 0].clamp_min(0.0)


def gradcam(
    model: nn.Module,
    ed: torch.Tensor,
    es: torch.Tensor,
    *,
    target_class: int | torch.Tensor | None = None,
    encoder_attrs: tuple[str, str] = ENCODER_ATTRS,
) -> GradCamResult:
    """Grad-CAM maps of both branches for one batch.

    ed, es: float (B, 1, H, W) ED and ES images of the same slice positions.
    target_class: None = each sample's predicted class (argmax of the logits); an int = that class for
    every sample; an int64 tensor (B,) = one class per sample.
    The model is put in eval mode for the call and restored afterwards; parameters are not changed and
    no parameter gradients are accumulated. Frozen encoders (requires_grad=False) are fine.
    Returns GradCamResult with maps (B, H, W) at the input resolution.
    Raises ConfigError for a model without the encoders, a bad target layer, or a class out of range.
    """
    if ed.ndim != 4 or es.ndim != 4 or ed.shape != es.shape:
        raise ConfigError(f"gradcam: ed and es must both be (B, 1, H, W), got {tuple(ed.shape)} and {tuple(es.shape)}")
    enc_ed, enc_es = model_encoders(model, encoder_attrs)
    layer_ed, layer_es = resolve_gradcam_layer(enc_ed), resolve_gradcam_layer(enc_es)
    was_training = model.training
    model.eval()
    cap_ed, cap_es = _Capture(), _Capture()
    shared = layer_ed is layer_es
    handles = [layer_ed.register_forward_hook(cap_ed)]
    if not shared:
        handles.append(layer_es.register_forward_hook(cap_es))
    try:
        with torch.enable_grad():
            x_ed = ed.detach().float().requires_grad_(True)
            x_es = es.detach().float().requires_grad_(True)
            logits = model(x_ed, x_es)
            if shared:  # one module serves both branches: calls come in forward order (ED first)
                if len(cap_ed.outputs) != 2:
                    raise ConfigError("gradcam: a shared encoder must be called exactly twice (ED then ES)")
                act_ed, act_es = cap_ed.outputs
            else:
                if len(cap_ed.outputs) != 1 or len(cap_es.outputs) != 1:
                    raise ConfigError(
                        f"gradcam: target layers ran {len(cap_ed.outputs)}/{len(cap_es.outputs)} times, expected once each"
                    )
                act_ed, act_es = cap_ed.outputs[0], cap_es.outputs[0]
            target = _targets(target_class, logits)
            score = logits.gather(1, target[:, None]).sum()
            grad_ed, grad_es = torch.autograd.grad(score, [act_ed, act_es], allow_unused=False)
        size = (int(ed.shape[-2]), int(ed.shape[-1]))
        cam_ed = _cam(act_ed.detach(), grad_ed.detach(), size)
        cam_es = _cam(act_es.detach(), grad_es.detach(), size)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return GradCamResult(ed=cam_ed.float(), es=cam_es.float(), target=target.detach(), logits=logits.detach().float())


def _targets(target_class: int | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    n, k = logits.shape
    if target_class is None:
        target = logits.detach().argmax(dim=1)
    elif isinstance(target_class, torch.Tensor):
        target = target_class.to(device=logits.device, dtype=torch.long).reshape(-1)
        if target.numel() != n:
            raise ConfigError(f"target_class has {target.numel()} entries for a batch of {n}")
    else:
        target = torch.full((n,), int(target_class), dtype=torch.long, device=logits.device)
    if n and (int(target.min()) < 0 or int(target.max()) >= k):
        raise ConfigError(f"target class out of range [0, {k}): {target.tolist()}")
    return target


def normalise_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each (H, W) map of a (B, H, W) batch to [0, 1] by its own maximum (display only).

    Negative values are clipped to 0 first; an all-zero map stays zero.
    """
    pos = maps.clamp_min(0.0)
    peak = pos.flatten(1).amax(dim=1).clamp_min(eps)
    return pos / peak[:, None, None]
