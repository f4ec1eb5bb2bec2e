"""`run_saliency` / `cmrprior saliency` on a run folder built with the study's own writers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fake_run import SALIENCY_TEST_SETTINGS, shared_run_with_saliency

from cmrprior.errors import DataError
from cmrprior.runs import CellKey, RunFolder
from cmrprior.saliency.run import SaliencyConfig, run_saliency

CFG = SaliencyConfig(**SALIENCY_TEST_SETTINGS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir():
    return shared_run_with_saliency()


def test_outputs_for_every_configuration(run_dir):
    cells = sorted(run_dir.glob("saliency/cells/*/tiny/*/scores.json"))
    assert len(cells) == 2 * 2 * 2  # splits x inits x images
    assert all(("integrated_gradients" in json.loads(c.read_text())["methods"]) == (c.parts[-4] == "0") for c in cells)
    rec = json.loads(cells[0].read_text())
    assert set(rec["methods"]) == {"gradcam", "integrated_gradients"}
    for name, m in rec["methods"].items():
        vals = list(m["patients"].values())
        assert len(vals) == 6 and all(0.0 <= v <= 1.0 for v in vals)
        assert all(0.0 < c < 1.0 for c in m["chance"].values())
        assert m["n_images"] == 2 * 6 * (1 if name == "integrated_gradients" else 2)  # IG: middle slice only
    overlays = sorted(run_dir.glob("saliency/overlays/gradcam/tiny/*/split_0/*.png"))
    assert len(overlays) == 4 * 1  # 4 configurations x 1 patient, first split only
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in overlays)
    grids = sorted(run_dir.glob("saliency/grids/*/tiny/split_0__*.png"))
    assert len(grids) == 2 * 1  # methods x patients
    md = (run_dir / "tables" / "saliency.md").read_text()
    assert "Grad-CAM" in md and "Integrated gradients" in md and "Full-SSCL" in md
    assert md.count("n/a: no ImageNet weights offline (test)") == 2 * 2  # methods x images
    rows = [r for r in json.loads((run_dir / "tables" / "saliency.json").read_text())["rows"] if r["init"] != "imagenet"]
    assert len(rows) == 2 * 2 * 2  # methods x inits x images
    for r in rows:  # IG runs on the first split only (SaliencyConfig.ig_splits)
        assert (r["n_splits"], r["n_patients"]) == ((2, 12) if r["method"] == "gradcam" else (1, 6))
    assert "1 split(s)" in md and "Integrated gradients: 1 slice(s) per test patient" in md
    csv_lines = (run_dir / "tables" / "saliency.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(rows) + 4  # + the n/a rows


def test_scores_match_independent_recomputation(run_dir):
    """Recompute one cell's Grad-CAM in-heart scores by hand: C's heart mask on the (unresized) full images,
    E's model loader, shares per image, mean per patient over slices and both branches."""
    from cmrprior.anatomy.heart import heart_mask
    from cmrprior.classify.model import load_classifier
    from cmrprior.data.prepared import PreparedCohort
    from cmrprior.saliency.gradcam import gradcam

    run, key = RunFolder(run_dir), CellKey("1", "tiny", "none", "full")
    rec = json.loads((run_dir / "saliency" / "cells" / "1" / "tiny" / "none__full" / "scores.json").read_text())
    ids = run.read_cell(key).test.patient_ids
    model, _ = load_classifier(run.model_path(key))
    prepared = PreparedCohort.load(run_dir / "prepared").select_patients(ids)
    res = gradcam(model, torch.from_numpy(prepared.ed)[:, None], torch.from_numpy(prepared.es)[:, None])
    for pi, pid in enumerate(ids):
        shares = []
        for cam, masks in ((res.ed, prepared.ed_mask), (res.es, prepared.es_mask)):
            heart = heart_mask(masks, margin_mm=CFG.margin_mm, pixel_spacing_mm=1.5)
            for k in np.flatnonzero(prepared.patient_index == pi):
                c = cam[k].numpy().astype(np.float64)
                if c.sum() > 0:
                    shares.append(c[heart[k]].sum() / c.sum())
        expected = float(np.mean(shares)) if shares else math.nan
        assert rec["methods"]["gradcam"]["patients"][pid] == pytest.approx(expected, rel=1e-5)


def test_resume_does_not_recompute(run_dir):
    marker = run_dir / "saliency" / "cells" / "0" / "tiny" / "none__full" / "scores.json"
    before = marker.stat().st_mtime_ns
    out = run_saliency(run_dir, CFG)
    assert marker.stat().st_mtime_ns == before
    assert out.n_cells == 8


def test_cli_and_bad_run_folder(tmp_path, capsys):
    from cmrprior.cli import main

    with pytest.raises(DataError, match="not a study run folder"):
        run_saliency(tmp_path)
    assert main(["saliency", "--run", str(tmp_path)]) == 3  # bad data
    assert "run.json missing" in capsys.readouterr().err
    assert not (tmp_path / "saliency").exists()  # nothing written into a folder that is not a run


def test_older_layout_is_refused(tmp_path, capsys):
    """A run folder of the layout before run.json (config.yaml, cells, no run.json): a clear DataError."""
    from cmrprior.cli import main

    (tmp_path / "config.yaml").write_text("name: old\n")
    cell = tmp_path / "splits" / "split_0" / "cells" / "tiny" / "none__full"
    cell.mkdir(parents=True)
    (cell / "result.json").write_text('{"status": "ok", "split": 0}')
    with pytest.raises(DataError, match="older layout .*re-run the study"):
        run_saliency(tmp_path)
    assert main(["saliency", "--run", str(tmp_path)]) == 3
    assert "older layout" in capsys.readouterr().err


