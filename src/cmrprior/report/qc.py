"""The report's segmentation quality-control section: which masks were used, the segmenter's Dice and
Hausdorff against ground truth (when the study computed them), the mask plausibility flags and an overlay.

Everything is read from the run folder (`RunFolder.qc`): `qc/data/segmentation_summary.csv` (shown compact,
structure x phase), `qc/mask_flags.csv` (counts per flag and phase), other `qc/*.md`, `qc/*.csv` and
`qc/*.png` as they are. Nothing is computed from masks here.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

import numpy as np

from cmrprior.data.prepared import PreparedCohort
from cmrprior.report.html import Section, esc, figure, markdown_to_html, table_html
from cmrprior.runs import RunFolder, RunInfo

log = logging.getLogger(__name__)

MASKS_SOURCE_LABELS = {"segmenter": "segmenter (heart segmentation network)",
                       "ground_truth": "oracle: expert (ground-truth) masks"}
STRUCTURE_LABELS = {"RV": "RV", "MYO": "Myocardium", "LV": "LV cavity"}
METRIC_LABELS = {"dice": "Dice", "hd95": "HD95 (mm)", "hd": "HD (mm)"}
# the flags of `cmrprior.segmentation.qc.mask_flags`, in reader's words (unknown flags are shown as named)
FLAG_LABELS = {
    "empty_heart": "No heart label on any slice",
    "missing_structure_mid": "A structure missing on a mid-ventricular slice",
    "myo_not_surrounding_lv": "Myocardium not surrounding the LV cavity",
    "volume_jump": "Heart area jumps between neighbouring slices",
}
_FLAG_ROW_KEYS = {"patient_id", "label", "phase", "n_slices", "details"}
MAX_CSV_ROWS = 12  # per-patient files stay in qc/; the report shows their first rows
MAX_CELL_CHARS = 40  # e.g. a volume curve of 30 frames: shortened, the file has it whole


def masks_source_label(source: str) -> str:
    return MASKS_SOURCE_LABELS.get(source, source)


def segmentation_section(run: RunFolder, info: RunInfo, prepared: PreparedCohort | None) -> Section:
    note = f" ({esc(info.masks.note)})" if info.masks.note else ""
    body = [f"<p>Heart masks used for segmented images: <strong>{esc(masks_source_label(info.masks.source))}</strong>"
            f"{note}.</p>"]
    dice = dice_table(run.segmentation_summary_csv)
    if dice:
        body.append(dice)
    for md in sorted(run.qc.glob("*.md")):
        text = md.read_text()
        body.append(markdown_to_html(_without_tables(text) if dice and "dice" in text.lower() else text))
    for path in sorted(run.qc.glob("*.csv")):
        if path != run.mask_flags_csv:
            body.append(csv_table(path, run.root))
    for png in sorted(run.qc.glob("*.png"))[:8]:
        body.append(figure(png.read_bytes(), str(png.relative_to(run.root)), width=640, photo=True))
    flags = flags_table(run.mask_flags_csv)
    body.append(flags or f'<p class="missing">Mask plausibility flags: {esc(run.mask_flags_csv.relative_to(run.root))} '
                         "is not in the run folder.</p>")
    overlay = mask_overlay_png(prepared) if prepared is not None else None
    if overlay is not None:
        body.append(figure(overlay, "Heart masks used for segmented images (outline: RV yellow, myocardium green, "
                           "LV cavity red) on ED slices of the first patients of the prepared cohort", width=900, photo=True))
    missing = None
    if dice is None and not any("dice" in b.lower() for b in body[1:]):
        missing = "no Dice / Hausdorff table in the run folder (looked in qc/)"
        if info.masks.source == "ground_truth":
            missing += "; the study used ground-truth masks, so there is no segmenter output to check against them"
    return Section("segmentation", "Segmentation quality control", "\n".join(body), missing)


def _without_tables(markdown: str) -> str:
    """The Markdown without its table lines (the table itself is shown compact)."""
    return "\n".join(line for line in markdown.splitlines() if not line.lstrip().startswith("|"))


def _read_csv(path: Path) -> list[dict[str, str]] | None:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return None
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        log.warning("report: cannot read %s (%s)", path, exc)
        return None


def dice_table(path: Path) -> str | None:
    """Compact segmenter-vs-ground-truth table: rows structures, columns metric x phase (ED, ES), each cell
    the mean over patients [95% t-interval]; from `segmentation_summary.csv` (phase, metric, mean, ci_low,
    ci_high, n). None when the file is absent or has no such rows."""
    rows = _read_csv(path)
    if not rows:
        return None
    cells: dict[tuple[str, str, str], str] = {}
    n = 0
    for r in rows:
        m = re.fullmatch(r"(dice|hd95|hd)_(\w+)", r.get("metric", ""))
        if m is None or r.get("phase") not in ("ED", "ES"):
            continue
        cells[(m.group(2), m.group(1), r["phase"])] = _mean_ci(r)
        n = max(n, int(float(r.get("n") or 0)))
    if not cells:
        return None
    metrics = [k for k in METRIC_LABELS if any(c[1] == k for c in cells)]
    structures = list(dict.fromkeys([s for s in STRUCTURE_LABELS if any(c[0] == s for c in cells)]
                                    + [c[0] for c in cells]))
    header = ["Structure"] + [f"{METRIC_LABELS[m]} {ph}" for m in metrics for ph in ("ED", "ES")]
    body = [[STRUCTURE_LABELS.get(s, s)] + [cells.get((s, m, ph), "") for m in metrics for ph in ("ED", "ES")]
            for s in structures]
    return table_html(header, body, caption=f"Segmenter masks against ground truth: mean over {n} patients "
                                            "[95% t-interval], 3D per patient and phase")


def _mean_ci(r: dict[str, str]) -> str:
    def num(key: str) -> float:
        try:
            return float(r.get(key) or "nan")
        except ValueError:
            return float("nan")

    mean, lo, hi = num("mean"), num("ci_low"), num("ci_high")
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else "")


def flags_table(path: Path) -> str | None:
    """Mask plausibility flags (`qc/mask_flags.csv`), compact: per flag the patients flagged per phase and a
    few examples. None when the file is absent."""
    rows = _read_csv(path)
    if rows is None:
        return None
    flags = [k for k in (rows[0] if rows else {}) if k not in _FLAG_ROW_KEYS]
    n = {ph: sum(r.get("phase") == ph for r in rows) for ph in ("ED", "ES")}
    table = []
    for f in flags:
        hit = [r for r in rows if r.get(f) == "True"]
        counts = [f"{sum(r.get('phase') == ph for r in hit)} / {n[ph]}" for ph in ("ED", "ES")]
        example = ", ".join(f"{r['patient_id']} {r['phase']}" for r in hit[:4]) + (" ..." if len(hit) > 4 else "")
        table.append((FLAG_LABELS.get(f, f), *counts, example or "none"))
    if not table:
        return f'<p class="missing">{esc(path.name)} has no flags.</p>'
    return table_html(["Flag", "ED: patients flagged", "ES: patients flagged", "Examples"], table,
                      caption="Mask plausibility flags of the masks used (no ground truth needed; details per "
                              "patient and phase in qc/mask_flags.csv)")


def csv_table(path: Path, root: Path, max_rows: int = MAX_CSV_ROWS) -> str:
    """A CSV file as a table (numbers to 3 decimals, long cells shortened, raw column names as words), at most
    `max_rows` rows."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        return f'<p class="missing">{esc(path.relative_to(root))} is empty.</p>'
    body = [[_short(c) for c in r] for r in rows[1 : max_rows + 1]]
    more = f" (first {max_rows} of {len(rows) - 1} rows)" if len(rows) - 1 > max_rows else ""
    header = [h.replace("_", " ") for h in rows[0]]
    return table_html(header, body, caption=f"{path.relative_to(root)}{more}")


