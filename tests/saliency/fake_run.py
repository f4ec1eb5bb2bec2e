"""Build a small study run folder through `cmrprior.runs.RunFolder` and the study's own writers: a prepared
cohort with masks, the mask flags, config.yaml, run.json, splits.json, per-cell model.pt + result.json (real
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
    """The fake run at `run` (a folder path), written through `cmrprior.runs.RunFolder` as the study does."""
    from cmrprior.data.prepared import PreparedCohort, PreparedPatient
    from cmrprior.experiments.config import StudyConfig
    from cmrprior.runs import LAYOUT_VERSION, MasksOrigin, RunFolder, RunInfo, SplitSpec
    from cmrprior.segmentation.qc import write_mask_flags
    from cmrprior.utils import atomic
    from cmrprior.vocab import ImageSpec

    folder = RunFolder(run)
    folder.root.mkdir(parents=True, exist_ok=True)
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
    prepared.save(folder.prepared())
    atomic.write_json(folder.prepared() / "masks.json", {"masks_source": "ground_truth", "masks_note": "", "data": "fake"})
    write_mask_flags(prepared, folder.mask_flags_csv)
    config = StudyConfig.from_dict({
        "name": "fake",
        "images": {"segmented_mode": "mask", "margin_mm": 3.0},
        "protocol": {"n_splits": n_splits},
        "classifier": {"backbones": ["tiny"], "inits": list(inits), "images": list(images), "input_size": size},
    })
    atomic.write_text(folder.config_yaml, config.to_yaml())
    specs = tuple(ImageSpec.of(i, segmented_mode="mask", margin_mm=3.0) for i in images)
    folder.write_info(RunInfo(layout_version=LAYOUT_VERSION, classes=CLASSES, masks=MasksOrigin("ground_truth"),
                              image_specs=specs, input_size=size, pixel_spacing_mm=1.5))
    ids = [p.patient_id for p in patients]
    splits = []
    for i in range(n_splits):
        # two test patients per class, rotating over splits (every class present on both sides)
        test = []
        for c in range(len(CLASSES)):
            members = ids[c :: len(CLASSES)]
            test += [members[(2 * i + j) % len(members)] for j in range(2)]
        splits.append(SplitSpec(str(i), i, tuple(p for p in ids if p not in test), tuple(test)))
    folder.write_splits(splits)
    results = _write_cells(folder, prepared, splits, specs, inits, size)
    if with_tables:
        _write_tables(folder, results, inits, images, n_patients, n_slices, n_splits)
    return folder.root


def _write_cells(folder, prepared, splits, specs, inits, size: int) -> list:
    """Seeded untrained models (model.pt) with their real test predictions (result.json) for every cell, plus
    one unavailable initialisation (ImageNet) whose reason the tables must show."""
    from cmrprior.classify.inputs import build_slice_set
    from cmrprior.classify.model import DiagnosisModel, save_classifier
    from cmrprior.evaluate.metrics import classification_metrics, patient_probabilities
    from cmrprior.models.registry import create_backbone
    from cmrprior.runs import CellKey, CellResult, EpochRecord, MasksOrigin, TestMetrics, TestOutputs

    sets = {s.images: build_slice_set(prepared, s, size) for s in specs}
    common = dict(classes=CLASSES, masks=MasksOrigin("ground_truth"), input_size=size,
                  mode="linear")
    results = []
    for sp in splits:
        for init in inits:
            for spec in specs:
                key = CellKey(sp.name, "tiny", init, spec.images)
                torch.manual_seed(1000 * int(sp.name) + 10 * len(init) + len(spec.images))
                model = DiagnosisModel(create_backbone("tiny"), create_backbone("tiny"), len(CLASSES)).eval()
                save_classifier(model, folder.model_path(key), classes=list(CLASSES), meta={})
                test = sets[spec.images].subset_patients(list(sp.test))
                with torch.no_grad():
                    probs = torch.softmax(model(torch.from_numpy(test.ed), torch.from_numpy(test.es)), 1).numpy()
                pp = patient_probabilities(probs, test.patient_index, test.n_patients)
                labels = test.patient_labels
                hist = tuple(EpochRecord(e + 1, 1.0 / (e + 1), 1.1 / (e + 1), 0.5 + 0.05 * e) for e in range(4))
                outputs = TestOutputs(list(sp.test), labels.tolist(), pp.tolist(),
                                      TestMetrics(**classification_metrics(labels, pp, CLASSES)))
                result = CellResult(key=key, status="ok", seed=sp.seed, image_mode=spec.mode, **common, history=hist, test=outputs,
                                    hyperparameters={"lr": 1e-3, "epochs": 4, "pretrain_batch_size": None},
                                    checkpoint="model.pt", wall_s=0.1)
                folder.write_cell(result)
                results.append(result)
        for spec in specs:
            r = CellResult(key=CellKey(sp.name, "tiny", "imagenet", spec.images), status="unavailable", seed=sp.seed,
                           image_mode=spec.mode, **common, reason="no ImageNet weights offline (test)")
            folder.write_cell(r)
            results.append(r)
    return results


def _write_tables(folder, results, inits, images, n_patients: int, n_slices: int, n_splits: int) -> None:
    from cmrprior.evaluate.config import EvaluationConfig
    from cmrprior.evaluate.curves import write_figure1
    from cmrprior.evaluate.tables import TableSetup, write_tables
    from cmrprior.utils import atomic

    setup = TableSetup(classes=CLASSES, backbones=("tiny",), inits=tuple(inits) + ("imagenet",), images=tuple(images),
                       evaluation=EvaluationConfig(n_boot=50), seed=0, run_notes=("Masks: ground_truth (fake run).",))
    write_tables(results, folder.tables, setup=setup)
    write_figure1(results, folder.figures / "figure1.png")
    atomic.write_json(folder.study_json, {"data": "fake", "classes": list(CLASSES), "n_patients": n_patients,
                                          "n_slices": n_patients * n_slices, "masks_source": "ground_truth",
                                          "n_splits": n_splits, "versions": {"cmrprior": "test"}})


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
