"""Build a small study run folder in the documented layout (cmrprior/experiments/README.md) with the study's
own writers: a prepared cohort with masks, config.yaml, splits.json, per-cell model.pt + result.json (real
predictions of small seeded models), Tables 1-3 and Figure 1. Used by tests/saliency and tests/report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

CLASSES = ("NOR", "DCM", "HCM")


def _phantom_slices(n_patients: int, n_slices: int, size: int, seed: int):
    """Images with a disk 'LV' (3), a ring 'MYO' (2) and an offset 'RV' (1); the heart moves per patient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    eds, ess, meds, mess = [], [], [], []
    for p in range(n_patients):
        cy, cx = size // 2 + rng.integers(-3, 4), size // 2 + rng.integers(-3, 4)
        for s in range(n_slices):
            for frame, r_lv in ((eds, 5 + (p % 3)), (ess, 3 + (p % 3))):
                d = np.hypot(yy - cy, xx - cx)
                rv = np.hypot(yy - cy, xx - (cx - 9)) < 4
                mask = np.zeros((size, size), np.uint8)
                mask[rv] = 1
                mask[d < r_lv + 2] = 2
                mask[d < r_lv] = 3
                img = 0.2 * rng.standard_normal((size, size)) + 0.3 * (mask > 0) + 0.7 * (mask == 3)
                frame.append(img.astype(np.float32))
                (meds if frame is eds else mess).append(mask)
    return np.stack(eds), np.stack(ess), np.stack(meds), np.stack(mess)


