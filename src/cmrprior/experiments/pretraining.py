"""One SimCLR pre-training piece of the study: one split, one kind of images, one backbone, one batch size.

Only the split's training patients are used: `train_ids` (inner training part) for the contrastive loss,
`val_ids` (inner validation part, still training patients) for early stopping. Both ED and ES slices are
pre-training images. `done.json` (atomic, written last; `cmrprior.runs.PretrainRecord`) records the
checkpoint and the patient ids seen; a rerun returns it without training again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.data.splits import assert_disjoint
from cmrprior.runs import PretrainRecord, RunFolder
from cmrprior.ssl.config import PretrainConfig
from cmrprior.ssl.pretrain import pretrain

log = logging.getLogger(__name__)


def pretrain_images(data: SliceSet, ids: tuple[str, ...]) -> np.ndarray:
    """ED and ES slices of the patients `ids`, stacked: float32 `(2 N, S, S)`."""
    sub = data.subset_patients(list(ids))
    return np.concatenate([sub.ed, sub.es]).astype(np.float32, copy=False)


def pretrain_piece(
    run: RunFolder,
    folder: Path,
    data: SliceSet,
    *,
    images: str,
    train_ids: tuple[str, ...],
    val_ids: tuple[str, ...],
    test_ids: tuple[str, ...],
    config: PretrainConfig,
) -> PretrainRecord:
    """Pre-train (or resume, or reuse) with `config` and return the run's record."""
    done = run.read_pretrain(folder)
    if done is not None:
        return done
    assert_disjoint("pretrain", tuple(train_ids) + tuple(val_ids), test_ids)
    t0 = time.time()
    train = pretrain_images(data, train_ids)
    val = pretrain_images(data, val_ids) if val_ids else None
    log.info("pretrain %s: %s images, %d train / %d val images", folder, images, len(train), 0 if val is None else len(val))
    result = pretrain(train, config, folder / "run", val_images=val)
    record = PretrainRecord(
        checkpoint=str(result.checkpoint), backbone=config.backbone, batch_size=config.batch_size, images=images,
        patient_ids=sorted(train_ids), val_patient_ids=sorted(val_ids), n_train_images=int(len(train)),
        n_val_images=0 if val is None else int(len(val)), seed=config.seed, wall_s=time.time() - t0,
        best_val_loss=result.best_val_loss, epochs_run=len(result.history),
    )
    run.write_pretrain(folder, record, {"stopped_early": result.stopped_early, "finished": result.finished})
    return record
