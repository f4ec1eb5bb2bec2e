"""Inference: labels for prepared slices, and the default (shipped) segmenter.

`predict_slices` runs a U-Net on `(N, H, W)` slices, each with its neighbours when the network takes
several (`segmentation.context`), with per-input intensity normalisation, padding to the network's
divisor and argmax. `segment_prepared` replaces a prepared cohort's masks by predictions
(post-processed per patient and phase in 3D: largest component per structure, holes filled).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import WeightsUnavailableError
from cmrprior.segmentation.augment import normalise_slices
from cmrprior.segmentation.context import context_index, gather, volume_context
from cmrprior.utils.progress import Progress

log = logging.getLogger(__name__)

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "weights" / "segmenter_unet.safetensors"


def file_sha256(path: str | Path) -> str:
    """sha256 hex of a file's bytes (identifies segmenter weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_path() -> Path:
    """The segmenter shipped with the package.

    Raises:
        WeightsUnavailableError: the package was installed without it.
    """
    if not SHIPPED_MODEL.exists():
        raise WeightsUnavailableError(f"{SHIPPED_MODEL}: shipped segmenter not found; pass a model path")
    return SHIPPED_MODEL


def input_slices(model: nn.Module) -> int:
    """How many adjacent slices the network takes per input: its first convolution's input channels, or
    what a wrapped runtime (ONNX) declares as `input_slices`."""
    declared = getattr(model, "input_slices", None)
    if declared is not None:
        return int(declared)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return 1 if first is None else int(first.in_channels)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module, images: np.ndarray, *, divisor: int = 16, batch_size: int = 32, bf16: bool = False,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """Softmax probabilities float32 `(M, C, H, W)` for float `(N, H, W)` slices (any H, W; padded inside).

    `context` `(M, k)` (`segmentation.context.context_index`) says which slices form each input of a
    network that takes k adjacent slices, and which M slices are predicted; None = `images` is one
    stack of consecutive slices and every slice is predicted.
    """
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    model.eval()
    k = input_slices(model)
    if context is None:
        context = volume_context(len(images), k)
    if context.ndim != 2 or context.shape[1] != k:
        raise ValueError(f"context must be (M, {k}) for this network, got shape {context.shape}")
    n, h, w = len(context), images.shape[1], images.shape[2]
    ph, pw = (-h) % divisor, (-w) % divisor
    outs = []
    for i in range(0, n, batch_size):
        x = normalise_slices(torch.from_numpy(gather(images, context[i : i + batch_size])))
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        prob = torch.softmax(logits.float(), dim=1)[:, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        outs.append(prob.numpy())
    if not outs:
        return np.zeros((0, 4, h, w), np.float32)
    return np.concatenate(outs).astype(np.float32)


def predict_slices(
    model: nn.Module, images: np.ndarray, *, divisor: int = 16, batch_size: int = 32, bf16: bool = False,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 labels `(M, H, W)` (argmax, no post-processing) for float `(N, H, W)` slices (`context`: as in
    `predict_probabilities`)."""
    prob = predict_probabilities(model, images, divisor=divisor, batch_size=batch_size, bf16=bf16, context=context)
    return prob.argmax(axis=1).astype(np.uint8)


def prepared_context(prepared: PreparedCohort, k: int) -> np.ndarray:
    """`context_index` of a prepared cohort's slices (the same for the ED and the ES arrays)."""
    return context_index(prepared.patient_index, prepared.slice_index, k)


def segment_prepared(
    prepared: PreparedCohort,
    model_path: str | Path | None = None,
    *,
    postprocess: bool = True,
    batch_size: int = 32,
) -> PreparedCohort:
    """A copy of `prepared` whose `ed_mask`/`es_mask` are the segmenter's predictions.

    Args:
        prepared: a prepared cohort (masks, if any, are ignored and replaced).
        model_path: a `.safetensors` written by `save_segmenter`; None = the shipped segmenter.
        postprocess: per patient and phase, keep the largest 3D component per structure and fill holes.

    Raises:
        WeightsUnavailableError: no model path and no shipped model. DataError: unreadable model.
    """
    from cmrprior.segmentation.network import load_segmenter
    from cmrprior.segmentation.postprocess import postprocess_labels

    model, args, _ = load_segmenter(model_path if model_path is not None else default_model_path())
    masks = {}
    context = prepared_context(prepared, args.in_channels)
    progress = Progress("segment", 2 * len(prepared.ed), log, unit="frames", lines=10, bar=True)
    for phase in ("ed", "es"):
        images = getattr(prepared, phase)
        chunks = []  # inputs are predicted independently: chunks only pace the progress lines
        for i in range(0, len(images), 8 * batch_size):
            chunks.append(predict_slices(model, images, divisor=args.divisor, batch_size=batch_size,
                                         context=context[i : i + 8 * batch_size]))
            progress.done(n=len(chunks[-1]))
        pred = np.concatenate(chunks) if chunks else np.zeros(images.shape, np.uint8)
        if postprocess:
            for p in range(len(prepared.patients)):
                idx = np.flatnonzero(prepared.patient_index == p)
                if idx.size:
                    order = idx[np.argsort(prepared.slice_index[idx], kind="stable")]
                    pred[order] = postprocess_labels(pred[order])
        masks[phase] = pred
    return dataclasses.replace(prepared, ed_mask=masks["ed"], es_mask=masks["es"])
