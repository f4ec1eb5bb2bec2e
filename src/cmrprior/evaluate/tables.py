"""Tables 1-3 of the study from cell results, in Markdown, CSV and JSON, with mean and CIs per cell.

* Table 1: macro AUC of classifiers trained on FULL images; rows backbones, columns initialisations
  (None, ImageNet, Full-SSCL, Segmented-SSCL).
* Table 2: the same for classifiers trained on SEGMENTED images.
* Table 3: pre-training images x training images for the SSCL inits: Full-Full, Full-Segmented,
  Segmented-Full, Segmented-Segmented (first = pre-training images, second = training images); then the same
  rows of every other registered pretext in the grid (`cmrprior.vocab.pretexts`), e.g. VICReg Full-Full.

Each cell: mean macro AUC over splits and the 95% corrected resampled t interval across splits
(`cmrprior.utils.intervals.t_interval`: repeated splits of one cohort overlap, so the plain t interval
is too narrow), clipped to [0, 1]; a one-split result (the external test cohort) has the patient bootstrap
interval of its one model instead. A cell without a result says why ("n/a: <reason>"). `metrics.*` lists
every cell's macro AUC, accuracy, balanced accuracy and per-class AUC; `comparisons.*` the paired test
(`cmrprior.evaluate.compare.splits_paired_t`) with Holm-adjusted p-values over the table's family;
`selection.*` the best image configuration chosen inside each split by its inner CV
(`cmrprior.evaluate.selection`), the grid search being part of what each split scores.
Coverage of the interval and false-positive rate of the test, with the model retrained per split:
bench/coverage_retrain.py. The notes
under every table say which protocol ran and how many test patients of each class a split had.

Input: the cells' `cmrprior.runs.CellResult` records; `TableSetup` says which grid and protocol were run.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmrprior.data.splits import ProtocolConfig
from cmrprior.evaluate.ci import patient_bootstrap_ci
from cmrprior.evaluate.compare import PAIRED_OVERLAP_SHARE, compare_cells, holm_adjust
from cmrprior.evaluate.config import EvaluationConfig
from cmrprior.evaluate.metrics import none_if_nan
from cmrprior.evaluate.selection import ANY_IMAGES, chosen_counts, select_by_inner_cv, selected_key
from cmrprior.io.records import ACDC_CLASSES
from cmrprior.runs import HOLDOUT, PAIRED_TEST_KEY, CellResult
from cmrprior.utils import atomic
from cmrprior.utils.intervals import t_interval
from cmrprior.vocab import init_label, pretexts


@dataclass(frozen=True)
class TableSetup:
    """The grid a set of tables covers and how to summarise it.

    run_notes: lines about the run (masks, image modes, classifier, pre-training) that the study writes
    under every table, after the tables' own notes on the metric and its intervals.
    protocol: how the splits were made (scheme, splits, test fraction or folds); it sets the overlap term
    n_test/n_train of the across-split interval. Results of the split "holdout" (external test cohort) are
    one evaluation whatever the protocol says.
    """

    classes: tuple[str, ...]
    backbones: tuple[str, ...]
    inits: tuple[str, ...]
    images: tuple[str, ...]
    evaluation: EvaluationConfig
    seed: int
    run_notes: tuple[str, ...] = ()
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)



def table3_rows() -> tuple[tuple[str, str, str], ...]:
    """(label, init, training images) of Table 3: every registered pretext's rows (`Pretext.table3_rows`), SimCLR's
    first (Full-Full, Full-Segmented, Segmented-Full, Segmented-Segmented)."""
    return tuple(row for p in pretexts() for row in p.table3_rows())


# The study's ACDC macro AUCs (Nakashima et al., Tables 1 and 2), for side-by-side display only.
PAPER_ACDC = {
    ("vgg16", "full"): {"none": 0.542, "imagenet": 0.532, "full_sscl": 0.849, "segmented_sscl": 0.738},
    ("densenet121", "full"): {"none": 0.574, "imagenet": 0.766, "full_sscl": 0.867, "segmented_sscl": 0.765},
    ("vgg16", "segmented"): {"none": 0.746, "imagenet": 0.814, "full_sscl": 0.890, "segmented_sscl": 0.901},
    ("densenet121", "segmented"): {"none": 0.744, "imagenet": 0.890, "full_sscl": 0.888, "segmented_sscl": 0.878},
}


def summarise_cells(results: list[CellResult], *, test_train_ratio: float, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict:
    """{(backbone, init, images): summary dict} over splits (see module doc); `test_train_ratio` is the
    n_test/n_train of one split (`ProtocolConfig.test_train_ratio`) for the corrected resampled t."""
    groups: dict[tuple, list[CellResult]] = defaultdict(list)
    for r in results:
        groups[r.key.config].append(r)
    out = {}
    for key, rs in groups.items():
        ok = sorted([r for r in rs if r.ok], key=lambda r: r.key.split)
        bad = [r for r in rs if not r.ok]
        summary = {"backbone": key[0], "init": key[1], "images": key[2], "n_splits": len(ok), "n_missing": len(bad),
                   "status": "ok" if ok and not bad else ("partial" if ok else (bad[0].status if bad else "missing")),
                   "reason": bad[0].reason if bad else None,
                   "masks_source": rs[0].masks.source, "masks_note": rs[0].masks.note}
        if ok:
            metrics = [r.test.metrics for r in ok]
            aucs = [m.macro_auc for m in metrics]
            values = [np.nan if a is None else a for a in aucs]
            mean, lo, hi = t_interval(values, test_train_ratio, level, bounds=(0.0, 1.0))
            blo = bhi = np.nan
            if len(ok) == 1:  # one trained model (e.g. on the external test cohort): its AUC's patient bootstrap
                r = ok[0]
                _, blo, bhi = patient_bootstrap_ci([(r.test.patient_ids, np.asarray(r.test.labels),
                                                     np.asarray(r.test.probabilities))], n_boot=n_boot, seed=seed,
                                                   level=level)

            def nanmean(values) -> float | None:
                return none_if_nan(float(np.nanmean([np.nan if v is None else v for v in values])))

            summary.update({
                "macro_auc": none_if_nan(mean), "t_low": none_if_nan(lo), "t_high": none_if_nan(hi),
                "boot_low": none_if_nan(blo), "boot_high": none_if_nan(bhi),
                "split_aucs": aucs, "splits": [r.key.split for r in ok],
                "accuracy": none_if_nan(float(np.mean([m.accuracy for m in metrics]))),
                "balanced_accuracy": nanmean(m.balanced_accuracy for m in metrics),
                "per_class_auc": {c: nanmean(m.per_class_auc[c] for m in metrics) for c in ok[0].classes},
                "hyperparameters": [r.hyperparameters for r in ok],
            })
        out[key] = summary
    return out


def format_cell(s: dict | None) -> str:
    """'0.812 [0.770, 0.850] (boot 0.780-0.840)' or 'n/a: reason'."""
    if s is None:
        return "not run"
    if s.get("macro_auc") is None:
        reason = (s.get("reason") or s.get("status") or "no result").splitlines()[0]
        return f"n/a: {reason[:160]}"
    text = f"{s['macro_auc']:.3f}"
    if s.get("t_low") is not None:
        text += f" [{s['t_low']:.3f}, {s['t_high']:.3f}]"
    if s.get("boot_low") is not None:
        text += f" (boot {s['boot_low']:.3f}-{s['boot_high']:.3f})"
    if s.get("n_missing"):
        text += f" ({s['n_missing']} split(s) missing)"
    return text


def _table_rows(summ: dict, backbones: list[str], columns: list[tuple[str, str, str]]) -> list[dict]:
    rows = []
    for b in backbones:
        for name, init, images in columns:
            s = summ.get((b, init, images))
            rows.append({"backbone": b, "column": name, "init": init, "images": images,
                         **({} if s is None else {k: s.get(k) for k in ("macro_auc", "t_low", "t_high", "boot_low", "boot_high",
                                                                         "n_splits", "status", "reason", "split_aucs")}),
                         "cell": format_cell(s)})
    return rows


def _markdown(title: str, rows: list[dict], backbones: list[str], columns: list[str], notes: list[str],
              paper: dict | None) -> str:
    lines = [f"## {title}", "", "| Backbone | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for b in backbones:
        cells = [r["cell"] for r in rows if r["backbone"] == b]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
        if paper and b in paper:
            lines.append(f"| {b} (paper, ACDC) | " + " | ".join(f"{v:.3f}" if v is not None else "" for v in paper[b]) + " |")
    lines += [""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _csv(rows: list[dict]) -> str:
    cols = ["backbone", "column", "init", "images", "macro_auc", "t_low", "t_high", "boot_low", "boot_high",
            "n_splits", "status", "reason", "cell"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def default_comparisons(backbones: list[str], inits: list[str], images: list[str]) -> list[tuple[tuple, tuple]]:
    """Pairs (A, B) of cells (backbone, init, images) whose difference A - B is tested."""
    pairs = []
    for b in backbones:
        for im in images:
            for a, c in (pair for p in pretexts() for pair in p.comparisons):  # each registered pretext's questions
                if a in inits and c in inits:
                    pairs.append(((b, a, im), (b, c, im)))
        if "segmented" in images and "full" in images:
            for i in inits:
                pairs.append(((b, i, "segmented"), (b, i, "full")))
            for p in pretexts():  # the anatomic prior at both stages against none, for a method with both inits
                full, seg = p.init_on("full"), p.init_on("segmented")
                if full is not None and seg is not None and seg.name in inits and full.name in inits:
                    pairs.append(((b, seg.name, "segmented"), (b, full.name, "full")))
    return pairs




def test_patients_note(results: list[CellResult], classes: tuple[str, ...]) -> str:
    """'Test patients per class and split: NOR 6, DCM 5-6 (17-18 per split).' from the scored cells."""
    per_split: dict[str, np.ndarray] = {}
    for r in results:
        if r.ok and r.key.split not in per_split:
            per_split[r.key.split] = np.bincount(np.asarray(r.test.labels, dtype=np.int64), minlength=len(classes))
    if not per_split:
        return "Test patients per class and split: no scored split."
    counts = np.vstack(list(per_split.values()))

    def span(v: np.ndarray) -> str:
        return f"{v.min()}" if v.min() == v.max() else f"{v.min()}-{v.max()}"

    parts = ", ".join(f"{c} {span(counts[:, k])}" for k, c in enumerate(classes))
    return f"Test patients per class and split: {parts} ({span(counts.sum(1))} per split, {len(per_split)} split(s))."


def _protocol_note(results: list[CellResult], protocol: ProtocolConfig) -> str:
    if {r.key.split for r in results} == {HOLDOUT}:
        return "Protocol: external test cohort (trained on the whole study cohort, scored once on the test cohort)."
    return f"Protocol: {protocol.describe()}."


def write_tables(results: list[CellResult], folder: Path, *, setup: TableSetup, prefix: str = "") -> dict:
    """Write table1-3, metrics and comparisons (MD/CSV/JSON) into `folder`; returns {name: md path}."""
    folder = Path(folder)
    ev = setup.evaluation
    classes = setup.classes
    ratio = setup.protocol.test_train_ratio
    summ = summarise_cells(results, test_train_ratio=ratio, n_boot=ev.n_boot, seed=setup.seed, level=ev.level)
    backbones = list(setup.backbones)
    n_splits = len({r.key.split for r in results})
    pct = f"{int(ev.level * 100)}%"
    notes = [
        f"Macro one-vs-rest AUC on test patients (binary AUC for 2 classes); classes: {', '.join(classes)}.",
        _protocol_note(results, setup.protocol),
        test_patients_note(results, classes),
        f"Cell: mean over {n_splits} split(s) [{pct} corrected resampled t interval across splits (Nadeau & Bengio "
        f"2003: variance of the mean s^2 (1/J + n_test/n_train), n_test/n_train = {ratio:.3g}, df J - 1), clipped to "
        "[0, 1]; with the model retrained per split it covers the expected AUC of the training procedure at about "
        "the nominal level in bench/coverage_retrain.py, where the plain t (overlapping splits taken as "
        "independent) and the patient bootstrap (models fixed) fall short]. One split (e.g. the external test "
        f"cohort): (boot: {pct} percentile bootstrap over its test patients, {ev.n_boot} resamples, stratified by "
        "class: the interval of that one model's AUC).",
        *setup.run_notes,
    ]
    is_acdc = tuple(classes) == ACDC_CLASSES
    written = {}
    specs = [("table1", "Table 1: macro AUC, classifier trained on full images", [(init_label(i), i, "full") for i in setup.inits], "full"),
             ("table2", "Table 2: macro AUC, classifier trained on segmented images", [(init_label(i), i, "segmented") for i in setup.inits], "segmented"),
             ("table3", "Table 3: pre-training images - training images (SSCL inits)",
              [t for t in table3_rows() if t[1] in setup.inits and t[2] in setup.images], None)]
    for name, title, columns, images in specs:
        if images is not None and images not in setup.images:
            continue
        if not columns:
            continue
        rows = _table_rows(summ, backbones, columns)
        paper = None
        if is_acdc:
            paper = {}
            for b in backbones:
                if images is not None and (b, images) in PAPER_ACDC:
                    paper[b] = [PAPER_ACDC[(b, images)].get(i) for _, i, _ in columns]
                elif images is None and (b, "full") in PAPER_ACDC:
                    paper[b] = [PAPER_ACDC[(b, im)].get(i) for _, i, im in columns]
        md = _markdown(("Held-out cohort - " if prefix else "") + title, rows, backbones, [col[0] for col in columns], notes, paper)
        atomic.write_text(folder / f"{prefix}{name}.md", md)
        atomic.write_text(folder / f"{prefix}{name}.csv", _csv(rows))
        atomic.write_json(folder / f"{prefix}{name}.json", {"title": title, "notes": notes, "rows": rows})
        written[prefix + name] = folder / f"{prefix}{name}.md"
    written[prefix + "metrics"] = _write_metrics(summ, folder, classes, prefix, notes)
    written[prefix + "comparisons"] = _write_comparisons(results, setup, folder, prefix, notes[1:3])
    written[prefix + "selection"] = _write_selection(results, setup, folder, prefix, notes[1:4])
    return written


def selection_rows(results: list[CellResult], setup: TableSetup) -> list[dict]:
    """One row per kind of training images and one over all of them: the image configuration that each split's
    inner CV chose (`cmrprior.evaluate.selection`), summarised over splits like a cell of the tables."""
    ev = setup.evaluation
    rows = []
    for images in [*setup.images, ANY_IMAGES] if len(setup.images) > 1 else list(setup.images):
        chosen = select_by_inner_cv(results, images)
        s = summarise_cells(chosen, test_train_ratio=setup.protocol.test_train_ratio, n_boot=ev.n_boot,
                            seed=setup.seed, level=ev.level).get(selected_key(images))
        if s is None:
            continue
        rows.append({"images": images, **{k: s.get(k) for k in ("macro_auc", "t_low", "t_high", "boot_low", "boot_high",
                                                                  "n_splits", "split_aucs", "splits")},
                     "cell": format_cell(s),
                     "chosen": [{"split": r.key.split, "config": r.hyperparameters["selected"],
                                 "inner_cv_auc": r.hyperparameters["inner_cv_auc"], "test_auc": r.test.metrics.macro_auc,
                                 "n_candidates": r.hyperparameters["n_candidates"]} for r in chosen],
                     "chosen_counts": [list(kv) for kv in chosen_counts(chosen)]})
    return rows


def _write_selection(results: list[CellResult], setup: TableSetup, folder: Path, prefix: str,
                     protocol_notes: list[str]) -> Path:
    """`{prefix}selection.{md,json}`: `selection_rows`; returns the Markdown path."""
    rows = selection_rows(results, setup)
    notes = [*protocol_notes,
             "Chosen by inner CV: in each split, among its finished image cells (on the row's training images; 'any': "
             "all of them), the one with the highest mean macro AUC of the k-fold CV inside the split's training part "
             "(the cells' own hyperparameter search; no test patient takes part); the split scores that cell's test "
             "patients. The choice is part of what each split scores, so the interval (corrected resampled t across "
             "splits, as the tables) covers the whole procedure, grid search included. The highest mean test AUC of "
             "the grid (metrics.*) is chosen on the test results and is optimistic."
             + (" Held-out cohort: chosen by the inner CV of the cells trained on the study cohort; nothing is chosen on "
                "the held-out cohort." if prefix else "")]
    lines = [("## Held-out cohort - " if prefix else "## ") + "Best image configuration chosen by inner CV in each split", "",
             "| Training images | Macro AUC | Chosen (splits) |", "|---|---|---|"]
    for r in rows:
        counts = ", ".join(f"{k} ({n})" for k, n in r["chosen_counts"])
        lines.append(f"| {r['images']} | {r['cell']} | {counts} |")
    lines += [""] + [f"- {n}" for n in notes]
    atomic.write_text(folder / f"{prefix}selection.md", "\n".join(lines) + "\n")
    atomic.write_json(folder / f"{prefix}selection.json", {"title": "Best image configuration chosen by inner CV",
                                                            "notes": notes, "rows": rows})
    return folder / f"{prefix}selection.md"


def _write_metrics(summ: dict, folder: Path, classes: tuple[str, ...], prefix: str, notes: list[str]) -> Path:
    """Every cell's metrics (MD/CSV/JSON); returns the Markdown path."""
    mrows = sorted(summ.values(), key=lambda s: (s["backbone"], s["images"], s["init"]))
    lines = ["## Metrics per cell (means over splits)", "",
             "| Backbone | Init | Images | Macro AUC | Accuracy | Balanced acc. | " + " | ".join(f"AUC {k}" for k in classes) + " |",
             "|---" * (6 + len(classes)) + "|"]
    for s in mrows:
        f = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        pcs = [f((s.get("per_class_auc") or {}).get(k)) for k in classes]
        lines.append(f"| {s['backbone']} | {init_label(s['init'])} | {s['images']} | {format_cell(s)} | {f(s.get('accuracy'))} | "
                     f"{f(s.get('balanced_accuracy'))} | " + " | ".join(pcs) + " |")
    lines += [""] + [f"- {n}" for n in notes]
    atomic.write_text(folder / f"{prefix}metrics.md", "\n".join(lines) + "\n")
    atomic.write_json(folder / f"{prefix}metrics.json", mrows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["backbone", "init", "images", "macro_auc", "t_low", "t_high", "boot_low", "boot_high", "accuracy",
                "balanced_accuracy", *[f"auc_{k}" for k in classes], "status", "reason"])
    for s in mrows:
        pc = s.get("per_class_auc") or {}
        w.writerow([s["backbone"], s["init"], s["images"], *[s.get(k) for k in ("macro_auc", "t_low", "t_high", "boot_low",
                    "boot_high", "accuracy", "balanced_accuracy")], *[pc.get(k) for k in classes], s["status"], s.get("reason")])
    atomic.write_text(folder / f"{prefix}metrics.csv", buf.getvalue())
    return folder / f"{prefix}metrics.md"


