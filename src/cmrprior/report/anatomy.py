"""The report's "Anatomy model" section: Table 4 (the anatomy model beside the best image models), its
confusion matrix summed over splits, the feature importances (mean over splits, from each split's
`result.json`), and AUC against the size of the test-mask perturbations (`tables/anatomy_robustness.csv`).
It renders what the study wrote; it computes nothing but means of stored numbers for display.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from cmrprior.report.html import Section, esc, figure, markdown_to_html, table_html
from cmrprior.report.summary import label_keys
from cmrprior.runs import CellResult, RunFolder, RunInfo

_MISSING = ("the anatomy model did not run (anatomy.enabled: false, or a run made before it existed): "
            "tables/table4.md is not in the run folder")


def _importance_table(results: list[CellResult]) -> str:
    per_feature: dict[str, list[float]] = defaultdict(list)
    for r in results:
        imp = r.search.get("importance") or {}
        total = sum(abs(float(v)) for v in imp.values()) or 1.0  # splits may have chosen different families
        for name, v in imp.items():
            per_feature[name].append(float(v) / total)
    if not per_feature:
        return ""
    rows = sorted(((n, sum(v) / len(v), len(v)) for n, v in per_feature.items()), key=lambda t: -t[1])
    methods = "; ".join(sorted({str(r.search.get("importance_method", "")) for r in results}))
    return table_html(["Feature", "Share of importance (mean over splits)", "Splits"],
                      [(n, f"{m:.3f}", k) for n, m, k in rows],
                      caption=f"Feature importance of the anatomy model, each split's importances divided by their "
                              f"absolute sum ({methods}; models chosen per split: "
                              + ", ".join(r.hyperparameters.get("model", "") for r in results) + ")")


def _robustness(run: RunFolder) -> str:
    path = run.tables / "anatomy_robustness.csv"
    if not path.exists():
        return '<p class="missing">No robustness check (anatomy.perturb is empty).</p>'
    from cmrprior.report.plots import robustness_png

    rows = [r for r in csv.DictReader(io.StringIO(path.read_text())) if r["split"] == "mean"]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    baseline = None
    for r in rows:
        if r["perturbation"] == "none":
            baseline = float(r["macro_auc"])
            continue
        size = r["size_px"] or r["size_slices"]
        unit = "px" if r["size_px"] else "slices"
        series[f"{r['perturbation']} ({unit})"].append((float(size), float(r["macro_auc"])))
    table = table_html(["Perturbation of the test masks", "Size", "Macro AUC (mean over splits)", "Accuracy"],
                       [(r["perturbation"], r["size_px"] or r["size_slices"] or "-", f"{float(r['macro_auc']):.3f}",
                         f"{float(r['accuracy']):.3f}") for r in rows],
                       caption="Anatomy model trained on unperturbed measures, scored on perturbed test masks")
    return figure(robustness_png(dict(series), baseline), "Macro AUC against perturbation size "
                  "(tables/anatomy_robustness.csv)", width=520) + table


def anatomy_section(run: RunFolder, info: RunInfo) -> Section:
    title = "Anatomy model (cardiac measures -> tabular classifier)"
    md = run.tables / "table4.md"
    if not md.exists():
        return Section("anatomy", title, "", _MISSING)
    body = [markdown_to_html(label_keys(md.read_text()))]
    results = [r for r in run.anatomy_results() if r.ok and r.test is not None]
    if results:
        from cmrprior.report.plots import confusion_grid_png

        body.append(figure(confusion_grid_png([("Anatomy", [r.test for r in results])], info.classes),
                           "Confusion matrix of the anatomy model, test patients summed over splits", width=360))
        body.append(_importance_table(results))
    else:
        body.append(f'<p class="missing">{esc("No finished anatomy result (see splits/*/anatomy/result.json).")}</p>')
    body.append(_robustness(run))
    return Section("anatomy", title, "\n".join(body))
