"""A phantom written as DICOM cine series (manifest naming only the cine and the label) through `run_study`:
ED/ES found from each cine, recorded in qc/phases.csv, equal to the phantom's true frames."""

from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pytest
import torch

import cmrprior.data.phantom.writer as phantom_writer
import cmrprior.experiments.cohort_data as cohort_data
from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.experiments.study import run_study
from cmrprior.io.records import Volume
from cmrprior.runs import RunFolder
from cmrprior.segmentation.network import UNetArgs, build_unet, save_segmenter

from .study_doubles import RecordingPretrain, tiny_config

SMALL = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
TINY_UNET = UNetArgs(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(scope="module")
def dicom_cohort(tmp_path_factory):
    """15 patients as DICOM cines, and every rendered frame's image and exact mask, kept while writing."""
    root = tmp_path_factory.mktemp("dicom_study")
    rendered = {}
    write = phantom_writer.write_patient

    def keep(out, patient_id, p, **kw):
        rendered[patient_id] = p
        return write(out, patient_id, p, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(phantom_writer, "write_patient", keep)
        data = generate_phantom(root / "cohort", n_patients=15, seed=11, classes=("NOR", "DCM", "HCM"), config=SMALL,
                                output_format="dicom")
    torch.manual_seed(0)
    model = save_segmenter(build_unet(TINY_UNET), TINY_UNET, root / "seg" / "tiny.safetensors")
    return data, rendered, model


@pytest.mark.slow  # ~1 min of phantom rendering on 2 cores
def test_dicom_cine_cohort_through_the_study_finds_the_true_frames(dicom_cohort, tmp_path, monkeypatch):
    data, rendered, model = dicom_cohort
    header = (data / "manifest.csv").read_text().splitlines()[0]
    assert "ed_frame" not in header and "ed_image" not in header and "cine" in header

    def exact_masks(frame: Volume, index: int) -> np.ndarray:
        """A perfect segmenter: the true mask of whichever rendered frame this image is."""
        p = rendered[frame.path.parent.name]
        hits = [t for t, img in enumerate(p.cine_images) if np.array_equal(img, frame.array)]
        assert len(hits) == 1
        return p.cine_masks[hits[0]]

    # the study's ED/ES search sees a perfect segmenter; heart masks for preparation come from `model`
    monkeypatch.setattr(cohort_data, "resolve_cohort_phases",
                        functools.partial(cohort_data.resolve_cohort_phases, segment=exact_masks))
    RecordingPretrain().install(monkeypatch)
    config = tiny_config(masks={"source": "segmenter", "model": str(model)}, prepare={"size": 48, "pixel_spacing_mm": 3.0},
                         classifier={"inits": ["none"], "images": ["full", "segmented"]},
                         protocol={"n_splits": 1, "test_fraction": 0.34, "cv_folds": 2, "val_fraction": 0.34})
    result = run_study(data / "manifest.csv", tmp_path / "run", config, report=False)
    run = RunFolder(result.run_dir)
    with open(run.phases_csv, newline="") as fh:
        rows = {r["patient_id"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == sorted(rendered)
    for pid, p in rendered.items():
        truth = json.loads((data / pid / "phantom_truth.json").read_text())
        lv = np.asarray(truth["lv_volume_ml"])
        # the true frames: the phantom's largest / smallest LV volume, as it wrote them
        assert (truth["ed_frame"], truth["es_frame"]) == (int(lv.argmax()) + 1, int(lv.argmin()) + 1) == (1, p.es_frame)
        assert (int(rows[pid]["ed_frame"]), int(rows[pid]["es_frame"])) == (1, p.es_frame)
        assert int(rows[pid]["n_frames"]) == p.n_frames
    cells = [json.loads(f.read_text()) for f in sorted(run.root.glob("splits/split_*/cells/*/*/result.json"))]
    assert len(cells) == 2 and all(c["status"] == "ok" for c in cells)
    assert all(0.0 <= c["test"]["metrics"]["macro_auc"] <= 1.0 for c in cells)
    assert (run.tables / "table1.json").is_file() and (run.tables / "table2.json").is_file()
