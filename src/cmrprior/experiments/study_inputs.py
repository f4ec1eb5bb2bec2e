"""What the study's steps read, in one place for `run_study` and its pieces (`cmrprior.experiments.pieces`):
the held-out split's images, and the pre-training runs that the cells of each initialisation read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.errors import ConfigError
from cmrprior.experiments.cohort_data import CohortData, check_new_patients, load_cohort_data, merge_slice_sets
from cmrprior.experiments.config import StudyConfig
from cmrprior.runs import HOLDOUT, RunFolder, SplitSpec
from cmrprior.vocab import INITS


def pretrain_runs(run: RunFolder, split: str, backbone: str, config: StudyConfig
                  ) -> dict[str, tuple[tuple[Path, int | None], ...]]:
    """The pre-training runs that the cells of each init read, on one split and backbone: init name ->
    (folder, SimCLR batch size, or None for the Seg-teacher) per run; inits without pre-training are absent."""
    out = {}
    for init in INITS:
        if init.pretrain_images is None or init.name not in config.classifier.inits:
            continue
        if init.pretext == "masks":
            out[init.name] = ((run.teacher_dir(split, init.pretrain_images, backbone), None),)
        else:
            out[init.name] = tuple((run.pretrain_dir(split, init.pretrain_images, backbone, bs), bs)
                                   for bs in config.pretrain.batch_sizes)
    return out


def holdout_inputs(run: RunFolder, test_data: str | Path, config: StudyConfig, data: CohortData
                   ) -> tuple[dict[str, SliceSet], SplitSpec, CohortData]:
    """The held-out split: both cohorts' images (the --test cohort's labels in the study's class order), the
    split (train: the whole study cohort; test: the --test cohort) and the prepared --test cohort, whose
    patients are checked to be new by image fingerprint (`check_new_patients`; DataError otherwise)."""
    hold = load_cohort_data(test_data, config, prepared_dir=run.prepared(HOLDOUT), cache_dir=run.cache,
                            measures_at=run.anatomy_measures_csvs(HOLDOUT))
    check_new_patients(data, hold, test_data)
    classes = data.prepared.classes
    missing = sorted(set(hold.prepared.classes) - set(classes))
    lut = {c: i for i, c in enumerate(classes)}
    if missing:
        raise ConfigError(f"{test_data}: classes {missing} are not in the study cohort's classes {list(classes)}")
    images = {}
    for kind, s in hold.images.items():
        remapped = np.array([lut[hold.prepared.classes[k]] for k in s.labels], dtype=np.int64)
        images[kind] = merge_slice_sets(data.images[kind], s.with_labels(remapped))
    split = SplitSpec(HOLDOUT, config.protocol.seed, tuple(data.patient_ids), tuple(hold.patient_ids))
    return images, split, hold
