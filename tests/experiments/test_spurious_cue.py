"""Full images as acquired keep the phantom's spurious class marker (near the image edge, outside the heart):
full-image models learn the shortcut, segmented images remove it. A crop centred on the heart would cut
the marker away and hide the effect. The fast check of the mechanism is `test_spurious_cue_mechanism.py`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.experiments.study import run_study

from .study_doubles import tiny_config

CUE = PhantomConfig(n_slices=(3, 4), cue_probability=1.0)


def _mean_auc(run, images: str) -> float:
    rows = [json.loads(p.read_text()) for p in run.glob(f"splits/split_*/cells/*/none__{images}/result.json")]
    return float(np.mean([r["test"]["metrics"]["macro_auc"] for r in rows if r["status"] == "ok"]))


def _full_images(run) -> np.ndarray:
    from cmrprior.data.prepared import PreparedCohort

    return PreparedCohort.load(run / "prepared").ed_full


@pytest.mark.slow
def test_full_images_show_the_cue_shortcut_and_segmented_images_remove_it(tmp_path):
    cfg = tiny_config(masks={"source": "ground_truth"}, prepare={"size": 96, "pixel_spacing_mm": 2.0},
                      classifier={"inits": ["none"], "images": ["full", "segmented"], "input_size": 64,
                                  "finetune_lrs": [3e-3], "finetune_max_epochs": 10},
                      protocol={"n_splits": 2, "test_fraction": 0.34, "cv_folds": 2, "val_fraction": 0.34})
    auc = {}
    for cue in (True, False):
        cohort = generate_phantom(tmp_path / f"cue{cue}", n_patients=24, seed=2, classes=("NOR", "DCM", "HCM"),
                                  spurious_cue=cue, config=CUE)
        run = tmp_path / f"run{cue}"
        run_study(cohort, run, cfg, report=False)
        auc[cue] = {images: _mean_auc(run, images) for images in ("full", "segmented")}
    print("macro AUC (cue -> images -> AUC):", auc)
    cue_rows = np.abs(_full_images(tmp_path / "runTrue") - _full_images(tmp_path / "runFalse")).max(axis=(1, 2))
    assert (cue_rows > 0.05).all()  # the marker is in every full image (a heart-centred crop cut it away)
    # the shortcut: a tiny network trained from scratch for a few epochs picks the marker up on full images
    # (measured 0.741 with, 0.435 without the cue; segmented 0.907 and 0.889)
    assert auc[True]["full"] >= 0.65 and auc[True]["full"] > auc[False]["full"] + 0.2
    assert abs(auc[True]["segmented"] - auc[False]["segmented"]) < 0.1  # segmented images: no shortcut