def _short(cell: str) -> str:
    try:
        v = float(cell)
    except ValueError:
        return cell if len(cell) <= MAX_CELL_CHARS else cell[: MAX_CELL_CHARS - 3] + "..."
    return cell if v.is_integer() and "." not in cell else f"{v:.3f}"


def mask_overlay_png(cohort: PreparedCohort, n: int = 6) -> bytes | None:
    """Outlines of the masks on the ED slice with the largest heart of each of the first `n` patients."""
    if cohort.ed_mask is None:
        return None
    from matplotlib.figure import Figure  # no pyplot: the user's matplotlib backend is left as it is

    picks = []
    for p in range(min(n, len(cohort.patients))):
        rows = np.flatnonzero(cohort.patient_index == p)
        if rows.size:
            areas = (cohort.ed_mask[rows] > 0).reshape(rows.size, -1).sum(1)
            picks.append((cohort.patients[p].patient_id, cohort.patients[p].label, int(rows[int(np.argmax(areas))])))
    fig = Figure(figsize=(2.4 * max(len(picks), 1), 2.6))
    axes = fig.subplots(1, max(len(picks), 1), squeeze=False)
    for ax, (pid, label, k) in zip(axes[0], picks):
        ax.imshow(cohort.ed[k], cmap="gray")
        for lab, colour in ((1, "yellow"), (2, "lime"), (3, "red")):
            m = cohort.ed_mask[k] == lab
            if m.any() and not m.all():
                ax.contour(m.astype(float), levels=[0.5], colors=colour, linewidths=0.7)
        ax.set_title(f"{pid} ({label})", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
