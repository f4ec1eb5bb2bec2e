"""The report leads with the answer, read from the tables the study wrote (hand-written here)."""

from __future__ import annotations

import json
import re

from cmrprior.report import build_report
from cmrprior.report.summary import comparison_in_words, label_keys
from cmrprior.runs import LAYOUT_VERSION, MasksOrigin, RunFolder, RunInfo
from cmrprior.vocab import ImageSpec


def _run(root, source="segmenter") -> RunFolder:
    run = RunFolder(root)
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_info(RunInfo(LAYOUT_VERSION, ("NOR", "DCM"), MasksOrigin(source), (ImageSpec("full", "full", 0.0),
                           ImageSpec("segmented", "mask", 5.0)), 64, 1.5))
    run.tables.mkdir()
    metrics = [
        {"backbone": "vgg16", "init": "none", "images": "full", "macro_auc": 0.61, "t_low": 0.5, "t_high": 0.7, "n_splits": 5},
        {"backbone": "vgg16", "init": "segmented_sscl", "images": "segmented", "macro_auc": 0.874, "t_low": 0.81,
         "t_high": 0.938, "boot_low": 0.83, "boot_high": 0.91, "n_splits": 5},
        {"backbone": "vgg16", "init": "imagenet", "images": "full", "macro_auc": None, "status": "unavailable"},
    ]
    (run.tables / "metrics.json").write_text(json.dumps(metrics))

    def comp(a, b, d, lo, hi, p, p_holm):
        return {"a": a, "b": b, "n_splits": 5, "difference": d, "p_holm": p_holm,
                "paired_test": {"low": lo, "high": hi, "p_value": p}, "paired_t": {"p_value": 0.5}}

    # p_holm as the tables write it (Holm over these 3: 3 x 0.003, 2 x 0.02, max(1 x 0.41, 0.04))
    comps = [comp("vgg16/none/segmented", "vgg16/none/full", 0.02, -0.03, 0.07, 0.41, 0.41),
             comp("vgg16/full_sscl/full", "vgg16/none/full", -0.04, -0.09, -0.01, 0.02, 0.04),
             comp("vgg16/segmented_sscl/segmented", "vgg16/none/segmented", 0.12, 0.05, 0.19, 0.003, 0.009)]
    (run.tables / "comparisons.json").write_text(json.dumps(comps))
    (run.tables / "comparisons.md").write_text("| A | B |\n|---|---|\n| vgg16/segmented_sscl/segmented | vgg16/none/full |\n")
    return run


def _summary(page: str) -> str:
    return re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)


def test_summary_leads_with_best_configuration_comparisons_and_masks(tmp_path):
    run = _run(tmp_path)
    page = build_report(run.root).read_text()
    assert page.index('<section id="summary">') < page.index('<section id="cohort">')
    s = _summary(page)
    assert ("Best image configuration, selected after the fact on these test results (optimistic): "
            "<strong>Segmented-SSCL initialisation, segmented training images, vgg16</strong>: macro AUC <strong>0.874</strong> [0.810, 0.938] "
            "(t-interval across 5 split(s)), patient bootstrap 0.830-0.910; best of 2 scored configuration(s).") in s
    assert "Primary analysis: none named in the config" in s
    items = re.findall(r"<li>([^<]*)</li>", s)
    # the study's order: SSCL vs None on the same images (segmented first), then images, not by p
    assert items[:3] == [
        "Segmented-SSCL vs None on segmented images, vgg16: +0.120 macro AUC [+0.050, +0.190], p (Holm) = 0.009 "
        "(higher; 5 split(s))",
        "Full-SSCL vs None on full images, vgg16: -0.040 macro AUC [-0.090, -0.010], p (Holm) = 0.040 (lower; 5 split(s))",
        "Segmented vs full training images with None, vgg16: +0.020 macro AUC [-0.030, +0.070], p (Holm) = 0.410 "
        "(no clear difference; 5 split(s))"]
    assert "<strong>segmenter (heart segmentation network), shipped model</strong>" in s
    assert "out-of-sample: not recorded" in s
    # raw keys of the comparisons table become labels
    comparisons = re.search(r'<section id="comparisons">(.*?)</section>', page, re.S).group(1)
    assert "<td>vgg16, Segmented-SSCL, segmented images</td><td>vgg16, None, full images</td>" in comparisons


def test_summary_oracle_and_recorded_out_of_sample(tmp_path):
    run = _run(tmp_path, source="ground_truth")
    (run.root / "study.json").write_text(json.dumps({"n_patients": 100, "n_splits": 5, "data": "ACDC",
                                                     "masks_out_of_sample": False}))
    s = _summary(build_report(run.root).read_text())
    assert "<strong>oracle: expert (ground-truth) masks</strong>" in s
    assert "out-of-sample: no: some masks come from a model that was trained on the same patients" in s
    assert "Cohort: 100 patients, classes NOR, DCM; 5 patient-level split(s); data ACDC." in s


def test_summary_when_nothing_was_scored(tmp_path):
    run = RunFolder(tmp_path)
    run.root.mkdir(exist_ok=True)
    run.write_info(RunInfo(LAYOUT_VERSION, ("A", "B"), MasksOrigin("segmenter"), (ImageSpec("full", "full", 0.0),), 32, 1.0))
    s = _summary(build_report(run.root).read_text())
    assert "Best configuration: not available" in s


