"""The "Full versus segmented images" section reads Tables 1-2, the paired comparisons and the saliency table
the study wrote (hand-written here) and says what a full-over-segmented gap can mean."""

from __future__ import annotations

import json
import re

from cmrprior.report import build_report
from cmrprior.runs import LAYOUT_VERSION, MasksOrigin, RunFolder, RunInfo
from cmrprior.vocab import ImageSpec

from report_helpers import shared_report


def _run(root, *, saliency: bool) -> RunFolder:
    run = RunFolder(root)
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_info(RunInfo(LAYOUT_VERSION, ("NOR", "DCM", "HCM"), MasksOrigin("segmenter"),
                           (ImageSpec("full", "full", 0.0), ImageSpec("segmented", "mask", 5.0)), 64, 2.0))
    run.tables.mkdir()

    def row(init, images, auc):
        return {"backbone": "tiny", "init": init, "images": images, "macro_auc": auc, "cell": f"{auc:.3f} [x]"}

    for name, images, aucs in (("table1", "full", (0.97, 0.70)), ("table2", "segmented", (0.88, 0.71))):
        rows = [row("none", images, aucs[0]), row("full_sscl", images, aucs[1])]
        (run.tables / f"{name}.json").write_text(json.dumps({"title": name, "notes": [], "rows": rows}))

    def comp(init, d, lo, hi, p, p_holm):
        return {"a": f"tiny/{init}/segmented", "b": f"tiny/{init}/full", "n_splits": 3, "difference": d,
                "paired_test": {"low": lo, "high": hi, "p_value": p}, "p_holm": p_holm}

    comps = [comp("none", -0.09, -0.15, -0.04, 0.0004, 0.0012), comp("full_sscl", 0.01, -0.05, 0.07, 0.62, 0.62),
             {"a": "tiny/full_sscl/full", "b": "tiny/none/full", "difference": -0.27,
              "paired_bootstrap": {"low": -0.4, "high": -0.1, "p_value": 0.01}}]
    (run.tables / "comparisons.json").write_text(json.dumps(comps))
    if saliency:
        rows = [{"method": "gradcam", "backbone": "tiny", "init": "none", "images": "full", "mean": 0.08, "chance": 0.11},
                {"method": "gradcam", "backbone": "tiny", "init": "none", "images": "segmented", "mean": 0.9,
                 "chance": 0.5},
                {"method": "gradcam", "backbone": "tiny", "init": "full_sscl", "images": "full", "mean": None}]
        (run.tables / "saliency.json").write_text(json.dumps({"title": "s", "notes": [], "rows": rows}))
    return run


def _section(page: str) -> str:
    return re.search(r'<section id="full-vs-segmented">(.*?)</section>', page, re.S).group(1)


def test_full_over_segmented_gap_per_initialisation_with_saliency(tmp_path):
    page = build_report(_run(tmp_path, saliency=True).root).read_text()
    assert page.index('<section id="comparisons">') < page.index('<section id="full-vs-segmented">')
    s = _section(page)
    assert ("Full images scored clearly higher than segmented images for 1 of 2 compared configuration(s): "
            "None (tiny).") in s
    cells = re.findall(r"<tr>(.*?)</tr>", s, re.S)
    assert [re.findall(r"<td>(.*?)</td>", c) for c in cells[1:]] == [
        ["tiny", "None", "0.970 [x]", "0.880 [x]", "-0.090 [-0.150, -0.040], p (Holm) = 0.001", "full higher",
         "Grad-CAM 0.08 (chance 0.11)"],
        ["tiny", "Full-SSCL", "0.700 [x]", "0.710 [x]", "+0.010 [-0.050, +0.070], p (Holm) = 0.620", "no clear difference",
         "not run"]]
    assert "shortcut" in s and "scanner, site or protocol marker" in s and "extra-cardiac signal" in s
    assert 'href="#saliency-table"' in s and 'href="#saliency-overlays"' in s


def test_without_saliency_or_without_one_kind_of_images(tmp_path):
    run = _run(tmp_path / "a", saliency=False)
    s = _section(build_report(run.root).read_text())
    assert "Saliency has not been run on this study" in s and "Grad-CAM" not in s
    (run.tables / "table2.json").unlink()
    s = _section(build_report(run.root).read_text())
    assert "needs classifiers trained on both full and segmented images" in s and "<table" not in s


def test_section_on_the_fake_study_run():
    s = _section(shared_report().read_text())
    assert "<table" in s and "compared configuration(s)" in s


def test_a_gap_whose_holm_adjusted_p_is_not_small_has_no_direction(tmp_path):
    """The interval excludes 0 but the family's Holm-adjusted p is 0.08: no "full higher" verdict, in the table or
    in the lead sentence; at the run's level 0.9 (`evaluation.level`) the same record has its direction."""
    run = _run(tmp_path, saliency=False)
    comps = json.loads((run.tables / "comparisons.json").read_text())
    comps[0]["p_holm"] = 0.08
    (run.tables / "comparisons.json").write_text(json.dumps(comps))
    s = _section(build_report(run.root).read_text())
    assert "<td>no clear difference after Holm&#x27;s adjustment</td>" in s  # HTML-escaped apostrophe
    assert "did not score clearly higher" in s
    run.config_yaml.write_text("evaluation: {level: 0.9}\n")
    s = _section(build_report(run.root).read_text())
    assert "<td>full higher</td>" in s and "Full images scored clearly higher" in s
