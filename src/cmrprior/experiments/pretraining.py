"""One SimCLR pre-training piece of the study: one split, one image kind, one backbone, one batch size.

Only the split's training patients are used: `train_ids` (inner training part) for the contrastive loss,
`val_ids` (inner validation part, still training patients) for early stopping. Both ED and ES slices are
pre-training images. `done.json` (atomic, written last) records the checkpoint and the patient ids seen;
a rerun returns it without training again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.experiments.cell import assert_disjoint
from cmrprior.experiments.config import PretrainSettings
from cmrprior.utils import atomic

log = logging.getLogger(__name__)


def pretrain_images(data: SliceSet, ids: tuple[str, ...]) -> np.ndarray:
    """ED and ES slices of the patients `ids`, stacked: float32 `(2 N, S, S)`."""
    sub = data.subset_patients(list(ids))
    return np.concatenate([sub.ed, sub.es]).astype(np.float32, copy=False)


def build_pretrain_config(backbone: str, batch_size: int, settings: PretrainSettings, seed: int, image_size: int):
    """`cmrprior.ssl.config.PretrainConfig` from the study settings (fields it does not have are dropped)."""
    from cmrprior.ssl.config import PretrainConfig

    wanted = {
        "backbone": backbone,
        "image_size": image_size,
        "progress": False,
        "batch_size": batch_size,
        "epochs": settings.epochs,
        "temperature": settings.temperature,
        "lr": settings.lr,
        "patience": settings.patience,
        "seed": seed,
        **settings.extra,
    }
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    dropped = sorted(set(wanted) - names)
    if dropped:
        log.debug("PretrainConfig has no field(s) %s; not passed", dropped)
    return PretrainConfig(**{k: v for k, v in wanted.items() if k in names})


def _checkpoint_of(result, run_dir: Path) -> str:
    for attr in ("encoder_path", "best_checkpoint", "checkpoint", "checkpoint_path", "path"):
        value = getattr(result, attr, None)
        if value:
            return str(value)
    raise RuntimeError(f"{run_dir}: pre-training returned no checkpoint path ({result!r})")


def pretrain_piece(
    folder: Path,
    data: SliceSet,
    *,
    train_ids: tuple[str, ...],
    val_ids: tuple[str, ...],
    test_ids: tuple[str, ...],
    backbone: str,
    batch_size: int,
    settings: PretrainSettings,
    seed: int,
    image_kind: str,
) -> dict:
    """Pre-train (or resume, or reuse) and return the `done.json` record."""
    done_path = folder / "done.json"
    if done_path.exists():
        return json.loads(done_path.read_text())
    assert_disjoint("pretrain", tuple(train_ids) + tuple(val_ids), test_ids)
    from cmrprior.ssl.pretrain import pretrain

    t0 = time.time()
    train = pretrain_images(data, train_ids)
    val = pretrain_images(data, val_ids) if val_ids else None
    cfg = build_pretrain_config(backbone, batch_size, settings, seed, image_size=int(train.shape[-1]))
    log.info("pretrain %s: %s images, %d train / %d val images", folder, image_kind, len(train), 0 if val is None else len(val))
    result = pretrain(train, cfg, folder / "run", val_images=val)
    ckpt = _checkpoint_of(result, folder / "run")
    record = {
        "checkpoint": ckpt,
        "backbone": backbone,
        "batch_size": batch_size,
        "images": image_kind,
        "patient_ids": sorted(train_ids),
        "val_patient_ids": sorted(val_ids),
        "n_train_images": int(len(train)),
        "n_val_images": 0 if val is None else int(len(val)),
        "seed": seed,
        "wall_s": time.time() - t0,
        "result": {k: v for k, v in getattr(result, "__dict__", {}).items() if isinstance(v, (int, float, str, type(None)))},
    }
    atomic.write_json(done_path, record)
    return record
