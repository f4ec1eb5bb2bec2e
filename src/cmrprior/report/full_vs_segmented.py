"""The report's "Full versus segmented images" section, read from the tables the study wrote.

Per backbone and initialisation: the macro AUC of the classifier trained on full images (`tables/table1.json`)
and on segmented images (`tables/table2.json`), their paired difference (`tables/comparisons.json`, segmented
- full on the same test patients) and, when the saliency stage ran, the in-heart saliency share of the
full-image model with its chance level (`tables/saliency.json`). Then what a large full-over-segmented gap
can mean. Nothing is computed here beyond choosing rows and the words for the stored intervals.
"""

from __future__ import annotations

from cmrprior.report.html import Section, esc, table_html
from cmrprior.report.summary import number, p_in_words, paired_verdict, read_json, run_level
from cmrprior.runs import RunFolder, paired_test_of
from cmrprior.vocab import init_label, method_label

ANCHOR = "full-vs-segmented"
TITLE = "Full versus segmented images"
INTERPRETATION = (
    "A model trained on segmented images sees only the heart (and the margin around it); a model trained on full "
    "images sees the whole field of view. When full images score clearly higher, the extra information lies outside "
    "the heart. It can be a shortcut: something that goes with the label in this cohort but is no sign of the "
    "disease, such as a scanner, site or protocol marker, burned-in text, a field of view or body habitus that "
    "differs between groups; such a model will fail where that link is broken. It can also be real extra-cardiac "
    "signal (pericardial or pleural effusion, great vessels, liver congestion). Which one it is cannot be told from "
    "AUCs alone: look at where the full-image models look (the in-heart saliency share against its chance level, "
    "and the overlays), and test on a cohort from another site or scanner. When segmented images score as high or "
    "higher, the anatomic prior costs nothing and removes that risk."
)


def _rows_by_config(table: object) -> dict[tuple[str, str], dict]:
    rows = table.get("rows") if isinstance(table, dict) else None
    return {(r.get("backbone"), r.get("init")): r for r in rows or [] if isinstance(r, dict)}


def _gap(c: dict | None, level: float) -> tuple[str, str]:
    """(stored difference segmented - full in words, verdict) of one comparison record (`paired_verdict`)."""
    if c is None:
        return "not compared", "not compared"
    boot = paired_test_of(c)
    diff, lo, hi = number(c.get("difference")), number(boot.get("low")), number(boot.get("high"))
    if diff is None:
        return "n/a", "not compared"
    text = f"{diff:+.3f}"
    if lo is not None and hi is not None:
        text += f" [{lo:+.3f}, {hi:+.3f}]"
    word = paired_verdict(c, level)  # segmented - full; '' without an interval
    verdict = {"higher": "segmented higher", "lower": "full higher", "": "interval not recorded"}.get(word, word)
    return text + p_in_words(c), verdict


def _saliency_full(saliency: object) -> dict[tuple[str, str], list[str]]:
    """(backbone, init) -> 'Grad-CAM 0.41 (chance 0.12)' per method, for full-image models."""
    rows = saliency.get("rows") if isinstance(saliency, dict) else None
    out: dict[tuple[str, str], list[str]] = {}
    for r in rows or []:
        if not isinstance(r, dict) or r.get("images") != "full":
            continue
        mean, chance = number(r.get("mean")), number(r.get("chance"))
        if mean is None:
            continue
        words = f"{method_label(str(r.get('method')))} {mean:.2f}" + (f" (chance {chance:.2f})" if chance is not None else "")
        out.setdefault((r.get("backbone"), r.get("init")), []).append(words)
    return out


def full_vs_segmented_section(run: RunFolder) -> Section:
    """Full- versus segmented-image models per initialisation, with what a large gap can mean."""
    full, seg = _rows_by_config(read_json(run.tables / "table1.json")), _rows_by_config(read_json(run.tables / "table2.json"))
    configs = [k for k in full if k in seg]
    if not configs:
        return Section(ANCHOR, TITLE, "", "needs classifiers trained on both full and segmented images "
                       "(tables/table1.json and tables/table2.json)")
    comparisons = read_json(run.tables / "comparisons.json")
    by_pair = {(c.get("a"), c.get("b")): c for c in comparisons if isinstance(c, dict)} if isinstance(comparisons, list) else {}
    saliency = _saliency_full(read_json(run.tables / "saliency.json"))
    rows, verdicts, level = [], {}, run_level(run)
    for backbone, init in configs:
        text, verdict = _gap(by_pair.get((f"{backbone}/{init}/segmented", f"{backbone}/{init}/full")), level)
        verdicts[(backbone, init)] = verdict
        rows.append((backbone, init_label(init), full[(backbone, init)].get("cell", ""),
                     seg[(backbone, init)].get("cell", ""), text, verdict,
                     "; ".join(saliency.get((backbone, init), [])) or "not run"))
    higher = [f"{init_label(i)} ({b})" for (b, i), v in verdicts.items() if v == "full higher"]
    compared = [v for v in verdicts.values() if v not in ("not compared", "interval not recorded")]
    if higher:
        lead = (f"Full images scored clearly higher than segmented images for {len(higher)} of {len(compared)} "
                f"compared configuration(s): {', '.join(higher)}.")
    elif compared:
        lead = (f"Full images did not score clearly higher than segmented images for any of the {len(compared)} "
                "compared configuration(s).")
    else:
        lead = "The paired comparisons of full and segmented images are not in tables/comparisons.json."
    body = [f"<p>{esc(lead)}</p>",
            table_html(["Backbone", "Initialisation", "Full images (Table 1)", "Segmented images (Table 2)",
                        "Segmented - full (patient bootstrap CI, p)", "Verdict",
                        "In-heart saliency share, full images"], rows,
                       caption="Macro AUC by training images, per initialisation"),
            f"<p>{esc(INTERPRETATION)}</p>"]
    if saliency:
        body.append('<p>Saliency: see <a href="#saliency-table">In-heart saliency score</a> and '
                    '<a href="#saliency-overlays">Saliency overlays</a>; a full-image model whose in-heart share is '
                    "near its chance level is looking mostly outside the heart.</p>")
    else:
        body.append('<p class="missing">Saliency has not been run on this study (`cmrprior saliency --run RUN` writes '
                    "tables/saliency.json): it shows whether the full-image models look at the heart.</p>")
    return Section(ANCHOR, TITLE, "\n".join(body))
