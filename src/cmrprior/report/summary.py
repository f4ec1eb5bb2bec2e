"""The report's opening summary: the answer first, read from what the study wrote (nothing is computed here).

First the primary analysis that `config.yaml` names (`primary:`, fixed before the results), on the study's
splits and on the held-out cohort (`tables/holdout_*`). From `tables/selection.json`: the best image
configuration as each split's inner CV chose it (the choice inside the protocol, with its interval), and the
held-out cohort's. From `tables/metrics.json`: the best configuration by mean macro AUC, with its interval
across splits, the number of splits and the patient-bootstrap interval, labelled as selected after the fact. From `tables/comparisons.json`: the main paired
comparisons in plain words, in a fixed order (the study's questions, not the smallest p first). From
`tables/table4.json`: the Anatomy model's AUC and its difference to the best image models. From
`run.json`, `study.json` and `config.yaml`: the cohort, where the masks for segmented images came from and
whether they were out-of-sample for the patients they were used on ("not recorded" when the run does not say).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cmrprior.report.html import Section, esc
from cmrprior.report.qc import masks_source_label
from cmrprior.runs import DEFAULT_LEVEL, RunFolder, RunInfo, paired_test_of
from cmrprior.vocab import ANATOMY, IMAGES, init_label, init_names, pretexts

MAX_COMPARISONS = 8


def main_init_pairs() -> tuple[tuple[str, str], ...]:
    """The study's questions, in order, for each registered pretext in turn (`Pretext.comparisons`): does it
    beat no pre-training, does the anatomic prior in its pre-training help, does it beat ImageNet, then how
    it compares with other methods; pairs of initialisations compared on the same training images. For
    SimCLR: Segmented-SSCL vs None, Full-SSCL vs None, Segmented- vs Full-SSCL, each vs ImageNet."""
    def question(p, pair: tuple[str, str]) -> tuple[int, int]:
        a, b = pair
        own = {i.name for i in p.inits}
        kind = 0 if b == "none" else 1 if b in own else 2 if b == "imagenet" else 3
        return kind, 0 if a == getattr(p.init_on("segmented"), "name", None) else 1

    return tuple(pair for p in pretexts() for pair in sorted(p.comparisons, key=lambda pair: question(p, pair)))


def _key_pattern() -> re.Pattern:
    """'backbone/init/images' keys of the registered inits."""
    return re.compile(rf"\b([\w.-]+)/({'|'.join(init_names())})/({'|'.join(IMAGES)})\b")


def config_label(backbone: str, init: str, images: str) -> str:
    """'vgg16, Segmented-SSCL, segmented images' for a cell's (backbone, init, images)."""
    return f"{backbone}, {init_label(init)}, {images} images"


def label_keys(text: str) -> str:
    """Run-folder keys in table text as labels: 'vgg16/full_sscl/full' -> 'vgg16, Full-SSCL, full images',
    'ground_truth' -> the masks source's label."""
    text = _key_pattern().sub(lambda m: config_label(m.group(1), m.group(2), m.group(3)), text)
    return re.sub(r"\bground_truth\b", masks_source_label("ground_truth"), text)


def read_json(path: Path) -> Any:
    """The parsed JSON file; None when it is missing or unreadable (the section then says so)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def number(x: object) -> float | None:
    """A stored number as float; None for anything else (None, NaN, text)."""
    return float(x) if isinstance(x, (int, float)) and x == x else None


def auc_words(m: dict) -> str:
    """'macro AUC <strong>0.874</strong> [0.810, 0.938] (t-interval across 5 split(s)), patient bootstrap
    0.830-0.910' of one summary entry (metrics.json or a Table 4 row)."""
    text = f"macro AUC <strong>{m['macro_auc']:.3f}</strong>"
    lo, hi = number(m.get("t_low")), number(m.get("t_high"))
    n = m.get("n_splits")
    if lo is not None and hi is not None:
        text += f" [{lo:.3f}, {hi:.3f}] (t-interval across {n} split(s))"
    elif n:
        text += f" ({n} split(s))"
    blo, bhi = number(m.get("boot_low")), number(m.get("boot_high"))
    if blo is not None and bhi is not None:
        text += f", patient bootstrap {blo:.3f}-{bhi:.3f}"
    if number(m.get("accuracy")) is not None:
        text += f", accuracy {m['accuracy']:.3f}"
    return text


def best_configuration(metrics: list[dict]) -> str | None:
    """The configuration with the highest mean macro AUC, in words; None when no configuration was scored."""
    scored = [m for m in metrics if isinstance(m, dict) and number(m.get("macro_auc")) is not None]
    if not scored:
        return None
    b = max(scored, key=lambda m: m["macro_auc"])
    what = f"{init_label(b.get('init', '?'))} initialisation, {b.get('images', '?')} training images, {b.get('backbone', '?')}"
    return f"<strong>{esc(what)}</strong>: {auc_words(b)}; best of {len(scored)} scored configuration(s)."


