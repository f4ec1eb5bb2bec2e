"""Pre-training checkpoints: what a run folder holds and how it is written and read back.

  last.pt        {"config", "data" (fingerprint of the images trained and validated on), "model_args", "model" (backbone + head), "encoder", "optimizer", "state"
                 (epoch, step, step_in_epoch, loss_sum, history, best_val_loss, bad_epochs, stopped_early,
                 images_seen), "rng" {"torch"}}: everything a resumed run needs.
  best.pt        {"model_args", "encoder", "config", "epoch", "val_loss"}: the encoder to use downstream.
  metrics.jsonl  one JSON line per finished epoch (the history, rewritten whole; `cmrprior.utils.tracking`).

Every file is written atomically (`cmrprior.utils.atomic`), so a killed run leaves the previous version.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cmrprior.errors import ConfigError, DataError
from cmrprior.models.registry import create_backbone
from cmrprior.ssl.config import PretrainConfig
from cmrprior.utils import atomic

log = logging.getLogger(__name__)

NT_XENT = {"name": "nt_xent"}  # the objective record of SimCLR runs (and of checkpoints that record none)


def _read(path: Path, what: str) -> Any:
    """`torch.load` of `path` on CPU (tensors and plain containers only); DataError naming `what` on failure."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (pickle, zip, OSError, RuntimeError)
        raise DataError(path, f"cannot read {what} ({exc.__class__.__name__}: {exc})") from exc


def load_encoder(checkpoint: str | Path) -> nn.Module:
    """The pre-trained backbone stored in `checkpoint` (best.pt or last.pt), on CPU, in eval mode.

    Raises DataError when the file is missing or not a cmrprior pre-training checkpoint.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.is_file():
        raise DataError(path, "pre-training checkpoint not found")
    ckpt = _read(path, "checkpoint")
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "encoder" not in ckpt:
        raise DataError(path, "not a cmrprior pre-training checkpoint (no model_args/encoder)")
    args = ckpt["model_args"]
    enc = create_backbone(args["backbone"], in_chans=args["in_chans"], **args["backbone_kwargs"])
    enc.load_state_dict(ckpt["encoder"])
    return enc.eval()


def new_state() -> dict[str, Any]:
    """The loop state of a run that has not made a step yet (stored under "state" in last.pt)."""
    return {"epoch": 0, "step": 0, "step_in_epoch": 0, "loss_sum": 0.0, "history": [], "best_val_loss": None,
            "bad_epochs": 0, "stopped_early": False, "images_seen": 0}


def data_fingerprint(train: torch.Tensor, val: torch.Tensor | None) -> str:
    """sha256 (32 hex digits) of the training and held-out images as the loop sees them (shapes and float32
    values): a resume must continue on the same images, whatever cohort, split or preparation made them."""
    h = hashlib.sha256()
    for name, t in (("train", train), ("val", val)):
        if t is not None:
            arr = t.detach().to("cpu", torch.float32).contiguous().numpy()
            h.update(f"{name}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()[:32]


def check_and_load(ckpt: dict[str, Any], path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, data: str,
                   objective: dict[str, Any] = NT_XENT) -> None:
    """Load the model and optimizer of the last.pt `ckpt` (read from `path`; its config already checked by
    `cmrprior.utils.training.TrainingRun.resume`) in place. `data`: the `data_fingerprint` of this call;
    `objective`: the record of this call's loss (`NT_XENT` for SimCLR).

    Raises ConfigError (the run was made with another objective or on other images).
    """
    if ckpt.get("objective", NT_XENT) != objective:
        raise ConfigError(f"{path}: the run folder holds a run with another objective "
                          f"({ckpt.get('objective', NT_XENT)}, now {objective}); use a new --out folder")
    saved = ckpt.get("data")
    if saved is None:  # a checkpoint from before the fingerprint was recorded: nothing to compare
        log.warning("%s: no record of the images it was trained on; resuming on the images given", path)
    elif saved != data:
        raise ConfigError(f"{path}: the run folder holds a run pre-trained on other images (another cohort, "
                          "split, kind of images or preparation); use a new --out folder, or the same data to resume")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])


def last_payload(*, data: str, model_args: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                 objective: dict[str, Any] = NT_XENT) -> dict[str, Any]:
    """What last.pt holds besides the config, the loop state and the RNG (`TrainingRun.save` adds those): the full
    state of `model` (a SimCLRModel, unwrapped) and optimizer, and the `data_fingerprint` of its images."""
    return {"objective": dict(objective), "data": data, "model_args": model_args, "model": model.state_dict(),
            "encoder": model.encoder.state_dict(), "optimizer": optimizer.state_dict()}


def save_best(path: Path, *, config: PretrainConfig, model_args: dict[str, Any], encoder: nn.Module, epoch: int,
              val_loss: float | None) -> None:
    """Write best.pt: the encoder of `epoch` (with its held-out loss, None without held-out images)."""
    atomic.save_torch(path, {"model_args": model_args, "encoder": encoder.state_dict(), "config": config.to_dict(),
                             "epoch": epoch, "val_loss": val_loss})
