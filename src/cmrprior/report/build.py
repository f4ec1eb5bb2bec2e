"""The study report: one self-contained HTML page per run folder (`RUN/report/index.html`).

`build_report(run_dir)` reads the run folder of `cmrprior study` (layout: `cmrprior/experiments/README.md`)
and writes a page that opens from disk with no network: every image is embedded as a base64 data URI.
Sections, in order: cohort summary, segmentation QC, Tables 1-3 (with CIs), paired comparisons, metrics
per cell, ROC curves per class, confusion matrices, Figure 1 (convergence), in-heart saliency table,
saliency overlay grids, configuration and software versions. A section whose inputs are missing says
so ("Not available: ...") instead of disappearing. The page is written atomically.

With `compute_saliency=True` (default) the saliency stage (`cmrprior.saliency.run.run_saliency`, which
resumes) runs first when the run has finished cells, so the saliency sections are filled.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cmrprior.errors import CmrPriorError, DataError
from cmrprior.report.html import Section, esc, figure, markdown_to_html, render_page, table_html
from cmrprior.utils import atomic

log = logging.getLogger(__name__)

INIT_ORDER = ("none", "imagenet", "full_sscl", "segmented_sscl")
METHOD_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients"}
MAX_SALIENCY_GRIDS = 12


def build_report(run_dir: str | Path, *, compute_saliency: bool = True) -> Path:
    """Write `run_dir/report/index.html`; returns its path.

    Raises DataError when `run_dir` is not a folder. Missing parts of the run become explicit
    "Not available" notes in the page.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(run, "run folder not found")
    saliency_error = None
    if compute_saliency:
        saliency_error = _maybe_run_saliency(run)
    results = load_results(run)
    study = _read_json(run / "study.json")
    sections = [
        cohort_section(run, study),
        segmentation_section(run, study),
        tables_section(run, ("table1", "table2", "table3"), "tables", "Tables 1-3: macro AUC with confidence intervals"),
        tables_section(run, ("comparisons",), "comparisons", "Paired comparisons"),
        tables_section(run, ("metrics",), "metrics", "Metrics per configuration"),
        roc_section(results),
        confusion_section(results),
        figure1_section(run, results),
        saliency_table_section(run, saliency_error),
        saliency_grid_section(run, saliency_error),
        tables_section(run, tuple(f"holdout_{n}" for n in ("table1", "table2", "table3", "comparisons", "saliency")),
                       "holdout", "Held-out cohort (--test)", optional_note="the study was run without --test"),
        config_section(run, study),
    ]
    title = f"cmrprior study report: {run.resolve().name}"
    subtitle = f"Run folder {run.resolve()}; report written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}."
    page = render_page(title, subtitle, sections)
    path = atomic.write_text(run / "report" / "index.html", page)
    path.chmod(0o644)  # the temporary file of the atomic write is private (0600); a report is meant to be shared
    return path


# ---- inputs -------------------------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("report: cannot read %s (%s)", path, exc)
        return None


def load_results(run: Path) -> list[dict]:
    """The `result.json` dicts of the run's repeated-split cells (any status)."""
    out = []
    for p in sorted(run.glob("splits/split_*/cells/*/*/result.json")):
        r = _read_json(p)
        if isinstance(r, dict) and {"backbone", "init", "images"} <= set(r):
            out.append(r)
    return out


def _maybe_run_saliency(run: Path) -> str | None:
    if not any(run.glob("splits/split_*/cells/*/*/model.pt")) and not any(run.glob("holdout/cells/*/*/model.pt")):
        return None
    try:
        from cmrprior.saliency.run import run_saliency

        run_saliency(run)
    except (CmrPriorError, ImportError, OSError, KeyError, ValueError) as exc:
        log.error("report: saliency failed: %s", exc)
        return f"the saliency stage failed: {exc}"
    return None


def _config_key(r: dict) -> tuple:
    i = INIT_ORDER.index(r["init"]) if r["init"] in INIT_ORDER else 99
    return (r["backbone"], r["images"], i)