def _selection_row(table: Any) -> dict | None:
    """The row over every kind of training images of a selection table (else its only row)."""
    rows = [r for r in (table.get("rows") or []) if isinstance(r, dict)] if isinstance(table, dict) else []
    scored = [r for r in rows if number(r.get("macro_auc")) is not None]
    return next((r for r in scored if r.get("images") == "any"), scored[0] if len(scored) == 1 else None)


def selection_summary(run: RunFolder) -> str | None:
    """The best image configuration chosen inside each split by its inner CV, and on the held-out cohort."""
    row = _selection_row(read_json(run.tables / "selection.json"))
    if row is None:
        return None

    def chosen(r: dict) -> str:
        counts = r.get("chosen_counts") if isinstance(r.get("chosen_counts"), list) else []
        return "; ".join(f"{label_keys(str(kn[0]))} ({kn[1]} split(s))" for kn in counts
                         if isinstance(kn, list) and len(kn) == 2)

    text = ("Best image configuration chosen inside each split by the inner CV of its training part (the choice is "
            f"part of what each split scores): {auc_words(row)}; chosen: {esc(chosen(row))}.")
    held = _selection_row(read_json(run.tables / "holdout_selection.json"))
    if held is not None:
        text += (" Held-out cohort (chosen by the inner CV on the study cohort): " + auc_words(held).replace(" (1 split(s))", "")
                 + f"; chosen: {esc(chosen(held))}.")
    return text


def _primary_entry(run: RunFolder, primary: str, prefix: str) -> tuple[str, dict | None]:
    """(label, summary entry) of the primary analysis in the tables with `prefix` ("" or "holdout_")."""
    if primary == ANATOMY:
        table4 = read_json(run.tables / f"{prefix}table4.json")
        rows = table4.get("rows") if isinstance(table4, dict) else None
        return "Anatomy model (cardiac measures)", rows[0] if rows else None
    key = _parse(primary)
    metrics = read_json(run.tables / f"{prefix}metrics.json")
    label = config_label(*key) if key else primary
    found = [m for m in metrics or [] if isinstance(m, dict) and key == (m.get("backbone"), m.get("init"), m.get("images"))]
    return label, found[0] if found else None


def primary_summary(run: RunFolder) -> str:
    """The primary analysis named in config.yaml, on the study's splits and on the held-out cohort."""
    config = _read_yaml(run.config_yaml)
    primary = config.get("primary") if isinstance(config, dict) else None
    if not primary:
        return ('<span class="missing">Primary analysis: none named in the config (<code>primary:</code>); every '
                "figure below was picked after the results were seen.</span>")
    label, entry = _primary_entry(run, primary, "")
    scored = entry is not None and number(entry.get("macro_auc")) is not None
    text = (f"Primary analysis (named in the config before the results): <strong>{esc(label)}</strong>: "
            + (auc_words(entry) if scored else "not scored") + ".")
    _, held = _primary_entry(run, primary, "holdout_")
    if held is not None and number(held.get("macro_auc")) is not None:
        text += (" Held-out cohort (scored once; nothing was chosen on it): "
                 + auc_words(held).replace(" (1 split(s))", "") + ".")
    return text


def _parse(key: object) -> tuple[str, str, str] | None:
    m = _key_pattern().fullmatch(key) if isinstance(key, str) else None
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _rank(a: tuple[str, str, str], b: tuple[str, str, str]) -> tuple[int, int]:
    main, names = main_init_pairs(), init_names()
    if a[2] == b[2] and (a[1], b[1]) in main:
        return main.index((a[1], b[1])), -IMAGES.index(a[2]) if a[2] in IMAGES else 0
    if a[1] == b[1]:  # segmented vs full training images, same initialisation
        return len(main), names.index(a[1]) if a[1] in names else 0
    return len(main) + 1, 0


def p_in_words(c: dict) -> str:
    """', p (Holm) = 0.012' from a comparison record: the Holm-adjusted p the tables wrote over their family of
    comparisons, read, never recomputed; tables without one (written before Holm) give their bootstrap p,
    named unadjusted; '' when neither is stored."""
    boot = paired_test_of(c)
    p, name = number(c.get("p_holm")), "p (Holm)"
    if p is None:
        p, name = number(boot.get("p_value")), "p (unadjusted)"
    if p is None:
        return ""
    return f", {name} < 0.001" if p < 0.001 else f", {name} = {p:.3f}"


