"""What the study's steps read, in one place for `run_study` and its pieces (`cmrprior.experiments.pieces`):
the checks of both cohorts before the first long step, the held-out split's images, and the pre-training runs
that the cells of each initialisation read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.data.splits import inner_split, protocol_splits
from cmrprior.errors import ConfigError, DataError
from cmrprior.experiments import cohort_data
from cmrprior.experiments.cohort_data import CohortData, check_new_patients, load_cohort_data, merge_slice_sets
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.progress import batch_grid
from cmrprior.runs import HOLDOUT, RunFolder, SplitSpec
from cmrprior.vocab import pretexts
from cmrprior.vocab.pretexts import Init, Pretext


@dataclass(frozen=True)
class PretrainRun:
    """One pre-training run of the grid: its folder, the registered pretext, the init whose encoder it
    pre-trains, and its batch size (None: a pretext without a batch-size grid)."""

    folder: Path
    pretext: Pretext
    init: Init
    batch_size: int | None


def pretrain_runs(run: RunFolder, split: str, backbone: str, config: StudyConfig) -> dict[str, tuple[PretrainRun, ...]]:
    """The pre-training runs that the cells of each init read, on one split and backbone, for every init of the
    grid that a registered pretext pre-trains (`cmrprior.vocab.pretexts`), in the registry's order: init name
    -> one run per batch size of the pretext's grid (or its one run); inits without pre-training are absent."""
    out = {}
    for pretext in pretexts():
        for init in pretext.inits:
            if init.name in config.classifier.inits:
                out[init.name] = tuple(
                    PretrainRun(run.pretrain_dir(split, init.pretrain_images, backbone, pretext.name, bs), pretext, init, bs)
                    for bs in batch_grid(pretext, config))
    return out


def holdout_inputs(run: RunFolder, test_data: str | Path, config: StudyConfig, data: CohortData, *,
                   workers: int = 1) -> tuple[dict[str, SliceSet], SplitSpec, CohortData]:
    """The held-out split: both cohorts' images (the --test cohort's labels in the study's class order), the
    split (train: the whole study cohort; test: the --test cohort) and the prepared --test cohort, whose
    patients are checked to be new by image fingerprint (`check_new_patients`; DataError otherwise). `workers`:
    processes that prepare the --test cohort when it is not prepared yet."""
    hold = load_cohort_data(test_data, config, prepared_dir=run.prepared(HOLDOUT), cache_dir=run.cache,
                            measures_at=run.anatomy_measures_csvs(HOLDOUT), workers=workers)
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


def check_inputs(run: RunFolder, data: str | Path, test_data: str | Path | None, config: StudyConfig) -> None:
    """Everything about the inputs that can be checked before the first long step: both cohorts open, labels
    are known, the cohort can be split as the protocol asks, the --test cohort's classes fit and its patients
    are new (ids, and images compared by content), and the run folder was made from these same inputs (or is
    new)."""
    cohort, fingerprint = cohort_data.open_input(data, hash_cache=run.input_hashes)
    labels = [p.label for p in cohort.patients]
    if any(lab is None for lab in labels):
        missing = [p.patient_id for p in cohort.patients if p.label is None][:5]
        raise DataError(Path(data), f"patients without a label: {missing}")
    ids = [q.patient_id for q in cohort.patients]
    label_of = dict(zip(ids, labels))
    for split in protocol_splits(ids, labels, config.protocol):  # can it split, and each training part again?
        try:
            inner_split(split.train, [label_of[p] for p in split.train], val_fraction=config.protocol.val_fraction,
                        split_seed=split.seed)
        except ConfigError as exc:
            raise ConfigError(f"{data}: the training part of a split cannot give the inner validation part "
                              f"(protocol.val_fraction={config.protocol.val_fraction}): {exc}") from exc
    if test_data is not None:
        hold, test_fingerprint = cohort_data.open_input(test_data, hash_cache=run.input_hashes)
        extra = sorted({p.label for p in hold.patients if p.label is not None} - set(cohort.classes))
        if extra:
            raise ConfigError(f"{test_data}: classes {extra} are not in the study cohort's classes {list(cohort.classes)}")
        shared = sorted({p.patient_id for p in hold.patients} & {p.patient_id for p in cohort.patients})
        if shared:
            raise DataError(Path(test_data), f"patient ids also in the study cohort {data}: {shared[:5]}")
        same = cohort_data.shared_images(cohort, hold)
        if same:
            pairs = ", ".join(f"{t} = study patient {s}" for s, t in same[:5])
            raise DataError(Path(test_data), f"{len(same)} patient(s) of the test cohort have images of the study "
                                             f"cohort {data} under another id ({pairs}): a held-out patient must be a new patient")
    run.bind_inputs({"data": (str(data), fingerprint),
                     "test_data": None if test_data is None else (str(test_data), test_fingerprint)})
