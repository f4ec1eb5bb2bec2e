"""The HTML report of a run folder: every section present, images embedded, nothing fetched, missing inputs named."""

from __future__ import annotations

import base64
import io
import re

import matplotlib.image as mpimg
import pytest
from report_helpers import shared_report, shared_run_with_saliency

from cmrprior.report import build_report
from cmrprior.report.build import software_versions

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


def test_every_section_present_and_filled(report):
    run, path, page = report
    assert path == run / "report" / "index.html"
    for anchor in SECTIONS:
        _section(page, anchor)
    for anchor in ["cohort", "tables", "comparisons", "metrics", "roc", "confusion", "figure1", "saliency-table",
                   "saliency-overlays", "config"]:
        assert "Not available" not in _section(page, anchor), anchor
    # no QC files in this run and ground-truth masks: the section says so explicitly
    seg = _section(page, "segmentation")
    assert "Not available" in seg and "ground-truth masks" in seg
    assert "the study was run without --test" in _section(page, "holdout")
    tables = _section(page, "tables")
    assert "Table 1" in tables and "Table 2" in tables and "Table 3" in tables
    assert "In-heart saliency" in _section(page, "saliency-table")
    cohort = _section(page, "cohort")
    assert "<td>all</td><td>12</td><td>24</td>" in cohort  # 12 patients x 2 slices
    versions = software_versions()
    assert f"<td>torch</td><td>{versions['torch']}</td>" in page
    assert f"<td>python</td><td>{versions['python']}</td>" in page


def test_images_are_embedded_pngs_and_nothing_is_fetched(report):
    run, _, page = report
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 6  # masks, ROC, confusion, figure 1, saliency grids
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        img = mpimg.imread(io.BytesIO(png), format="png")
        assert img.shape[0] > 10 and img.shape[1] > 10
    assert not re.search(r'(src|href)="(https?:|//)', page)
    assert "<link" not in page
    assert not list((run / "report").glob(".*tmp"))  # atomic write leaves no temporary file


def test_missing_inputs_are_named(tmp_path):
    path = build_report(tmp_path)
    page = path.read_text()
    for anchor in SECTIONS:
        body = _section(page, anchor)
        if anchor != "config":
            assert "Not available" in body, anchor
    assert "tables/table1.md" in _section(page, "tables")
    assert "figures/figure1.png" in _section(page, "figure1")


def test_cli(tmp_path, capsys):
    from cmrprior.cli import main

    assert main(["report", str(tmp_path), "--no-saliency"]) == 0
    assert str(tmp_path / "report" / "index.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_segmentation_qc_files_are_shown(tmp_path):
    qc = tmp_path / "qc"
    qc.mkdir()
    (qc / "summary.csv").write_text("phase,metric,mean,ci_low,ci_high,n\nED,dice_LV,0.91234,0.9,0.92,30\n")
    page = build_report(tmp_path, compute_saliency=False).read_text()
    seg = _section(page, "segmentation")
    assert "Not available" not in seg
    assert "<td>ED</td><td>dice_LV</td><td>0.912</td><td>0.900</td><td>0.920</td><td>30</td>" in seg


def test_failed_saliency_stage_is_reported(tmp_path):
    cell = tmp_path / "splits" / "split_0" / "cells" / "tiny" / "none__full"
    cell.mkdir(parents=True)
    (cell / "model.pt").write_bytes(b"")  # a model but no config.yaml: the saliency stage cannot run
    page = build_report(tmp_path).read_text()
    sal = _section(page, "saliency-table")
    assert "Not available: the saliency stage failed" in sal and "config.yaml" in sal