NO_DIFFERENCE = "no clear difference"


def paired_verdict(c: dict, level: float = DEFAULT_LEVEL) -> str:
    """A - B of a comparison record in a word: 'higher' or 'lower' when its paired interval (at `level`) excludes 0
    and its Holm-adjusted p, where the record has one, is below 1 - `level` (the interval is per comparison, the
    adjusted p answers for the table's family); else 'no clear difference' (with "after Holm's adjustment" when
    only the adjustment took the direction away); '' without an interval."""
    boot = paired_test_of(c)
    lo, hi, holm = number(boot.get("low")), number(boot.get("high")), number(c.get("p_holm"))
    if lo is None or hi is None:
        return ""
    if not (lo > 0 or hi < 0):
        return NO_DIFFERENCE
    if holm is not None and holm >= 1 - level:
        return f"{NO_DIFFERENCE} after Holm's adjustment"
    return "higher" if lo > 0 else "lower"


def comparison_in_words(c: dict, level: float = DEFAULT_LEVEL) -> str | None:
    """'Segmented-SSCL vs None on segmented images, vgg16: +0.120 macro AUC [+0.050, +0.190], p (Holm) = 0.003
    (higher)'. The direction is said when the interval (at `level`, the run's `evaluation.level`) excludes 0 and the
    Holm-adjusted p, where the record has one, is below 1 - `level`."""
    a, b = _parse(c.get("a")), _parse(c.get("b"))
    boot = paired_test_of(c)
    diff, lo, hi = number(c.get("difference")), number(boot.get("low")), number(boot.get("high"))
    if a is None or b is None or diff is None:
        return None
    if a[2] == b[2]:
        what = f"{init_label(a[1])} vs {init_label(b[1])} on {a[2]} images"
    elif a[1] == b[1]:
        what = f"{a[2].capitalize()} vs {b[2]} training images with {init_label(a[1])}"
    else:
        what = f"{init_label(a[1])} on {a[2]} images vs {init_label(b[1])} on {b[2]} images"
    text = f"{what}, {a[0]}: {diff:+.3f} macro AUC"
    if lo is not None and hi is not None:
        text += f" [{lo:+.3f}, {hi:+.3f}]"
    verdict = paired_verdict(c, level)  # '' without an interval
    text += p_in_words(c)
    return text + (f" ({verdict}; {c.get('n_splits')} split(s))" if verdict else "")


def main_comparisons(comparisons: list[dict], level: float = DEFAULT_LEVEL) -> tuple[list[str], int]:
    """Up to MAX_COMPARISONS comparisons in words, in the study's order; and how many there are in all."""
    keyed = []
    for i, c in enumerate(x for x in comparisons if isinstance(x, dict)):
        a, b = _parse(c.get("a")), _parse(c.get("b"))
        words = comparison_in_words(c, level)
        if a and b and words:
            keyed.append((_rank(a, b), i, words))
    return [w for _, _, w in sorted(keyed)[:MAX_COMPARISONS]], len(keyed)


def _out_of_sample(records: list[dict], key: str = "masks_out_of_sample") -> str:
    """`key` of run.json / study.json (the study cohort's; `test_masks_out_of_sample` the --test cohort's), in
    words; else 'not recorded'."""
    for d in records:
        value = d.get(key)
        if isinstance(value, bool):
            return ("yes: every patient's masks come from a model that did not see that patient" if value
                    else "no: some masks come from a model that was trained on the same patients")
        if value is not None:
            return str(value)  # recorded as unknown (None: oracle masks, or a given model): keep looking
    return "not recorded"


def masks_summary(run: RunFolder, info: RunInfo, study: dict | None) -> str:
    words = masks_source_label(info.masks.source)
    if info.masks.source == "segmenter":
        config = _read_yaml(run.config_yaml)
        model = ((config or {}).get("masks") or {}).get("model") if isinstance(config, dict) else None
        words += f", model {model}" if model else ", shipped model"
    text = f"Masks for segmented images: <strong>{esc(words)}</strong>"
    text += f" ({esc(info.masks.note)})" if info.masks.note else ""
    records = [d for d in (read_json(run.run_json), study) if isinstance(d, dict)]
    text += f"; out-of-sample: {esc(_out_of_sample(records))}."
    if info.test_masks is not None:
        text += (f" Test cohort's masks: {esc(info.test_masks.note)}; out-of-sample: "
                 f"{esc(_out_of_sample(records, 'test_masks_out_of_sample'))}.")
    return text


