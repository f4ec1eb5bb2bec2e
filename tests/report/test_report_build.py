"""The HTML report of a run folder: every section present, images embedded, nothing fetched, missing inputs
named, older layouts refused, and nothing computed (no saliency, experiments, segmentation or torch import)."""

from __future__ import annotations

import base64
import csv
import io
import re
import subprocess
import sys

import PIL.Image
import pytest
from report_helpers import shared_report, shared_run_with_saliency

from cmrprior.errors import DataError
from cmrprior.report import build_report
from cmrprior.report.build import software_versions
from cmrprior.runs import LAYOUT_VERSION, MasksOrigin, RunFolder, RunInfo
from cmrprior.vocab import ImageSpec

SECTIONS = ["cohort", "segmentation", "tables", "comparisons", "metrics", "roc", "confusion", "figure1",
            "saliency-table", "saliency-overlays", "holdout", "config"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def report():
    path = shared_report()
    return shared_run_with_saliency(), path, path.read_text()


def _section(page: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert m, f"section {anchor} missing"
    return m.group(1)


def _empty_run(root) -> RunFolder:
    """A run folder with only its run.json (a study that stopped right after starting)."""
    run = RunFolder(root)
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_info(RunInfo(LAYOUT_VERSION, ("NOR", "DCM"), MasksOrigin("segmenter"), (ImageSpec("full", "full", 0.0),
                           ImageSpec("segmented", "mask+crop", 4.5)), 64, 1.25))
    return run


def test_every_section_present_and_filled(report):
    run, path, page = report
    assert path == run / "report" / "index.html"
    for anchor in SECTIONS:
        _section(page, anchor)
    for anchor in ["cohort", "tables", "comparisons", "metrics", "roc", "confusion", "figure1", "saliency-table",
                   "saliency-overlays", "config"]:
        assert "Not available" not in _section(page, anchor), anchor
    # no Dice files in this run and ground-truth masks: the section says so explicitly
    seg = _section(page, "segmentation")
    assert "Not available" in seg and "ground-truth masks" in seg
    assert "the study was run without --test" in _section(page, "holdout")
    tables = _section(page, "tables")
    assert "Table 1" in tables and "Table 2" in tables and "Table 3" in tables
    assert "In-heart saliency" in _section(page, "saliency-table")
    cohort = _section(page, "cohort")
    assert "<td>all</td><td>12</td><td>24</td>" in cohort  # 12 patients x 2 slices
    # readers see labels, not the run folder's keys
    assert "<td>Masks source</td><td>oracle: expert (ground-truth) masks</td>" in cohort
    assert "<td>Classifier input (px)</td><td>32</td>" in cohort and "masks_source" not in page
    assert "<td>segmented</td><td>mask</td><td>3</td>" in cohort
    grids = _section(page, "saliency-overlays")
    assert "<h3>Grad-CAM</h3>" in grids and "<h3>Integrated gradients</h3>" in grids
    assert "Backbone tiny, split 0, patient patient000" in grids
    versions = software_versions()
    assert f"<td>torch</td><td>{versions['torch']}</td>" in page
    assert f"<td>python</td><td>{versions['python']}</td>" in page


def test_mask_flags_shown_with_the_counts_of_the_flag_code(report):
    """The flags table counts what `write_mask_flags` wrote, recomputed here with the QC code itself."""
    from cmrprior.data.prepared import PreparedCohort
    from cmrprior.segmentation.qc import MASK_FLAGS, evaluate_prepared

    run, _, page = report
    rows = evaluate_prepared(PreparedCohort.load(run / "prepared"))
    with open(RunFolder(run).mask_flags_csv, newline="") as fh:
        on_disk = list(csv.DictReader(fh))
    assert [(r["patient_id"], r["phase"]) for r in on_disk] == [(r["patient_id"], r["phase"]) for r in rows]
    seg = _section(page, "segmentation")
    for flag, label in zip(MASK_FLAGS, ["No heart label on any slice", "A structure missing on a mid-ventricular slice",
                                        "Myocardium not surrounding the LV cavity",
                                        "Heart area jumps between neighbouring slices"]):
        ed = sum(bool(r[flag]) for r in rows if r["phase"] == "ED")
        es = sum(bool(r[flag]) for r in rows if r["phase"] == "ES")
        assert f"<td>{label}</td><td>{ed} / 12</td><td>{es} / 12</td>" in seg


def test_images_are_embedded_and_nothing_is_fetched(report):
    run, _, page = report
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 6  # masks, ROC, confusion, figure 1, saliency grids
    kinds = set()
    for src in srcs:
        m = re.match(r"data:image/(png|jpeg);base64,", src)
        assert m, src[:40]
        kinds.add(m.group(1))
        img = PIL.Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert img.format == m.group(1).upper() and img.width > 10 and img.height > 10
    assert kinds == {"png", "jpeg"}  # plots as palette PNG, image-like figures (overlays) as JPEG
    assert not re.search(r'(src|href)="(https?:|//)', page)
    assert "<link" not in page
    assert not list((run / "report").glob(".*tmp"))  # atomic write leaves no temporary file


def test_missing_inputs_are_named(tmp_path):
    run = _empty_run(tmp_path)
    page = build_report(run.root).read_text()
    for anchor in SECTIONS:
        body = _section(page, anchor)
        if anchor not in ("config", "cohort"):
            assert "Not available" in body, anchor
    assert "tables/table1.md" in _section(page, "tables")
    assert "figures/figure1.png" in _section(page, "figure1")
    assert "qc/mask_flags.csv is not in the run folder" in _section(page, "segmentation")
    cohort = _section(page, "cohort")
    assert "study.json is missing" in cohort and "<td>segmented</td><td>mask+crop</td><td>4.5</td>" in cohort
    assert not (run.root / "saliency").exists()  # the report computes nothing


def test_cli(tmp_path, capsys):
    from cmrprior.cli import main

    _empty_run(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    assert str(tmp_path / "report" / "index.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 3  # bad data


def test_older_layout_and_non_run_folders_are_refused(tmp_path, capsys):
    from cmrprior.cli import main

    (tmp_path / "config.yaml").write_text("name: old\n")
    cell = tmp_path / "splits" / "split_0" / "cells" / "tiny" / "none__full"
    cell.mkdir(parents=True)
    (cell / "model.pt").write_bytes(b"")
    with pytest.raises(DataError, match="older layout .*re-run the study"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 3
    assert "older layout" in capsys.readouterr().err
    assert not (tmp_path / "report").exists() and not (tmp_path / "saliency").exists()
    with pytest.raises(DataError, match="run.json missing"):
        build_report(tmp_path / "splits")


def test_segmentation_qc_files_are_shown_compact(tmp_path):
    run = _empty_run(tmp_path)
    run.segmentation_summary_csv.parent.mkdir(parents=True)
    run.segmentation_summary_csv.write_text("phase,metric,mean,ci_low,ci_high,n\nED,dice_LV,0.91234,0.9,0.92,30\n"
                                            "ES,dice_LV,0.8,0.75,0.85,30\nall,dice_LV,0.85,0.8,0.9,60\n")
    (run.qc / "segmentation_dice.md").write_text("## Segmenter masks against ground truth\n\n| Phase | Metric |\n"
                                                "|---|---|\n| ED | dice_LV |\n\n- 3D per patient and phase.\n")
    page = build_report(run.root).read_text()
    seg = _section(page, "segmentation")
    assert "Not available" not in seg
    assert "<tr><td>LV cavity</td><td>0.912 [0.900, 0.920]</td><td>0.800 [0.750, 0.850]</td></tr>" in seg
    assert "<li>3D per patient and phase.</li>" in seg and "<td>dice_LV</td>" not in seg  # notes kept, long table not
    assert "segmenter (heart segmentation network)" in seg


def test_report_imports_no_stage_and_no_torch(tmp_path):
    """`cmrprior.report` renders what is on disk: building the full fake run's report (every section filled)
    imports neither the saliency, experiments nor segmentation stages, nor torch."""
    import shutil

    shutil.copytree(shared_run_with_saliency(), tmp_path / "run")
    code = ("import sys; from cmrprior.report import build_report; build_report(sys.argv[1]); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(("
            "'cmrprior.saliency', 'cmrprior.experiments', 'cmrprior.segmentation'))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    assert "saliency-overlays" in (tmp_path / "run" / "report" / "index.html").read_text()