def test_summary_leads_with_the_primary_analysis_and_its_held_out_result(tmp_path):
    run = _run(tmp_path)
    run.config_yaml.write_text("primary: vgg16/none/full\n")
    (run.tables / "holdout_metrics.json").write_text(json.dumps([
        {"backbone": "vgg16", "init": "none", "images": "full", "macro_auc": 0.58, "boot_low": 0.41, "boot_high": 0.73,
         "n_splits": 1, "accuracy": 0.5}]))
    s = _summary(build_report(run.root).read_text())
    first = re.findall(r"<li>(.*?)</li>", s, re.S)[0]
    assert first == ("Primary analysis (named in the config before the results): <strong>vgg16, None, full images</strong>: "
                     "macro AUC <strong>0.610</strong> [0.500, 0.700] (t-interval across 5 split(s)). Held-out cohort "
                     "(scored once; nothing was chosen on it): macro AUC <strong>0.580</strong>, patient bootstrap "
                     "0.410-0.730, accuracy 0.500.")
    # the best cell (0.874) is not the headline: it is named as chosen after the fact
    assert s.index("Primary analysis") < s.index("selected after the fact")


def test_summary_primary_anatomy_reads_table4(tmp_path):
    run = _run(tmp_path)
    run.config_yaml.write_text("primary: anatomy\n")
    (run.tables / "table4.json").write_text(json.dumps({"rows": [
        {"model": "Anatomy", "macro_auc": 0.988, "t_low": 0.97, "t_high": 1.0, "n_splits": 5, "accuracy": 0.9}]}))
    s = _summary(build_report(run.root).read_text())
    assert ("Primary analysis (named in the config before the results): <strong>Anatomy model (cardiac measures)</strong>: "
            "macro AUC <strong>0.988</strong> [0.970, 1.000] (t-interval across 5 split(s)), accuracy 0.900.") in s


def test_words_and_labels():
    from cmrprior.report.html import markdown_to_html

    assert markdown_to_html("- one\n  continued\n- two") == "<ul><li>one continued</li><li>two</li></ul>"
    assert label_keys("masks: ground_truth; tiny/full_sscl/full") == (
        "masks: oracle: expert (ground-truth) masks; tiny, Full-SSCL, full images")
    # the key of run folders written before the comparison records named their test `paired_test`
    c = {"a": "d/segmented_sscl/segmented", "b": "d/full_sscl/full", "difference": 0.0004, "n_splits": 2,
         "paired_bootstrap": {"low": -0.1, "high": 0.1, "p_value": 0.0001}}
    assert comparison_in_words(c) == ("Segmented-SSCL on segmented images vs Full-SSCL on full images, d: +0.000 macro "
                                      "AUC [-0.100, +0.100], p (unadjusted) < 0.001 (no clear difference; 2 split(s))")
    assert comparison_in_words({**c, "p_holm": 0.0004}).endswith("p (Holm) < 0.001 (no clear difference; 2 split(s))")
    new = {**{k: v for k, v in c.items() if k != "paired_bootstrap"}, "paired_test": c["paired_bootstrap"]}
    assert comparison_in_words(new) == comparison_in_words(c)
    assert comparison_in_words({"a": "nonsense", "b": "x", "difference": 1}) is None



def test_a_direction_is_said_only_where_the_holm_adjusted_test_agrees():
    """An interval that excludes 0 is per comparison; with the family's Holm-adjusted p at or above the level's
    alpha the summary does not call the difference higher or lower."""
    c = {"a": "d/segmented_sscl/segmented", "b": "d/none/segmented", "difference": 0.147, "n_splits": 5,
         "paired_test": {"low": 0.064, "high": 0.230, "p_value": 0.016}}
    assert comparison_in_words({**c, "p_holm": 0.079}).endswith(
        "p (Holm) = 0.079 (no clear difference after Holm's adjustment; 5 split(s))")
    assert comparison_in_words({**c, "p_holm": 0.03}).endswith("p (Holm) = 0.030 (higher; 5 split(s))")
    assert comparison_in_words({**c, "p_holm": 0.079}, level=0.9).endswith("(higher; 5 split(s))")
    lower = {**c, "difference": -0.147, "paired_test": {"low": -0.230, "high": -0.064, "p_value": 0.016}}
    assert comparison_in_words({**lower, "p_holm": 0.049}).endswith("(lower; 5 split(s))")
    assert comparison_in_words(c).endswith("p (unadjusted) = 0.016 (higher; 5 split(s))")  # written before Holm


def test_long_qc_csv_is_shown_short(tmp_path):
    from cmrprior.report.qc import csv_table

    path = tmp_path / "qc" / "phases.csv"
    path.parent.mkdir()
    curve = ";".join(f"{v:.2f}" for v in range(100, 130))
    path.write_text("patient_id,lvef_percent,lv_volume_ml\n" + "".join(f"p{i:03d},55.123456,{curve}\n" for i in range(30)))
    html = csv_table(path, tmp_path)
    assert "qc/phases.csv (first 12 of 30 rows)" in html and html.count("<tr>") == 13
    assert "<th>lv volume ml</th>" in html and "<td>55.123</td>" in html
    assert f"<td>{curve[:37]}...</td>" in html and "p012" not in html


def test_summary_states_the_test_cohorts_masks_apart(tmp_path):
    run = _run(tmp_path)
    run.write_info(RunInfo(LAYOUT_VERSION, ("NOR", "DCM"), MasksOrigin("segmenter", "fold models"),
                           (ImageSpec("full", "full", 0.0),), 64, 1.5,
                           test_masks=MasksOrigin("segmenter", "full segmenter", True)))
    s = _summary(build_report(run.root).read_text())
    assert "(fold models); out-of-sample: not recorded." in s
    assert ("Test cohort's masks: full segmenter; out-of-sample: yes: every patient&#x27;s masks come from a model that "
            "did not see that patient.") in s
