"""The in-heart saliency table: one more table of the study, in Markdown, CSV and JSON.

Rows: backbone x training images, per saliency method; columns: the initialisations (as Tables 1 and 2),
each cell the mean in-heart share over splits [95% corrected resampled t interval across splits, as in the
study tables, `cmrprior.evaluate.ci`] (one split, the held-out cohort: boot, the bootstrap over patients), formatted by the study tables' `cmrprior.evaluate.tables.format_cell`; plus the
chance level (the mean heart-area fraction: the score of a uniform map). Held-out cells (split
"holdout") go into `holdout_saliency.*`.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from cmrprior.errors import ConfigError
from cmrprior.evaluate.tables import format_cell
from cmrprior.saliency.score import summarize_scores
from cmrprior.utils import atomic
from cmrprior.vocab import init_label, init_names, init_rank, method_label, method_rank

COLUMNS = ["method", "backbone", "init", "images", "mean", "t_low", "t_high", "boot_low", "boot_high", "n_splits",
           "n_patients", "chance", "cell"]


def saliency_table(records: Sequence[dict], *, test_train_ratio: float, n_boot: int = 1000, level: float = 0.95,
                   seed: int = 0, unavailable: Sequence[dict] = ()) -> list[dict]:
    """Summary rows from per-cell score records (the `scores.json` dicts of `cmrprior.saliency.run`).

    One row per (method, backbone, init, images): the `ScoreSummary` of the patients' scores grouped by
    split, and `chance`, the same mean over the patients' heart-area fractions. `unavailable`: cells
    without a model ({"backbone", "init", "images", "reason"}); configurations with no scored split get an
    "n/a: reason" row per method, as in the study's tables.
    """
    groups: dict[tuple, dict] = defaultdict(lambda: {"scores": {}, "chance": {}})
    for rec in records:
        for method, m in rec["methods"].items():
            g = groups[(method, rec["backbone"], rec["init"], rec["images"])]
            g["scores"][str(rec["split"])] = m["patients"]
            g["chance"][str(rec["split"])] = m["chance"]
    rows = []
    for (method, backbone, init, images), g in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        row = {"method": method, "backbone": backbone, "init": init, "images": images}
        try:
            s = summarize_scores(g["scores"], test_train_ratio=test_train_ratio, level=level, n_boot=n_boot, seed=seed)
            chance = summarize_scores(g["chance"], test_train_ratio=test_train_ratio, level=level, n_boot=0, seed=seed).mean
        except ConfigError as exc:
            row.update({"mean": None, "reason": str(exc), "cell": f"n/a: {exc}"})
            rows.append(row)
            continue
        nan_none = lambda v: None if v != v else float(v)  # noqa: E731
        row.update({"mean": s.mean, "t_low": nan_none(s.ci_splits[0]), "t_high": nan_none(s.ci_splits[1]),
                    "boot_low": nan_none(s.ci_boot[0]), "boot_high": nan_none(s.ci_boot[1]), "n_splits": s.n_splits,
                    "n_patients": s.n_patients, "split_means": list(s.split_means), "chance": chance})
        row["cell"] = format_cell({"macro_auc": row["mean"], **{k: row[k] for k in ("t_low", "t_high", "boot_low", "boot_high")}})
        rows.append(row)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    done = {(r["backbone"], r["init"], r["images"]) for r in rows}
    for u in unavailable:
        key = (u["backbone"], u["init"], u["images"])
        if key in done:
            continue
        done.add(key)
        reason = (u.get("reason") or "no trained model").splitlines()[0][:160]
        for method in methods:
            rows.append({"method": method, "backbone": key[0], "init": key[1], "images": key[2], "mean": None,
                         "reason": reason, "cell": f"n/a: {reason}"})
    return sorted(rows, key=lambda r: _order((r["method"], r["backbone"], r["init"], r["images"])))


def _order(key: tuple) -> tuple:
    method, backbone, init, images = key
    return (method_rank(method), backbone, images, init_rank(init))


def saliency_markdown(rows: list[dict], *, title: str, notes: list[str]) -> str:
    """Markdown: per method a table, rows backbone/images, columns initialisations, then chance."""
    lines = [f"## {title}", ""]
    for method in dict.fromkeys(r["method"] for r in rows):
        mrows = [r for r in rows if r["method"] == method]
        inits = [i for i in init_names() if any(r["init"] == i for r in mrows)]
        lines += [f"### {method_label(method)}", "",
                  "| Backbone | Training images | " + " | ".join(init_label(i) for i in inits) + " | Chance (heart area) |",
                  "|---" * (len(inits) + 3) + "|"]
        for backbone, images in dict.fromkeys((r["backbone"], r["images"]) for r in mrows):
            cells, chance = [], []
            for i in inits:
                r = next((r for r in mrows if (r["backbone"], r["images"], r["init"]) == (backbone, images, i)), None)
                cells.append("not run" if r is None else r["cell"])
                if r is not None and r.get("chance") is not None:
                    chance.append(r["chance"])
            ch = f"{sum(chance) / len(chance):.3f}" if chance else ""
            lines.append(f"| {backbone} | {images} | " + " | ".join(cells) + f" | {ch} |")
        lines.append("")
    lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_saliency_table(records: Sequence[dict], folder: str | Path, *, test_train_ratio: float, n_boot: int = 1000,
                         level: float = 0.95, seed: int = 0, margin_mm: float = 5.0, target: str = "predicted",
                         unavailable: Sequence[dict] = (), masks_source: str | None = None) -> dict:
    """Write `saliency.{md,csv,json}` (and `holdout_saliency.*` for held-out cells) into `folder`.

    `test_train_ratio`: n_test / n_train of the repeated splits (their intervals' overlap term).

    Returns {"md": Path, "csv": Path, "json": Path} of the repeated-split table (or of the held-out one
    when there are only held-out cells).
    """
    folder = Path(folder)
    pct = int(round(level * 100))
    notes = [
        "In-heart saliency: share of positive saliency inside the heart mask (LV cavity, myocardium and RV, "
        f"dilated by {margin_mm:g} mm{'; masks: ' + masks_source if masks_source else ''}), per image; per patient the "
        "mean over its slices and both branches (ED, ES).",
        ("Saliency explains the predicted class of each slice." if target == "predicted" else
         "Saliency explains the true class (the patient's label) of each slice." if target == "true" else
         f"Saliency explains class {target} for every slice."),
        f"Cell: mean over splits of the mean over test patients [{pct}% corrected resampled t interval across splits, "
        f"n_test/n_train = {test_train_ratio:.3g}, clipped to [0, 1], as in the study tables]; one split (held-out "
        f"cohort): (boot: {pct}% percentile bootstrap over its patients, {n_boot} resamples).",
        "Chance (heart area): the score a uniform saliency map would get (mean heart-area fraction of the images).",
    ]
    for method in sorted(dict.fromkeys(m for r in records for m in r["methods"]), key=method_rank):
        per = {r["methods"][method].get("slices_per_patient", None) for r in records if method in r["methods"]}
        splits = {str(r["split"]) for r in records if method in r["methods"] and str(r["split"]) != "holdout"}
        k = ", ".join("all" if v is None else str(v) for v in sorted(per, key=lambda v: -1 if v is None else v))
        n_img = sum(r["methods"][method].get("n_images", 0) for r in records if method in r["methods"])
        n_none = sum(r["methods"][method].get("n_images_without_positive_saliency", 0) for r in records if method in r["methods"])
        share = f"{100 * n_none / n_img:.1f}%" if n_img else "n/a"
        notes.append(f"{method_label(method)}: {k} slice(s) per test patient (evenly spaced base to apex), "
                     f"{len(splits)} split(s); {n_none} of {n_img} images ({share}) had no positive saliency "
                     "(score undefined, left out).")
        if method == "integrated_gradients":
            notes.append("Integrated gradients use a zero-image baseline: on segmented (masked) images the input is zero "
                         "outside the image mask, so its attribution there is zero by construction.")
    written: dict = {}
    for prefix, recs in (("", [r for r in records if str(r["split"]) != "holdout"]),
                         ("holdout_", [r for r in records if str(r["split"]) == "holdout"])):
        if not recs:
            continue
        unav = [u for u in unavailable if (str(u.get("split")) == "holdout") == bool(prefix)]
        rows = saliency_table(recs, test_train_ratio=0.0 if prefix else test_train_ratio, n_boot=n_boot, level=level,
                              seed=seed, unavailable=unav)
        title = ("Held-out cohort - " if prefix else "") + "In-heart saliency score (share of positive saliency on the heart)"
        md = atomic.write_text(folder / f"{prefix}saliency.md", saliency_markdown(rows, title=title, notes=notes))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in COLUMNS})
        csv_path = atomic.write_text(folder / f"{prefix}saliency.csv", buf.getvalue())
        js = atomic.write_json(folder / f"{prefix}saliency.json", {"title": title, "notes": notes, "rows": rows})
        if not written or not prefix:
            written = {"md": md, "csv": csv_path, "json": js}
    return written