def test_cli_scores_a_run(tmp_path, capsys):
    """`cmrprior saliency --run RUN` on a one-cell run: exit 0, the table written, the same scores as the API."""
    from fake_run import build_fake_run

    from cmrprior.cli import main

    run = build_fake_run(tmp_path / "run", n_splits=1, inits=("none",), images=("full",), with_tables=False)
    args = ["saliency", "--run", str(run), "--methods", "gradcam", "--overlay-patients", "0"]
    assert main(args) == 0
    assert "1 cell(s) scored" in capsys.readouterr().out
    rec = json.loads((run / "saliency" / "cells" / "0" / "tiny" / "none__full" / "scores.json").read_text())
    assert list(rec["methods"]) == ["gradcam"] and (run / "tables" / "saliency.md").exists()
    again = build_fake_run(tmp_path / "api", n_splits=1, inits=("none",), images=("full",), with_tables=False)
    run_saliency(again, SaliencyConfig(methods=("gradcam",), overlay_patients=0))
    rec2 = json.loads((again / "saliency" / "cells" / "0" / "tiny" / "none__full" / "scores.json").read_text())
    assert rec2["methods"]["gradcam"]["patients"] == rec["methods"]["gradcam"]["patients"]


def test_select_slices_evenly_spaced():
    from cmrprior.saliency.run import select_slices

    pidx = np.array([0] * 9 + [1] * 2 + [2] * 1)
    np.testing.assert_array_equal(select_slices(pidx, 3), [1, 4, 7, 9, 10, 11])
    np.testing.assert_array_equal(select_slices(pidx, 1), [4, 10, 11])  # the middle slice
    np.testing.assert_array_equal(select_slices(pidx, None), np.arange(12))


def test_chosen_class_target(tmp_path):
    """target = a class name: every map explains that class; Grad-CAM for class k recomputed by hand."""
    from fake_run import build_fake_run

    from cmrprior.classify.model import load_classifier
    from cmrprior.data.prepared import PreparedCohort
    from cmrprior.errors import ConfigError
    from cmrprior.saliency.gradcam import gradcam
    from cmrprior.saliency.score import in_heart_share
    from cmrprior.anatomy.heart import heart_mask

    run = build_fake_run(tmp_path / "run", n_splits=1, inits=("none",), images=("full",), with_tables=False)
    cfg = SaliencyConfig(methods=("gradcam",), target="HCM", overlay_patients=0, n_boot=50)
    run_saliency(run, cfg)
    rec = json.loads((run / "saliency" / "cells" / "0" / "tiny" / "none__full" / "scores.json").read_text())
    key = CellKey("0", "tiny", "none", "full")
    ids = RunFolder(run).read_cell(key).test.patient_ids
    model, _ = load_classifier(RunFolder(run).model_path(key))
    prep = PreparedCohort.load(run / "prepared").select_patients(ids[:1])
    res = gradcam(model, torch.from_numpy(prep.ed)[:, None], torch.from_numpy(prep.es)[:, None], target_class=2)
    shares = np.concatenate([in_heart_share(res.ed.numpy(), heart_mask(prep.ed_mask, 5.0, 1.5)),
                             in_heart_share(res.es.numpy(), heart_mask(prep.es_mask, 5.0, 1.5))])
    assert rec["methods"]["gradcam"]["patients"][ids[0]] == pytest.approx(np.nanmean(shares), rel=1e-5)
    assert "explains class HCM" in (run / "tables" / "saliency.md").read_text()
    with pytest.raises(ConfigError, match="XYZ"):
        run_saliency(run, SaliencyConfig(methods=("gradcam",), target="XYZ", overlay_patients=0))


def test_a_pooled_cell_is_explained_as_one_slice_patients(tmp_path):
    """A patient-pooled cell: its maps are those of `one_slice_model` (Grad-CAM recomputed by hand), and the
    record says so."""
    from fake_run import CLASSES, build_fake_run

    from cmrprior.anatomy.heart import heart_mask
    from cmrprior.classify.model import PooledDiagnosisModel, save_classifier
    from cmrprior.data.prepared import PreparedCohort
    from cmrprior.models.registry import create_backbone
    from cmrprior.saliency.gradcam import gradcam
    from cmrprior.saliency.score import in_heart_share

    run = build_fake_run(tmp_path / "run", n_splits=1, inits=("none",), images=("full",), with_tables=False)
    key = CellKey("0", "tiny", "none", "full")
    torch.manual_seed(3)
    pooled = PooledDiagnosisModel(create_backbone("tiny"), create_backbone("tiny"), len(CLASSES)).eval()
    save_classifier(pooled, RunFolder(run).model_path(key), classes=list(CLASSES), meta={})
    run_saliency(run, SaliencyConfig(methods=("gradcam",), target="HCM", overlay_patients=0, n_boot=50))
    rec = json.loads((run / "saliency" / "cells" / "0" / "tiny" / "none__full" / "scores.json").read_text())
    assert rec["model"].startswith("patient-pooled cell")
    ids = RunFolder(run).read_cell(key).test.patient_ids
    prep = PreparedCohort.load(run / "prepared").select_patients(ids[:1])
    res = gradcam(pooled.one_slice_model(), torch.from_numpy(prep.ed)[:, None], torch.from_numpy(prep.es)[:, None],
                  target_class=2)
    shares = np.concatenate([in_heart_share(res.ed.numpy(), heart_mask(prep.ed_mask, 5.0, 1.5)),
                             in_heart_share(res.es.numpy(), heart_mask(prep.es_mask, 5.0, 1.5))])
    assert rec["methods"]["gradcam"]["patients"][ids[0]] == pytest.approx(np.nanmean(shares), rel=1e-5)