def run_level(run: RunFolder) -> float:
    """The run's confidence level (`evaluation.level` in its config.yaml; the default when not written)."""
    config = _read_yaml(run.config_yaml)
    level = ((config or {}).get("evaluation") or {}).get("level") if isinstance(config, dict) else None
    return float(level) if isinstance(level, (int, float)) and 0 < level < 1 else DEFAULT_LEVEL


def _read_yaml(path: Path) -> Any:
    try:
        import yaml

        return yaml.safe_load(path.read_text())
    except (OSError, ValueError, ImportError):
        return None


def anatomy_summary(table4: Any) -> str | None:
    """'Anatomy model (cardiac measures): 0.95 [...]; accuracy 0.90; vs the best image model: ...; best hybrid:
    ...' from Table 4."""
    if not isinstance(table4, dict) or not table4.get("rows"):
        return None
    row = table4["rows"][0]
    text = f"Anatomy model (cardiac measures, tabular classifier): {esc(row.get('cell', ''))}"
    if number(row.get("accuracy")) is not None:
        text += f", accuracy {row['accuracy']:.3f}"
    comps = [c for c in table4.get("comparisons") or [] if number(c.get("difference")) is not None
             and number(paired_test_of(c).get("low")) is not None]

    def said(c: dict) -> str:
        pb = paired_test_of(c)
        return (f"{esc(c.get('a_label') or label_keys(c['a']))} - {esc(c.get('b_label') or label_keys(c['b']))}: "
                f"{c['difference']:+.3f} [{pb['low']:+.3f}, {pb['high']:+.3f}] (p Holm {c.get('p_holm', float('nan')):.3f})")

    first = row.get("model")
    text += "".join(f"; {said(c)}" for c in comps if c.get("a_label", first) == first)
    hybrids = [r for r in table4["rows"][1:] if str(r.get("model", "")).startswith("Hybrid") and number(r.get("macro_auc")) is not None]
    if hybrids:
        top = max(hybrids, key=lambda r: r["macro_auc"])
        text += f". Best hybrid: {esc(top['model'])} {esc(top.get('cell', ''))}"
        text += "".join(f"; {said(c)}" for c in comps if c.get("a_label") == top["model"])
    return text + ' (<a href="#anatomy">Anatomy model</a>).'


def duplicates_words(study: dict) -> str:
    """' Duplicate scans kept once: ...' from study.json's `duplicate_scans` (per cohort, (kept, left out)); ''
    when none was found or the run does not say."""
    found = study.get("duplicate_scans") if isinstance(study.get("duplicate_scans"), dict) else {}
    parts = []
    for cohort, name in (("data", "study cohort"), ("test_data", "test cohort")):
        pairs = [d for d in found.get(cohort) or [] if isinstance(d, list) and len(d) == 2]
        if pairs:
            parts.append(f"{name}: " + ", ".join(f"{esc(d[1])} = {esc(d[0])}" for d in pairs))
    if not parts:
        return ""
    return (' <strong class="missing">Duplicate scans kept once</strong> (the same images under two ids; the second '
            "id left out; qc/duplicate_images.csv, holdout/qc/ for the test cohort): " + "; ".join(parts) + ".")


def summary_section(run: RunFolder, info: RunInfo, study: dict | None) -> Section:
    items = [primary_summary(run)]
    selected = selection_summary(run)
    if selected:
        items.append(selected)
    metrics = read_json(run.tables / "metrics.json")
    best = best_configuration(metrics) if isinstance(metrics, list) else None
    items.append("Best image configuration, selected after the fact on these test results (optimistic): " + best if best else
                 '<span class="missing">Best configuration: not available (tables/metrics.json has no scored '
                 "configuration)</span>")
    comparisons = read_json(run.tables / "comparisons.json")
    words, total = main_comparisons(comparisons, run_level(run)) if isinstance(comparisons, list) else ([], 0)
    if words:
        more = f" ({len(words)} of {total}; all in <a href=\"#comparisons\">Paired comparisons</a>)" if total > len(words) else ""
        items.append("Paired comparisons (A - B on the same test patients; interval and p of the paired test over splits, p Holm-adjusted over the "
                     "table's comparisons)" + more
                     + ":<ul>" + "".join(f"<li>{esc(w)}</li>" for w in words) + "</ul>")
    anatomy = anatomy_summary(read_json(run.tables / "table4.json"))
    if anatomy:
        items.append(anatomy)
    items.append(masks_summary(run, info, study))
    if study:
        n, splits = study.get("n_patients"), study.get("n_splits")
        items.append(f"Cohort: {esc(n)} patients, classes {esc(', '.join(info.classes))}; {esc(splits)} patient-level "
                     f"split(s); data {esc(study.get('data', 'not recorded'))}." + duplicates_words(study))
    body = "<ul class=\"summary\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return Section("summary", "Summary", body)