def _write_comparisons(results: list[CellResult], setup: TableSetup, folder: Path, prefix: str,
                       protocol_notes: list[str]) -> Path:
    """The paired comparisons of `default_comparisons` (MD/CSV/JSON), Holm-adjusted bootstrap p over this
    family; returns the Markdown path."""
    comps = []
    for a, b in default_comparisons(list(setup.backbones), list(setup.inits), list(setup.images)):
        r = compare_cells(results, a, b, test_train_ratio=setup.protocol.test_train_ratio,
                          n_boot=setup.evaluation.n_boot, seed=setup.seed)
        if r is not None:
            comps.append(r)
    for r, adj in zip(comps, holm_adjust([r[PAIRED_TEST_KEY]["p_value"] for r in comps])):
        r["p_holm"] = adj
    f3 = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["## Paired comparisons (A - B, macro AUC, same test patients)", "",
             "| A | B | splits | diff | 95% CI | p | p (Holm) |", "|---|---|---|---|---|---|---|"]
    for r in comps:
        pb = r[PAIRED_TEST_KEY]
        ci = "" if pb["low"] is None else f"{pb['low']:+.3f} to {pb['high']:+.3f}"
        lines.append(f"| {r['a']} | {r['b']} | {r['n_splits']} | {r['difference']:+.3f} | {ci} | {f3(pb['p_value'])} | "
                     f"{f3(r['p_holm'])} |")
    notes = [*protocol_notes,
             "Paired test: t test of the per-split differences of macro AUC (the models retrained per split), "
             f"variance of their mean s^2 (1/J + {PAIRED_OVERLAP_SHARE:g} n_test/n_train), df J - 1: the corrected "
             "resampled t's overlap term reduced, as A and B trained on the same patients share what those patients "
             "do to both. For two copies of one training procedure it rejects at 4-5 % at the 5 % level in "
             "bench/coverage_retrain.py (100 and 300 patients), where DeLong per split and the patient bootstrap "
             "(models fixed) run hot and the fully corrected t is conservative. One split (the external test cohort: "
             f"one model each): the patient paired bootstrap of those two models ({setup.evaluation.n_boot} resamples).",
             f"p (Holm): that p adjusted by Holm's step-down method over the {len(comps)} comparison(s) of this "
             "table (family-wise error)."]
    lines += [""] + [f"- {n}" for n in notes]
    atomic.write_text(folder / f"{prefix}comparisons.md", "\n".join(lines) + "\n")
    atomic.write_json(folder / f"{prefix}comparisons.json", comps)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["a", "b", "n_splits", "difference", "ci_low", "ci_high", "p", "p_holm"])
    for r in comps:
        w.writerow([r["a"], r["b"], r["n_splits"], r["difference"], r[PAIRED_TEST_KEY]["low"],
                    r[PAIRED_TEST_KEY]["high"], r[PAIRED_TEST_KEY]["p_value"], r["p_holm"]])
    atomic.write_text(folder / f"{prefix}comparisons.csv", buf.getvalue())
    return folder / f"{prefix}comparisons.md"