def build_fake_run(run: Path, *, n_patients: int = 12, n_slices: int = 2, size: int = 32, seed: int = 0,
                   inits=("none", "full_sscl"), images=("full", "segmented"), n_splits: int = 2,
                   with_tables: bool = True) -> Path:
    from cmrprior.classify.model import DiagnosisModel, save_classifier
    from cmrprior.data.prepared import PreparedCohort, PreparedPatient
    from cmrprior.evaluate.metrics import classification_metrics, patient_probabilities
    from cmrprior.experiments.cohort_data import build_slice_sets
    from cmrprior.experiments.config import StudyConfig
    from cmrprior.models.registry import create_backbone
    from cmrprior.utils import atomic

    run.mkdir(parents=True, exist_ok=True)
    ed, es, med, mes = _phantom_slices(n_patients, n_slices, size, seed)
    patients = tuple(
        PreparedPatient(patient_id=f"patient{p:03d}", label=CLASSES[p % len(CLASSES)], height_cm=None, weight_kg=None,
                        slice_thickness_mm=10.0, n_slices=n_slices, source="fake")
        for p in range(n_patients)
    )
    pidx = np.repeat(np.arange(n_patients), n_slices).astype(np.int64)
    prepared = PreparedCohort(ed=ed, es=es, ed_mask=med, es_mask=mes, patient_index=pidx,
                              slice_index=np.tile(np.arange(n_slices), n_patients).astype(np.int64),
                              slice_position=np.tile(np.linspace(0, 1, n_slices), n_patients).astype(np.float32),
                              patients=patients, classes=CLASSES, pixel_spacing_mm=1.5)
    prepared.save(run / "prepared")
    atomic.write_json(run / "prepared" / "masks.json", {"masks_source": "ground_truth", "masks_note": "", "data": "fake"})
    config = StudyConfig.from_dict({
        "name": "fake",
        "images": {"segmented_mode": "mask", "margin_mm": 3.0},
        "protocol": {"n_splits": n_splits},
        "classifier": {"backbones": ["tiny"], "inits": list(inits), "images": list(images), "input_size": size},
    })
    atomic.write_text(run / "config.yaml", config.to_yaml())
    ids = [p.patient_id for p in patients]
    splits = []
    for i in range(n_splits):
        # two test patients per class, rotating over splits (every class present on both sides)
        test = []
        for c in range(len(CLASSES)):
            members = ids[c :: len(CLASSES)]
            test += [members[(2 * i + j) % len(members)] for j in range(2)]
        splits.append({"index": i, "seed": i, "train": [p for p in ids if p not in test], "test": test})
    atomic.write_json(run / "splits.json", splits)
    sets = build_slice_sets(prepared, config)
    results = []
    for sp in splits:
        for init in inits:
            for kind in images:
                cell = run / "splits" / f"split_{sp['index']}" / "cells" / "tiny" / f"{init}__{kind}"
                torch.manual_seed(1000 * sp["index"] + 10 * len(init) + len(kind))
                model = DiagnosisModel(create_backbone("tiny"), create_backbone("tiny"), len(CLASSES)).eval()
                save_classifier(model, cell / "model.pt", backbone="tiny", classes=list(CLASSES), meta={})
                test = sets[kind].subset_patients(sp["test"])
                with torch.no_grad():
                    probs = torch.softmax(model(torch.from_numpy(test.ed), torch.from_numpy(test.es)), 1).numpy()
                pp = patient_probabilities(probs, test.patient_index, test.n_patients)
                labels = test.patient_labels
                hist = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1), "val_auc": 0.5 + 0.05 * e}
                        for e in range(4)]
                result = {"status": "ok", "backbone": "tiny", "init": init, "images": kind, "split": sp["index"],
                          "seed": sp["seed"], "classes": list(CLASSES), "masks_source": "ground_truth", "masks_note": "",
                          "image_mode": "mask", "input_size": size, "mode": "linear",
                          "hyperparameters": {"lr": 1e-3, "epochs": 4, "pretrain_batch_size": None}, "history": hist,
                          "test": {"patient_ids": list(sp["test"]), "labels": labels.tolist(), "probabilities": pp.tolist(),
                                   "metrics": classification_metrics(labels, pp, CLASSES)},
                          "checkpoint": "model.pt", "wall_s": 0.1}
                atomic.write_json(cell / "result.json", result)
                results.append(result)
    for sp in splits:  # an initialisation without weights: the tables must say why it is missing
        for kind in images:
            r = {"status": "unavailable", "reason": "no ImageNet weights offline (test)", "backbone": "tiny",
                 "init": "imagenet", "images": kind, "split": sp["index"], "seed": sp["seed"], "classes": list(CLASSES)}
            atomic.write_json(run / "splits" / f"split_{sp['index']}" / "cells" / "tiny" / f"imagenet__{kind}" / "result.json", r)
            results.append(r)
    if with_tables:
        from cmrprior.evaluate.curves import write_figure1
        from cmrprior.evaluate.tables import write_tables

        write_tables(results, run / "tables", classes=CLASSES, config=config.replace(evaluation={"n_boot": 50}))
        write_figure1(results, run / "figures" / "figure1.png")
        atomic.write_json(run / "study.json", {"data": "fake", "classes": list(CLASSES), "n_patients": n_patients,
                                               "n_slices": n_patients * n_slices, "masks_source": "ground_truth",
                                               "n_splits": n_splits, "versions": {"cmrprior": "test"}})
    return run


def load_json(path: Path):
    return json.loads(Path(path).read_text())


SALIENCY_TEST_SETTINGS = {"ig_steps": 4, "overlay_patients": 1, "n_boot": 200}
_SHARED: dict[str, Path] = {}


def shared_run_with_saliency() -> Path:
    """One fake run with saliency computed (SALIENCY_TEST_SETTINGS), built once per test process and shared by
    tests/saliency and tests/report (they only add files to it); removed at exit."""
    if "run" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        from cmrprior.saliency.run import SaliencyConfig, run_saliency

        root = Path(tempfile.mkdtemp(prefix="cmrprior-fake-run-"))
        atexit.register(shutil.rmtree, root, True)
        run = build_fake_run(root / "run")
        run_saliency(run, SaliencyConfig(**SALIENCY_TEST_SETTINGS))
        _SHARED["run"] = run
    return _SHARED["run"]
