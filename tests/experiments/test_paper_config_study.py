"""`configs/paper.yaml` end to end on a tiny phantom cohort: the study's own settings with only sizes overridden
(through `load_config(..., overrides=)`, what `cmrprior study --set` uses), the real VGG16 and DenseNet121.

ImageNet weights never download here: torch hub's cache (`$TORCH_HOME`) points at a temporary folder that holds
seeded stand-in weights in torchvision's key layout (3-channel stems, classifier keys included), so the ImageNet
cells run the real loading path (key mapping, stem summed to one channel, grey normalisation) offline.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from cmrprior.experiments.config import load_config
from cmrprior.experiments.study import run_study
from cmrprior.runs import CellKey, RunFolder
from cmrprior.vocab import IMAGES, STUDY_INITS, init_names

BACKBONES = ("vgg16", "densenet121")
# Trainable parameters of one 1-channel encoder, from torchvision's own networks (ImageNet heads removed):
# VGG16 `features` 14,714,688 with an RGB stem, DenseNet121 7,978,856 - 1,025,000 (classifier) = 6,953,856;
# the 1-channel stem has 64 x 3 x 3 x 2 = 1,152 (VGG16) and 64 x 7 x 7 x 2 = 6,272 (DenseNet121) fewer weights.
ENCODER_PARAMS = {"vgg16": 14_714_688 - 1_152, "densenet121": 6_953_856 - 6_272}

# Only sizes change; every other setting (grid, modes, temperature, lrs' kind, splits' protocol) is paper.yaml's.
# 32 px is the smallest input both networks take (VGG16 and DenseNet121 downsample by 32).
SIZES = {
    "prepare.size": 48, "prepare.pixel_spacing_mm": 3.0,
    "protocol.n_splits": 1, "protocol.cv_folds": 2, "protocol.val_fraction": 0.4,
    "pretrain.epochs": 1, "pretrain.batch_sizes": [8], "pretrain.patience": 1, "pretrain.val_batch_size": 16,
    "classifier.input_size": 32, "classifier.lrs": [1e-3], "classifier.max_epochs": 1, "classifier.patience": 1,
    "classifier.finetune_lrs": [1e-3], "classifier.finetune_max_epochs": 1, "classifier.batch_size": 8,
    "classifier.feature_batch_size": 16,
    "evaluation.n_boot": 20,
    "anatomy.cs": [1.0], "anatomy.n_trees": 5, "anatomy.depths": [2], "anatomy.perturb": [1],
    "anatomy.permutation_repeats": 1, "anatomy.workers": 1,
}
# The default-suite variant also stops each SimCLR run after 2 steps and keeps one init, Segmented-SSCL
# (pre-training + linear cells on both kinds of images), without the Anatomy model, saliency and report;
# the slow test runs the whole grid and all of them.
FAST = {**SIZES, "pretrain.max_steps": 2, "anatomy.enabled": False, "classifier.inits": ["segmented_sscl"]}


@pytest.fixture()
def offline_imagenet(tmp_path_factory, monkeypatch):
    """Stand-in ImageNet weights in a temporary torch hub cache; a download attempt fails the test."""
    import torchvision
    from torchvision.models.vgg import cfgs, make_layers

    import cmrprior.models.weights as weights_mod

    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    attempts = []
    monkeypatch.setattr(weights_mod, "_download", lambda url, dst: attempts.append(url) or (_ for _ in ()).throw(
        OSError("tests never download")))
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    states = {"vgg16": vgg, "densenet121": torchvision.models.densenet121(weights=None).state_dict()}
    for name, state in states.items():
        path = weights_mod.imagenet_cache_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    yield attempts
    assert attempts == []


def _phantom(root, n_patients: int, fast: bool):
    from cmrprior.data.phantom import generate_phantom
    from cmrprior.data.phantom.config import PhantomConfig

    small = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
    classes = ("NOR", "DCM") if fast else ("NOR", "DCM", "HCM")
    return generate_phantom(root / "cohort", n_patients=n_patients, seed=4, classes=classes, config=small)


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_run(run: RunFolder, overrides: dict) -> None:
    """The run used paper.yaml but for `overrides`, every cell of the grid with both real backbones, and wrote
    finite AUCs into tables that hold every cell."""
    from cmrprior.classify.model import load_classifier
    from cmrprior.experiments.config import StudyConfig
    from cmrprior.models.backbones import TorchvisionBackbone
    from cmrprior.ssl.checkpoint import load_encoder

    used = StudyConfig.from_yaml(run.config_yaml)
    paper = load_config("paper")
    changed = {k for k, v in _leaves(used.to_dict()).items() if _leaves(paper.to_dict())[k] != v}
    assert changed == {k for k, v in overrides.items() if _leaves(paper.to_dict())[k] != v}
    inits = used.classifier.inits
    assert used.classifier.backbones == BACKBONES and set(inits) <= set(init_names()) and used.classifier.images == IMAGES
    pretrained = [i for i in ("full", "segmented") if f"{i}_sscl" in inits]

    splits = run.splits()
    for split in splits:
        for backbone in BACKBONES:
            for images in pretrained:  # the SSCL pre-training of each kind of images
                rec = run.read_pretrain(run.pretrain_dir(split.name, images, backbone, "simclr", 8))
                assert rec is not None and rec.backbone == backbone and not set(rec.patient_ids) & set(split.test)
                enc = load_encoder(rec.checkpoint)
                assert isinstance(enc, TorchvisionBackbone) and enc.arch == backbone
            for init in inits:
                for images in IMAGES:
                    key = CellKey(split.name, backbone, init, images)
                    cell = run.read_cell(key)
                    assert cell is not None and cell.status == "ok", (key, cell and cell.reason)
                    auc = cell.test.metrics.macro_auc
                    assert math.isfinite(auc) and 0.0 <= auc <= 1.0
                    assert set(cell.test.patient_ids) == set(split.test)
            model, meta = load_classifier(run.model_path(CellKey(split.name, backbone, inits[0], "full")))
            assert meta["backbone"] == backbone
            for enc in (model.ed_encoder, model.es_encoder):
                assert isinstance(enc, TorchvisionBackbone) and enc.arch == backbone
                assert sum(p.numel() for p in enc.parameters()) == ENCODER_PARAMS[backbone]

    tables = {n: json.loads((run.tables / f"{n}.json").read_text()) for n in ("table1", "table2", "table3")}
    for name, images in (("table1", "full"), ("table2", "segmented")):
        rows = tables[name]["rows"]
        assert {(r["backbone"], r["init"]) for r in rows} == {(b, i) for b in BACKBONES for i in inits}
        for r in rows:
            assert r["images"] == images and 0.0 <= r["macro_auc"] <= 1.0 and r["n_splits"] == len(splits)
    assert {r["backbone"] for r in tables["table3"]["rows"]} == set(BACKBONES)


def test_paper_config_both_backbones_fast(tmp_path, monkeypatch):
    """Both real backbones: segmentation, Segmented-SSCL pre-training, linear cells on full and segmented
    images, tables (no report)."""
    data = _phantom(tmp_path, n_patients=8, fast=True)
    res = run_study(data, tmp_path / "run", load_config("paper", overrides=FAST), report=False)
    assert res.n_cells == 2 * 1 * 2
    _check_run(RunFolder(res.run_dir), FAST)


@pytest.mark.slow
def test_paper_config_whole_grid_end_to_end_with_report(tmp_path, offline_imagenet):
    """Every cell of the paper grid (4 inits x 2 kinds of images x 2 backbones), whole SimCLR epochs, the
    Anatomy model, the hybrids, saliency and the HTML report."""
    data = _phantom(tmp_path, n_patients=12, fast=False)
    res = run_study(data, tmp_path / "run", load_config("paper", overrides=SIZES))
    assert res.n_cells == 4 * 2 * 2
    run = RunFolder(res.run_dir)
    _check_run(run, SIZES)
    assert load_config("paper").classifier.inits == STUDY_INITS  # the paper's grid; other pretexts are added by hand
    assert res.report is not None and res.report.stat().st_size > 10_000
    html = res.report.read_text()
    assert all(b in html for b in BACKBONES)
    assert (run.tables / "table4.json").exists() and res.figure is not None and res.figure.exists()