def _ok_by_config(results: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("status") == "ok" and r.get("test"):
            groups[(r["backbone"], r["init"], r["images"])].append(r)
    return dict(sorted(groups.items(), key=lambda kv: _config_key({"backbone": kv[0][0], "init": kv[0][1], "images": kv[0][2]})))


# ---- sections -----------------------------------------------------------------------------------------
def cohort_section(run: Path, study: dict | None) -> Section:
    cohort = _read_json(run / "prepared" / "cohort.json")
    splits = _read_json(run / "splits.json")
    body = []
    if study:
        rows = [(k, study.get(k)) for k in ("data", "test_data", "classes", "n_patients", "n_slices", "masks_source",
                                            "masks_note", "n_splits", "n_results", "wall_s_this_invocation",
                                            "peak_rss_mb", "finished_at") if study.get(k) not in (None, "")]
        body.append(table_html(["Item", "Value"], [(k, _fmt(v)) for k, v in rows], caption="Study"))
    if cohort:
        classes = cohort.get("classes", [])
        counts = Counter(p.get("label") for p in cohort.get("patients", []))
        slices = Counter()
        for p in cohort.get("patients", []):
            slices[p.get("label")] += int(p.get("n_slices", 0))
        rows = [(c, counts.get(c, 0), slices.get(c, 0)) for c in classes]
        rows.append(("all", sum(counts.values()), sum(slices.values())))
        body.append(table_html(["Class", "Patients", "Slices (ED/ES pairs)"], rows,
                               caption=f"Prepared cohort (in-plane {cohort.get('pixel_spacing_mm')} mm per pixel)"))
    if splits:
        rows = [(s.get("index"), s.get("seed"), len(s.get("train", [])), len(s.get("test", []))) for s in splits]
        body.append(table_html(["Split", "Seed", "Train patients", "Test patients"], rows,
                               caption="Patient-level splits (no patient on both sides)"))
    missing = None if body else "neither study.json, prepared/cohort.json nor splits.json is in the run folder"
    if body and not study:
        body.append('<p class="missing">study.json is missing (the study has not finished writing its summary).</p>')
    return Section("cohort", "Cohort summary", "\n".join(body), missing)


def segmentation_section(run: Path, study: dict | None) -> Section:
    """QC files of the run (qc/ or segmentation/: *.md, *.csv, *.png), mask plausibility flags computed here
    from the prepared masks (`cmrprior.segmentation.qc.evaluate_prepared`, no ground truth needed), and an
    overlay of the masks used."""
    body = []
    qc_dirs = [d for d in (run / "qc", run / "segmentation", run / "segmentation" / "qc") if d.is_dir()]
    for d in qc_dirs:
        for md in sorted(d.glob("*.md")):
            body.append(markdown_to_html(md.read_text()))
        for csv_path in sorted(d.glob("*.csv")):
            body.append(_csv_table(csv_path, run))
        for png in sorted(d.glob("*.png"))[:8]:
            body.append(figure(png.read_bytes(), f"{png.relative_to(run)}", width=640))
    has_dice = any("dice" in b.lower() for b in body)
    masks_meta = _read_json(run / "prepared" / "masks.json") or {}
    source = (study or {}).get("masks_source") or masks_meta.get("masks_source")
    note = (study or {}).get("masks_note") or masks_meta.get("masks_note")
    if source:
        body.insert(0, f"<p>Heart masks used for segmented images: <strong>{esc(source)}</strong>"
                       f"{(' (' + esc(note) + ')') if note else ''}.</p>")
    flags = _flag_table(run)
    if flags:
        body.append(flags)
    overlay = _mask_overlay_png(run)
    if overlay is not None:
        body.append(figure(overlay, "Heart masks used for segmented images (outline: RV yellow, myocardium green, "
                           "LV cavity red) on ED slices of the first patients of the prepared cohort", width=900))
    missing = None
    if not has_dice:
        missing = ("no Dice / Hausdorff table in the run folder (looked for *.md and *.csv in qc/ and segmentation/)")
        if source == "ground_truth":
            missing += "; the study used ground-truth masks, so there is no segmenter output to check against them"
    return Section("segmentation", "Segmentation quality control", "\n".join(body), missing)


def _csv_table(path: Path, run: Path, max_rows: int = 40) -> str:
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        return f'<p class="missing">{esc(path.relative_to(run))} is empty.</p>'
    body = [[_short(c) for c in r] for r in rows[1 : max_rows + 1]]
    more = f" (first {max_rows} of {len(rows) - 1} rows)" if len(rows) - 1 > max_rows else ""
    return table_html(rows[0], body, caption=f"{path.relative_to(run)}{more}")


def _short(cell: str) -> str:
    try:
        v = float(cell)
    except ValueError:
        return cell
    return cell if v.is_integer() and "." not in cell else f"{v:.3f}"


def _flag_table(run: Path) -> str | None:
    prep = run / "prepared"
    if not (prep / "cohort.json").exists():
        return None
    try:
        from cmrprior.data.prepared import PreparedCohort
        from cmrprior.segmentation.qc import evaluate_prepared

        cohort = PreparedCohort.load(prep)
        if cohort.ed_mask is None or cohort.es_mask is None:
            return None
        rows = evaluate_prepared(cohort)
    except (ImportError, CmrPriorError, OSError, KeyError, ValueError) as exc:
        log.warning("report: mask flags not computed (%s)", exc)
        return None
    if not rows:
        return None
    flags = [k for k, v in rows[0].items() if isinstance(v, bool)]
    table = []
    for f in flags:
        hit = [r for r in rows if r.get(f)]
        example = ", ".join(f"{r['patient_id']} {r['phase']}" for r in hit[:4]) + (" ..." if len(hit) > 4 else "")
        table.append((f, f"{len(hit)} / {len(rows)}", example))
    return table_html(["Flag", "Patient-phases flagged", "Examples"], table,
                      caption="Mask plausibility flags of the masks used (cmrprior.segmentation.qc; no ground truth needed)")


def _mask_overlay_png(run: Path, n: int = 6) -> bytes | None:
    prep = run / "prepared"
    if not (prep / "cohort.json").exists():
        return None
    try:
        from cmrprior.data.prepared import PreparedCohort

        cohort = PreparedCohort.load(prep)
    except (CmrPriorError, OSError, KeyError, ValueError) as exc:
        log.warning("report: cannot load %s (%s)", prep, exc)
        return None
    if cohort.ed_mask is None:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = []
    for p in range(min(n, len(cohort.patients))):
        rows = np.flatnonzero(cohort.patient_index == p)
        if rows.size:
            areas = (cohort.ed_mask[rows] > 0).reshape(rows.size, -1).sum(1)
            picks.append((cohort.patients[p].patient_id, cohort.patients[p].label, int(rows[int(np.argmax(areas))])))
    fig, axes = plt.subplots(1, max(len(picks), 1), figsize=(2.4 * max(len(picks), 1), 2.6), squeeze=False)
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
    plt.close(fig)
    return buf.getvalue()


def tables_section(run: Path, names: tuple[str, ...], anchor: str, title: str, optional_note: str | None = None) -> Section:
    body, absent = [], []
    for name in names:
        md = run / "tables" / f"{name}.md"
        if md.exists():
            body.append(markdown_to_html(md.read_text()))
        else:
            absent.append(f"tables/{name}.md")
    if not body:
        return Section(anchor, title, "", optional_note or f"not in the run folder: {', '.join(absent)}")
    if absent and not optional_note:
        body.append(f'<p class="missing">Not available: {esc(", ".join(absent))}</p>')
    return Section(anchor, title, "\n".join(body))


def _per_backbone_grid_section(results: list[dict], anchor: str, title: str, intro: str, missing: str,
                               plot, label_splits: bool) -> Section:
    """One figure per backbone, each a grid over (initialisation, training images) of `plot(configs, classes)`."""
    groups = _ok_by_config(results)
    if not groups:
        return Section(anchor, title, "", missing)
    classes = next(iter(groups.values()))[0]["classes"]
    body = [f"<p>{intro}</p>"]
    for backbone in dict.fromkeys(k[0] for k in groups):
        configs = [(f"{init} / {images}" + (f" ({len(rs)} split(s))" if label_splits else ""), rs)
                   for (b, init, images), rs in groups.items() if b == backbone]
        body.append(figure(plot(configs, classes), f"{title}, backbone {backbone}"))
    return Section(anchor, title, "\n".join(body))


_ROC_INTRO = ("One-vs-rest ROC curves per class on the test patients of all splits pooled (legend: class AUC of the "
              "pooled predictions; the tables' AUCs are means over splits).")
_CONFUSION_INTRO = ("Confusion matrices of the test patients summed over splits (rows: true class; columns: predicted "
                    "class; colour: share of the row).")


def roc_section(results: list[dict]) -> Section:
    from cmrprior.report.plots import roc_grid_png

    missing = "no finished classifier results (splits/*/cells/*/*/result.json)"
    return _per_backbone_grid_section(results, "roc", "ROC curves per class", _ROC_INTRO, missing, roc_grid_png, True)


def confusion_section(results: list[dict]) -> Section:
    from cmrprior.report.plots import confusion_grid_png

    missing = "no finished classifier results"
    return _per_backbone_grid_section(results, "confusion", "Confusion matrices", _CONFUSION_INTRO, missing,
                                      confusion_grid_png, False)


def figure1_section(run: Path, results: list[dict]) -> Section:
    path = run / "figures" / "figure1.png"
    title = "Figure 1: convergence (validation AUC and loss per epoch)"
    if path.exists():
        return Section("figure1", title, figure(path.read_bytes(), "Figure 1 (figures/figure1.png)"))
    return Section("figure1", title, "", "figures/figure1.png is not in the run folder")


def saliency_table_section(run: Path, error: str | None) -> Section:
    md = run / "tables" / "saliency.md"
    title = "In-heart saliency score"
    if md.exists():
        body = markdown_to_html(md.read_text())
        return Section("saliency-table", title, body, error)
    return Section("saliency-table", title, "", error or "tables/saliency.md is not in the run folder "
                   "(run `cmrprior saliency --run RUN`; it needs finished cells with model.pt)")


def saliency_grid_section(run: Path, error: str | None) -> Section:
    title = "Saliency overlays"
    grids = sorted((run / "saliency" / "grids").glob("*/*/*.png"))
    if not grids:
        return Section("saliency-overlays", title, "", error or "no saliency overlay grids in saliency/grids/")
    body = ["<p>Saliency heat maps (normalised per image) over the ED and ES input images of test patients, one row per "
            "configuration (initialisation / training images); cyan: heart mask outline (dilated). The number in "
            "each panel title is that image's in-heart share (n/a: the map has no positive value).</p>"]
    shown = 0
    for method_dir in sorted({g.parents[1] for g in grids}):
        files = sorted(method_dir.glob("*/*.png"))
        take = files[: max(1, MAX_SALIENCY_GRIDS // max(1, len({g.parents[1] for g in grids})))]
        body.append(f"<h3>{esc(METHOD_NAMES.get(method_dir.name, method_dir.name))}</h3>")
        for g in take:
            body.append(figure(g.read_bytes(), f"{g.parent.name}: {g.stem.replace('__', ', patient ')}", width=520))
            shown += 1
    if shown < len(grids):
        body.append(f"<p>{shown} of {len(grids)} grids shown; all are in saliency/grids/ and saliency/overlays/.</p>")
    return Section("saliency-overlays", title, "\n".join(body), error)


def config_section(run: Path, study: dict | None) -> Section:
    body = []
    cfg = run / "config.yaml"
    if cfg.exists():
        body.append(f"<h3>config.yaml</h3><pre>{esc(cfg.read_text())}</pre>")
    versions = software_versions()
    rows = [(k, v) for k, v in versions.items()]
    if study and isinstance(study.get("versions"), dict):
        rows += [(f"{k} (at study time)", v) for k, v in study["versions"].items()]
    body.append(table_html(["Software", "Version"], rows, caption="Software versions (report time; study time when recorded)"))
    return Section("config", "Configuration and software versions", "\n".join(body),
                   None if cfg.exists() else "config.yaml is not in the run folder")


def software_versions() -> dict[str, str]:
    """python, platform, cmrprior, torch, torchvision, numpy, scipy, scikit-learn, matplotlib (those importable)."""
    import importlib

    import cmrprior

    out = {"python": platform.python_version(), "platform": platform.platform(), "cmrprior": cmrprior.__version__}
    for mod in ("torch", "torchvision", "numpy", "scipy", "sklearn", "matplotlib", "monai"):
        try:
            out[mod] = str(importlib.import_module(mod).__version__)
        except Exception:  # noqa: BLE001 - a version table must not fail on an odd install
            out[mod] = "not installed"
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)
