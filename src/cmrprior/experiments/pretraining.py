"""One pre-training piece of the study: one split, one kind of images, one backbone, one registered pretext
(`cmrprior.vocab.pretexts`) and, for a pretext with a batch-size grid, one batch size.

The study calls each pretext's training step with a `PretrainJob`; the built-in steps are `simclr_step`,
`teacher_step` (the Seg-teacher, `cmrprior.ssl.teacher`) and `vicreg_step` (`cmrprior.ssl.vicreg`).

Only the split's training patients are used: `train_ids` (inner training part) for the contrastive loss,
`val_ids` (inner validation part, still training patients) for early stopping. Both ED and ES slices are
pre-training images. `done.json` (atomic, written last; `cmrprior.runs.PretrainRecord`) records the
checkpoint and the patient ids seen; a rerun returns it without training again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.data.splits import assert_disjoint
from cmrprior.errors import ConfigError
from cmrprior.runs import PretrainRecord, RunFolder
from cmrprior.ssl.config import PretrainConfig
from cmrprior.ssl.pretrain import pretrain
from cmrprior.ssl.teacher import TeacherConfig, pretrain_teacher
from cmrprior.ssl.vicreg import VICRegConfig
from cmrprior.utils.seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainJob:
    """One pre-training run of the study, as a pretext's training step receives it.

    `folder`: the run's folder (`RunFolder.pretrain_dir`); `data`: the slices of the kind of images `images`
    of every patient (a step uses `train_ids` to learn and `val_ids` to stop early; `test_ids` must never be
    seen); `batch_size`: one size of the pretext's grid, None for a pretext without one; `split_seed`: the
    split's seed (a step derives its own seeds from it); `settings`: the pretext's config section; `study`: the
    whole study config (SimCLR's settings, which VICReg shares).
    """

    run: RunFolder
    folder: Path
    data: SliceSet
    images: str
    backbone: str
    batch_size: int | None
    split_seed: int
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    settings: Any
    study: Any

    @property
    def image_size(self) -> int:
        return int(self.data.ed.shape[-1])


def simclr_step(job: PretrainJob) -> PretrainRecord:
    """SimCLR (the study's): one batch size of `pretrain.batch_sizes`."""
    cfg = job.settings.for_run(backbone=job.backbone, batch_size=job.batch_size, image_size=job.image_size,
                               seed=derive_seed(job.split_seed, "pretrain", job.images, job.backbone, job.batch_size))
    return pretrain_piece(job.run, job.folder, job.data, images=job.images, train_ids=job.train_ids,
                          val_ids=job.val_ids, test_ids=job.test_ids, config=cfg, trackers=job.study.tracking.sinks)


def vicreg_step(job: PretrainJob) -> PretrainRecord:
    """VICReg in SimCLR's loop with SimCLR's settings (`pretrain`), its own objective, batch sizes and head's
    batch norm (`vicreg`)."""
    vic: VICRegConfig = job.settings
    cfg = job.study.pretrain.for_run(backbone=job.backbone, batch_size=job.batch_size, image_size=job.image_size,
                                     seed=derive_seed(job.split_seed, "vicreg", job.images, job.backbone, job.batch_size))
    cfg = dataclasses.replace(cfg, proj_batch_norm=vic.proj_batch_norm)
    return pretrain_piece(job.run, job.folder, job.data, images=job.images, train_ids=job.train_ids,
                          val_ids=job.val_ids, test_ids=job.test_ids, config=cfg, objective=vic.objective(),
                          trackers=job.study.tracking.sinks)


def teacher_step(job: PretrainJob) -> PretrainRecord:
    """The Seg-teacher: the encoder learns to draw the study's heart masks of the images."""
    return teacher_piece(job.run, job.folder, job.data, images=job.images, backbone=job.backbone,
                         seed=derive_seed(job.split_seed, "teacher", job.images, job.backbone), train_ids=job.train_ids,
                         val_ids=job.val_ids, test_ids=job.test_ids, config=job.settings,
                         trackers=job.study.tracking.sinks)


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
    objective: Any = None,
    trackers: tuple[str, ...] = (),
) -> PretrainRecord:
    """Pre-train (or resume, or reuse) with `config` (and `objective`, `cmrprior.ssl.pretrain.pretrain`) and
    return the run's record."""
    done = run.read_pretrain(folder)
    if done is not None:
        return done
    assert_disjoint("pretrain", tuple(train_ids) + tuple(val_ids), test_ids)
    t0 = time.time()
    train = pretrain_images(data, train_ids)
    val = pretrain_images(data, val_ids) if val_ids else None
    log.info("pretrain %s: %s images, %d train / %d val images", folder, images, len(train), 0 if val is None else len(val))
    extra = {k: v for k, v in (("objective", objective), ("trackers", trackers)) if v}  # only what is asked for
    result = pretrain(train, config, folder / "run", val_images=val, **extra)
    record = PretrainRecord(
        checkpoint=str(result.checkpoint), backbone=config.backbone, batch_size=config.batch_size, images=images,
        patient_ids=sorted(train_ids), val_patient_ids=sorted(val_ids), n_train_images=int(len(train)),
        n_val_images=0 if val is None else int(len(val)), seed=config.seed, wall_s=time.time() - t0,
        best_val_loss=result.best_val_loss, epochs_run=len(result.history), precision=result.precision,
        channels_last=result.channels_last,
    )
    run.write_pretrain(folder, record, {"stopped_early": result.stopped_early, "finished": result.finished})
    return record


def teacher_inputs(data: SliceSet, ids: tuple[str, ...], images: str) -> tuple[np.ndarray, np.ndarray]:
    """The images of `pretrain_images(data, ids)` (ED then ES, float32 `(2 N, S, S)`) and their masks in the
    same order (uint8 `(2 N, S, S)`), from one subset of `data`.

    Raises ConfigError when `data` has no masks on its pixels (`cmrprior.classify.inputs.mask_stacks`).
    """
    sub = data.subset_patients(list(ids))
    if sub.ed_mask is None or sub.es_mask is None:
        raise ConfigError(f"the Seg-teacher init needs the heart masks of the {images} images on their pixels; "
                          f"this cohort's have none there (a `crop` segmented mode, or a cohort without masks)")
    return (np.concatenate([sub.ed, sub.es]).astype(np.float32, copy=False),
            np.concatenate([sub.ed_mask, sub.es_mask]))


def teacher_piece(
    run: RunFolder,
    folder: Path,
    data: SliceSet,
    *,
    images: str,
    backbone: str,
    seed: int,
    train_ids: tuple[str, ...],
    val_ids: tuple[str, ...],
    test_ids: tuple[str, ...],
    config: TeacherConfig,
    trackers: tuple[str, ...] = (),
) -> PretrainRecord:
    """Train (or resume, or reuse) the Seg-teacher encoder of one split on its training patients' images and
    masks; `done.json` as for SimCLR (`batch_size` is the teacher's)."""
    done = run.read_pretrain(folder)
    if done is not None:
        return done
    assert_disjoint("pretrain", tuple(train_ids) + tuple(val_ids), test_ids)
    t0 = time.time()
    train = teacher_inputs(data, train_ids, images)
    val = teacher_inputs(data, val_ids, images) if val_ids else None
    log.info("teacher %s: %s images, %d train / %d val images", folder, images, len(train[0]),
             0 if val is None else len(val[0]))
    result = pretrain_teacher(*train, config, folder / "run", backbone=backbone, seed=seed, val=val,
                              **({"trackers": trackers} if trackers else {}))
    record = PretrainRecord(
        checkpoint=str(result.checkpoint), backbone=backbone, batch_size=config.batch_size, images=images,
        patient_ids=sorted(train_ids), val_patient_ids=sorted(val_ids), n_train_images=int(len(train[0])),
        n_val_images=0 if val is None else int(len(val[0])), seed=seed, wall_s=time.time() - t0,
        best_val_loss=result.best_val_loss, epochs_run=len(result.history), precision=result.precision,
        channels_last=result.channels_last,
    )
    run.write_pretrain(folder, record, {"stopped_early": result.stopped_early, "finished": True})
    return record
