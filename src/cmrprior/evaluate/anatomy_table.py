"""Table 4: the "Anatomy" model (a tabular classifier on cardiac measures) beside the best image models,
with the same intervals as Tables 1-3 and paired comparisons; and the anatomy model's robustness to
perturbed test masks.

* Rows: Anatomy, the hybrids, then the best image-only configuration on each kind of training images as each
  split's inner CV chose it (`cmrprior.evaluate.selection`: the image cell with the best inner-CV AUC of the
  split's training part, scored on that split's test patients; for the held-out cohort, by the inner CV on the
  study cohort). No test result takes part in the choice.
* Intervals: as `cmrprior.evaluate.tables` (corrected resampled t across splits, clipped to [0, 1]).
* Comparisons: Anatomy - best image model for each kind of images (the paired test of the tables,
  `cmrprior.evaluate.compare.compare_cells`), Holm-adjusted over this table's family (the image
  comparisons keep their own family).
* `anatomy_robustness.csv`: macro AUC and accuracy per split and perturbation of the test masks, plus the
  mean over splits (split `mean`).
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmrprior.evaluate.compare import compare_cells, holm_adjust
from cmrprior.evaluate.selection import chosen_counts, is_selected, select_by_inner_cv, selected_key
from cmrprior.evaluate.tables import TableSetup, format_cell, summarise_cells
from cmrprior.runs import PAIRED_TEST_KEY, CellResult, TestOutputs
from cmrprior.utils import atomic
from cmrprior.vocab import ANATOMY, ANATOMY_LABEL, HYBRID_LABEL, hybrid_base, init_label, init_rank

ROBUSTNESS_COLUMNS = ("split", "perturbation", "size_px", "size_slices", "macro_auc", "accuracy", "n_patients")


def _aligned(anatomy: list[CellResult], images: list[CellResult]) -> list[CellResult]:
    """Anatomy results with their test patients in the order of the image cells of the same split."""
    import dataclasses

    order = {r.key.split: r.test.patient_ids for r in images if r.ok}
    out = []
    for r in anatomy:
        ids = order.get(r.key.split)
        if r.ok and ids is not None and sorted(ids) == sorted(r.test.patient_ids):
            pos = {p: i for i, p in enumerate(r.test.patient_ids)}
            idx = [pos[p] for p in ids]
            t = r.test
            r = dataclasses.replace(r, test=TestOutputs(list(ids), [t.labels[i] for i in idx],
                                                        [t.probabilities[i] for i in idx], t.metrics))
        out.append(r)
    return out


def _best_images(images: list[CellResult], kinds: tuple[str, ...]) -> list[tuple[str, list[CellResult]]]:
    """(kind of images, the per-split inner-CV choices among the image cells on them) for each kind with one."""
    return [(kind, chosen) for kind in kinds if (chosen := select_by_inner_cv(images, kind))]


def _label(key: tuple) -> str:
    """Table label of a configuration key (backbone, init, images); hybrids: `vocab.hybrid_base`."""
    if key[1] == ANATOMY:
        return ANATOMY_LABEL
    if is_selected(key):
        return f"Best image model by inner CV, {key[2]} images"
    if hybrid_base(key[2]) is not None:
        return f"{HYBRID_LABEL}: {key[0]} {init_label(key[1])}, {hybrid_base(key[2])} images + measures"
    return f"{key[0]} {init_label(key[1])}, {key[2]} images"


def _choices(hybrids: Sequence[CellResult]) -> str:
    """How often each fusion was chosen over the hybrids' splits, most frequent first."""
    counts = Counter(r.hyperparameters.get("fusion", "?") for r in hybrids if r.ok)
    return "; ".join(f"{name} ({n})" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _pairs(anatomy_key: tuple | None, best: list[tuple], hybrid_keys: list[tuple]) -> list[tuple]:
    """The comparisons of Table 4: Anatomy - best image model per kind of images; each hybrid - Anatomy and
    each hybrid - its own image model (what the measures add to it)."""
    pairs = [(anatomy_key, key) for _, key in best] if anatomy_key is not None else []
    for h in hybrid_keys:
        if anatomy_key is not None:
            pairs.append((h, anatomy_key))
        pairs.append((h, (h[0], h[1], hybrid_base(h[2]))))
    return pairs


def write_anatomy_table(anatomy: list[CellResult], images: list[CellResult], folder: Path, *, setup: TableSetup,
                        masks_line: str, prefix: str = "", hybrids: list[CellResult] = ()) -> Path:
    """Write `{prefix}table4.{md,csv,json}` (module doc); returns the Markdown path."""
    ev, ratio = setup.evaluation, setup.protocol.test_train_ratio
    anatomy = _aligned(anatomy, images)
    kw = dict(test_train_ratio=ratio, n_boot=ev.n_boot, seed=setup.seed, level=ev.level)
    summ_a = summarise_cells(anatomy, **kw)
    best = _best_images(images, setup.images)
    chosen = [r for _, rs in best for r in rs]
    summ_i = summarise_cells(chosen, **kw)
    summ_h = summarise_cells(list(hybrids), **kw)
    rows = [_row(ANATOMY_LABEL, "measures", next(iter(summ_a.values()), None), setup.classes)]
    hybrid_keys = sorted(summ_h, key=lambda k: (k[0], k[2], init_rank(k[1])))
    rows += [_row(_label(k), f"{hybrid_base(k[2])} images + measures", summ_h[k], setup.classes)
             for k in hybrid_keys]
    rows += [_row(f"Best image model by inner CV ({_chosen_words(rs)})", kind, summ_i[selected_key(kind)], setup.classes)
             for kind, rs in best]
    comps = []
    for a, b in _pairs(next(iter(summ_a), None), [(k, selected_key(k)) for k, _ in best], hybrid_keys):
        c = compare_cells(anatomy + list(images) + list(hybrids) + chosen, a, b, test_train_ratio=ratio, n_boot=ev.n_boot,
                          seed=setup.seed)
        if c is not None:
            comps.append({**c, "a_label": _label(a), "b_label": _label(b)})
    for c, adj in zip(comps, holm_adjust([c[PAIRED_TEST_KEY]["p_value"] for c in comps])):
        c["p_holm"] = adj
    families = [r.hyperparameters.get("model", "") for r in anatomy if r.ok]
    notes = [f"Anatomy: a tabular classifier on per-patient cardiac measures (volumes, EF, mass, wall thickness) "
             f"measured from the masks of this study ({masks_line}); family and hyperparameters by stratified CV "
             f"inside each training part. Chosen per split: {', '.join(families) or 'none'}.",
             f"{HYBRID_LABEL}: an image configuration combined with the measures (late fusion of its probabilities "
             "with the Anatomy model's, image weight 0 being the Anatomy model alone and 1 the image model alone, "
             "or stacking on its probabilities and the measures), chosen by CV on the out-of-fold predictions of "
             "the training part (a combination only when it beats the better part alone by more than one standard "
             "error of their per-fold differences); none of it sees a test patient's label. Chosen (splits): "
             f"{_choices(hybrids) or 'none'}.",
             "Best image model by inner CV: in each split, the image-only configuration on that kind of training "
             "images whose k-fold CV inside the split's training part scored best, scored on the split's test "
             "patients (chosen configurations and how many splits chose each in brackets); no test result takes part "
             "in the choice" + ("; held-out cohort: chosen by the inner CV on the study cohort." if prefix else "."),
             "Comparisons: A - B, the paired test of the paired comparisons (t over splits); p (Holm) "
             f"over the {len(comps)} comparison(s) of this table."]
    md = _markdown(rows, comps, setup.classes, notes, prefix)
    atomic.write_text(folder / f"{prefix}table4.md", md)
    atomic.write_json(folder / f"{prefix}table4.json", {"title": "Table 4: anatomy model", "notes": notes,
                                                        "rows": rows, "comparisons": comps})
    _write_csv(rows, setup.classes, folder / f"{prefix}table4.csv")
    return folder / f"{prefix}table4.md"


def _chosen_words(chosen: list[CellResult]) -> str:
    return "; ".join(f"{k.split('/')[0]} {init_label(k.split('/')[1])} x{n}" if k.count("/") == 2 else f"{k} x{n}"
                     for k, n in chosen_counts(chosen))


def _row(model: str, inputs: str, s: dict | None, classes: tuple[str, ...]) -> dict:
    s = s or {}
    return {"model": model, "inputs": inputs, "cell": format_cell(s or None),
            **{k: s.get(k) for k in ("macro_auc", "t_low", "t_high", "boot_low", "boot_high", "accuracy",
                                     "balanced_accuracy", "n_splits", "status", "reason")},
            "per_class_auc": {c: (s.get("per_class_auc") or {}).get(c) for c in classes}}


def _f(v) -> str:
    return "" if v is None else f"{v:.3f}"


def _markdown(rows: list[dict], comps: list[dict], classes: tuple[str, ...], notes: list[str], prefix: str) -> str:
    title = ("Held-out cohort - " if prefix else "") + ("Table 4: anatomy model (cardiac measures), hybrids and the best "
                                                         "image models")
    lines = [f"## {title}", "", "| Model | Inputs | Macro AUC | Accuracy | Balanced acc. | "
             + " | ".join(f"AUC {c}" for c in classes) + " |", "|---" * (5 + len(classes)) + "|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['inputs']} | {r['cell']} | {_f(r['accuracy'])} | {_f(r['balanced_accuracy'])} | "
                     + " | ".join(_f(r["per_class_auc"][c]) for c in classes) + " |")
    if comps:
        lines += ["", "| A | B | splits | diff | 95% CI | p | p (Holm) |",
                  "|---|---|---|---|---|---|---|"]
        for c in comps:
            pb = c[PAIRED_TEST_KEY]
            ci = "" if pb["low"] is None else f"{pb['low']:+.3f} to {pb['high']:+.3f}"
            lines.append(f"| {c['a_label']} | {c['b_label']} | {c['n_splits']} | {c['difference']:+.3f} | {ci} | "
                         f"{_f(pb['p_value'])} | {_f(c['p_holm'])} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes] + [""])


def _write_csv(rows: list[dict], classes: tuple[str, ...], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    keys = ("macro_auc", "t_low", "t_high", "boot_low", "boot_high", "accuracy", "balanced_accuracy", "n_splits")
    w.writerow(["model", "inputs", *keys, *[f"auc_{c}" for c in classes], "status", "cell"])
    for r in rows:
        w.writerow([r["model"], r["inputs"], *("" if r[k] is None else r[k] for k in keys),
                    *("" if r["per_class_auc"][c] is None else r["per_class_auc"][c] for c in classes),
                    r["status"] or "", r["cell"]])
    atomic.write_text(path, buf.getvalue())


def write_robustness(rows: list[dict], path: Path) -> Path:
    """The robustness rows (per split) plus their mean over splits per perturbation (split `mean`); CSV."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["perturbation"], r["size_px"], r["size_slices"])].append(r)
    means = [{"split": "mean", "perturbation": k[0], "size_px": k[1], "size_slices": k[2],
              "macro_auc": float(np.nanmean([r["macro_auc"] for r in g])),
              "accuracy": float(np.mean([r["accuracy"] for r in g])), "n_patients": sum(r["n_patients"] for r in g)}
             for k, g in groups.items()]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROBUSTNESS_COLUMNS)
    w.writeheader()
    w.writerows(rows + means)
    return atomic.write_text(path, buf.getvalue())
