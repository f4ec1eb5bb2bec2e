"""Test doubles for the study: a tiny synthetic prepared cohort and a recording SimCLR stand-in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmrprior.data.prepared import PreparedCohort, PreparedPatient
from cmrprior.experiments.config import StudyConfig
from cmrprior.runs import MasksOrigin


def tiny_cohort(n_patients: int = 18, slices: int = 2, size: int = 32, classes=("A", "B", "C"), seed: int = 0,
                prefix: str = "p") -> PreparedCohort:
    """Per patient `slices` slice pairs; the heart (a disk, mask labels 1-3) has a class-dependent size and
    brightness; every image has its own noise, so each slice is unique."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    yy, xx = np.mgrid[:size, :size]
    ed, es, edm, esm, pidx, sidx, pos, patients = [], [], [], [], [], [], [], []
    for p in range(n_patients):
        label = p % k
        for s in range(slices):
            r_ed = 5 + 2 * label
            r_es = r_ed - 1 - label
            for arr, marr, r in ((ed, edm, r_ed), (es, esm, r_es)):
                d = np.hypot(yy - size / 2, xx - size / 2)
                m = np.zeros((size, size), np.uint8)
                m[d < r + 2] = 2
                m[d < r] = 3
                m[(d < r + 3) & (xx < size / 2 - r)] = 1
                img = rng.random((size, size)).astype(np.float32) * 0.2 + 0.2 * (m > 0) + 0.5 * (m == 3)
                arr.append(img)
                marr.append(m)
            pidx.append(p)
            sidx.append(s)
            pos.append(s / max(slices - 1, 1))
        patients.append(PreparedPatient(f"{prefix}{p:03d}", classes[label], None, None, 8.0, slices, "synthetic"))
    return PreparedCohort(
        ed=np.stack(ed), es=np.stack(es), ed_mask=np.stack(edm), es_mask=np.stack(esm),
        patient_index=np.array(pidx, np.int64), slice_index=np.array(sidx, np.int64),
        slice_position=np.array(pos, np.float32), patients=tuple(patients), classes=tuple(classes),
        pixel_spacing_mm=1.5,
    )


def tiny_config(**over) -> StudyConfig:
    base = {
        "name": "tiny",
        "masks": {"source": "ground_truth"},
        "images": {"segmented_mode": "mask", "margin_mm": 3.0},
        "protocol": {"n_splits": 2, "test_fraction": 0.3, "seed": 0, "cv_folds": 2, "val_fraction": 0.25},
        "pretrain": {"epochs": 1, "batch_sizes": [16], "temperature": 0.1, "lr": 1e-3, "patience": 1},
        "classifier": {"backbones": ["tiny"], "inits": ["none", "imagenet", "full_sscl", "segmented_sscl"],
                       "images": ["full", "segmented"], "input_size": 32, "lrs": [1e-2],
                       "max_epochs": 3, "batch_size": 16, "feature_batch_size": 64},
        "evaluation": {"n_boot": 30, "level": 0.95},
        "anatomy": {"cs": [1.0], "n_trees": 10, "depths": [3], "perturb": [1], "permutation_repeats": 2},
    }
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return StudyConfig.from_dict(base)


@dataclass(frozen=True)
class FakePretrainResult:
    checkpoint: Path
    best_val_loss: float
    history: tuple = ()
    precision: str = "fp32"
    channels_last: bool = False
    stopped_early: bool = False
    finished: bool = True


class RecordingPretrain:
    """Stands in for SimCLR (`cmrprior.ssl.pretrain.pretrain` and `load_encoder`, where the study calls them):
    saves a seeded tiny encoder and records every image it saw."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def install(self, monkeypatch) -> None:
        import cmrprior.classify.model as model_mod
        import cmrprior.experiments.pretraining as pretraining_mod

        monkeypatch.setattr(pretraining_mod, "pretrain", self.pretrain)
        monkeypatch.setattr(model_mod, "load_encoder", self.load_encoder)

    def pretrain(self, train_images, config, out_dir, val_images=None):
        from cmrprior.models.registry import create_backbone

        self.calls.append({"train": np.array(train_images), "val": None if val_images is None else np.array(val_images),
                           "config": config, "out_dir": Path(out_dir)})
        torch.manual_seed(config.seed)
        enc = create_backbone(config.backbone)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(enc.state_dict(), out / "encoder.pt")
        return FakePretrainResult(out / "encoder.pt", 1.0)

    @staticmethod
    def load_encoder(path):
        from cmrprior.models.registry import create_backbone

        enc = create_backbone("tiny")
        enc.load_state_dict(torch.load(path, weights_only=True))
        return enc


def install_cohort(monkeypatch, cohorts: dict) -> None:
    """`prepare_data(path, ...)` returns `cohorts[str(path)]`, and `open_input(path)` its patient records and
    a fingerprint of the prepared arrays (the study's data seams)."""
    import hashlib

    import cmrprior.experiments.cohort_data as cd
    from cmrprior.io.records import Cohort, PatientRecord

    def open_input(data, hash_cache=None):
        prepared = cohorts[str(data)]
        records = tuple(PatientRecord(p.patient_id, p.label, Path("ed"), Path("es")) for p in prepared.patients)
        return Cohort(Path(str(data)), records, prepared.classes), hashlib.sha256(prepared.ed.tobytes()).hexdigest()[:16]

    def prepare_data(data, config, cache_dir, qc_dir=None, measures_to=None, workers=1):
        prepared = cohorts[str(data)]
        if measures_to is not None and config.anatomy.enabled:
            write_prepared_measures(prepared, measures_to)
        return prepared, cd.PreparedOrigin(MasksOrigin(config.masks.source))

    def shared_images(study, test):  # the real one reads image files; these cohorts have only arrays
        def prints(cohort):
            prepared = cohorts[str(cohort.source)]
            return {pid: hashlib.sha256(prepared.ed[prepared.patient_index == i].tobytes()).hexdigest()
                    for i, pid in enumerate(prepared.patient_ids)}

        owner = {fp: pid for pid, fp in prints(study).items()}
        return [(owner[fp], pid) for pid, fp in prints(test).items() if fp in owner]

    monkeypatch.setattr(cd, "prepare_data", prepare_data)
    monkeypatch.setattr(cd, "open_input", open_input)
    monkeypatch.setattr(cd, "shared_images", shared_images)


def write_prepared_measures(prepared: PreparedCohort, to: tuple[Path, Path]) -> None:
    """The anatomy measures of a prepared cohort's own masks (stacked slices, prepared pixel spacing, the
    patient's slice thickness), as the study writes them, with one perturbed set (dilation by 1 px)."""
    from cmrprior.anatomy.measure import measure_patient
    from cmrprior.anatomy.measures_csv import MeasuresRow, write_measures_csv
    from cmrprior.anatomy.perturb import perturb_masks

    plain, perturbed = [], []
    for i, p in enumerate(prepared.patients):
        sel = prepared.patient_index == i
        ed, es = prepared.ed_mask[sel], prepared.es_mask[sel]
        spacing = (p.slice_thickness_mm, prepared.pixel_spacing_mm, prepared.pixel_spacing_mm)
        plain.append(MeasuresRow(p.patient_id, p.label, measure_patient(ed, es, spacing).as_dict()))
        bigger = perturb_masks(ed, es, "dilate", 1)
        perturbed.append(MeasuresRow(p.patient_id, p.label, measure_patient(*bigger, spacing).as_dict(), "dilate", 1))
    write_measures_csv(plain, to[0])
    write_measures_csv(perturbed, to[1])
