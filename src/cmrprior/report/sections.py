"""The report's sections (besides segmentation QC, `cmrprior.report.qc`), each rendered from what the run
folder holds. A section whose inputs are missing says so ("Not available: ...") instead of disappearing.
"""

from __future__ import annotations

import platform
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import ConfigError
from cmrprior.report.html import Section, esc, figure, markdown_to_html, table_html
from cmrprior.report.qc import masks_source_label
from cmrprior.report.summary import label_keys
from cmrprior.runs import CellResult, RunFolder, RunInfo, TestOutputs
from cmrprior.vocab import get_pretext, init_label, method_label, method_rank

MAX_SALIENCY_GRIDS = 4  # each ~50 kB embedded; all grids stay in saliency/grids/
# study.json keys shown to readers, with their labels (classes and masks come from run.json)
STUDY_ITEMS = (
    ("data", "Data"), ("test_data", "Held-out data (--test)"), ("n_patients", "Patients"),
    ("n_slices", "Slices (ED/ES pairs)"), ("n_splits", "Splits"), ("n_results", "Cells on the repeated splits"),
    ("n_holdout_results", "Cells on the held-out cohort"), ("config_digest", "Config digest"),
    ("wall_s_this_invocation", "Wall time of the last invocation (s)"), ("peak_rss_mb", "Peak memory (MB)"),
    ("finished_at", "Finished (UTC)"),
)


def cohort_section(run: RunFolder, info: RunInfo, study: dict | None, prepared: PreparedCohort | None) -> Section:
    rows = [("Classes", ", ".join(info.classes)), ("Masks source", masks_source_label(info.masks.source))]
    rows += [("Masks note", info.masks.note)] if info.masks.note else []
    rows += [(label, _fmt(study[k])) for k, label in STUDY_ITEMS if study and study.get(k) not in (None, "")]
    rows += [("Classifier input (px)", info.input_size), ("Prepared pixel spacing (mm)", f"{info.pixel_spacing_mm:g}"),
             ("Run folder layout version", info.layout_version)]
    body = [table_html(["Item", "Value"], rows, caption="Study")]
    specs = [(s.images, s.mode, f"{s.margin_mm:g}" if s.mode != "full" else "") for s in info.image_specs]
    body.append(table_html(["Training images", "Made as", "Heart margin (mm)"], specs, caption="Image kinds"))
    if not study:
        body.append('<p class="missing">study.json is missing (the study has not finished writing its summary).</p>')
    if prepared is not None:
        counts = Counter(p.label for p in prepared.patients)
        slices: Counter = Counter()
        for p in prepared.patients:
            slices[p.label] += int(p.n_slices)
        by_class = [(c, counts.get(c, 0), slices.get(c, 0)) for c in prepared.classes]
        by_class.append(("all", sum(counts.values()), sum(slices.values())))
        body.append(table_html(["Class", "Patients", "Slices (ED/ES pairs)"], by_class,
                               caption=f"Prepared cohort (in-plane {prepared.pixel_spacing_mm:g} mm per pixel)"))
    splits = run.splits()
    if splits:
        body.append(table_html(["Split", "Seed", "Train patients", "Test patients"],
                               [(s.name, s.seed, len(s.train), len(s.test)) for s in splits],
                               caption="Patient-level splits (no patient on both sides)"))
    return Section("cohort", "Cohort summary", "\n".join(body))


def tables_section(run: RunFolder, names: tuple[str, ...], anchor: str, title: str,
                   optional_note: str | None = None) -> Section:
    body, absent = [], []
    for name in names:
        md = run.tables / f"{name}.md"
        if md.exists():
            body.append(markdown_to_html(label_keys(md.read_text())))
        else:
            absent.append(f"tables/{name}.md")
    if not body:
        return Section(anchor, title, "", optional_note or f"not in the run folder: {', '.join(absent)}")
    if absent and not optional_note:
        body.append(f'<p class="missing">Not available: {esc(", ".join(absent))}</p>')
    return Section(anchor, title, "\n".join(body))


def _ok_by_config(cells: list[CellResult]) -> dict[tuple[str, str, str], list[CellResult]]:
    """Scored cells grouped by (backbone, init, images), in table order."""
    groups: dict[tuple[str, str, str], list[CellResult]] = defaultdict(list)
    for r in sorted(cells, key=lambda r: r.key.table_order()):
        if r.ok and r.test is not None:
            groups[r.key.config].append(r)
    return dict(groups)


PlotFn = Callable[[Sequence[tuple[str, Sequence[TestOutputs]]], Sequence[str]], bytes]


def _per_backbone_grid_section(cells: list[CellResult], anchor: str, title: str, intro: str, missing: str,
                               plot: PlotFn, label_splits: bool) -> Section:
    """One figure per backbone, each a grid over (initialisation, training images) of `plot(configs, classes)`."""
    groups = _ok_by_config(cells)
    if not groups:
        return Section(anchor, title, "", missing)
    classes = next(iter(groups.values()))[0].classes
    body = [f"<p>{intro}</p>"]
    for backbone in dict.fromkeys(k[0] for k in groups):
        configs = [(f"{init_label(init)} / {images}" + (f" ({len(rs)} split(s))" if label_splits else ""),
                    [r.test for r in rs]) for (b, init, images), rs in groups.items() if b == backbone]
        body.append(figure(plot(configs, classes), f"{title}, backbone {backbone}"))
    return Section(anchor, title, "\n".join(body))


_ROC_INTRO = ("One-vs-rest ROC curves per class on the test patients of all splits pooled (legend: class AUC of the "
              "pooled predictions; the tables' AUCs are means over splits).")
_CONFUSION_INTRO = ("Confusion matrices of the test patients summed over splits (rows: true class; columns: predicted "
                    "class; colour: share of the row).")


def roc_section(cells: list[CellResult]) -> Section:
    from cmrprior.report.plots import roc_grid_png

    missing = "no finished classifier results (splits/*/cells/*/*/result.json)"
    return _per_backbone_grid_section(cells, "roc", "ROC curves per class", _ROC_INTRO, missing, roc_grid_png, True)


def confusion_section(cells: list[CellResult]) -> Section:
    from cmrprior.report.plots import confusion_grid_png

    return _per_backbone_grid_section(cells, "confusion", "Confusion matrices", _CONFUSION_INTRO,
                                      "no finished classifier results", confusion_grid_png, False)


def figure1_section(run: RunFolder) -> Section:
    path = run.figures / "figure1.png"
    title = "Figure 1: convergence (validation AUC and loss per epoch)"
    if path.exists():
        return Section("figure1", title, figure(path.read_bytes(), "Figure 1 (figures/figure1.png)"))
    return Section("figure1", title, "", "figures/figure1.png is not in the run folder")


def saliency_table_section(run: RunFolder) -> Section:
    md = run.tables / "saliency.md"
    title = "In-heart saliency score"
    if md.exists():
        return Section("saliency-table", title, markdown_to_html(label_keys(md.read_text())))
    return Section("saliency-table", title, "", "tables/saliency.md is not in the run folder (the saliency stage has "
                   "not run: `cmrprior saliency --run RUN`; it needs finished cells with model.pt)")


def saliency_grid_section(run: RunFolder) -> Section:
    title = "Saliency overlays"
    grids = run.saliency_grids()
    if not grids:
        return Section("saliency-overlays", title, "", "no saliency overlay grids in saliency/grids/")
    body = ["<p>Saliency heat maps (normalised per image) over the ED and ES input images of test patients, one row per "
            "configuration (initialisation / training images); cyan: heart mask outline (dilated). The number in "
            "each panel title is that image's in-heart share (n/a: the map has no positive value).</p>"]
    methods = sorted({g.method for g in grids}, key=lambda m: (method_rank(m), m))
    per_method = max(1, MAX_SALIENCY_GRIDS // len(methods))
    shown = 0
    for method in methods:
        body.append(f"<h3>{esc(method_label(method))}</h3>")
        for g in [g for g in grids if g.method == method][:per_method]:
            split = "held-out cohort" if g.split == "holdout" else f"split {g.split}"
            body.append(figure(g.path.read_bytes(), f"Backbone {g.backbone}, {split}, patient {g.patient_id}", width=520,
                               photo=True))
            shown += 1
    if shown < len(grids):
        body.append(f"<p>{shown} of {len(grids)} grids shown; all are in saliency/grids/ and saliency/overlays/.</p>")
    return Section("saliency-overlays", title, "\n".join(body))


def computed_in(precision: str | None, channels_last: bool | None) -> str:
    """How a pre-training run computed, in words ("bf16, channels-last"); records from before they held it say so."""
    if precision is None:
        return "not recorded"
    return {"fp32": "float32", "bf16": "bf16", "fp16": "float16"}.get(precision, precision) + (
        ", channels-last" if channels_last else "")


def pretraining_section(run: RunFolder) -> Section:
    """The finished pre-training runs, one row per pretext, images, backbone, batch size and way of computing
    ("auto" precision is decided by a timing on each machine, and a bf16 encoder is not a float32 one's)."""
    groups: dict[tuple, list] = defaultdict(list)
    for pretext, r in run.pretrain_runs():
        groups[(pretext, r.images, r.backbone, r.batch_size, computed_in(r.precision, r.channels_last))].append(r)
    rows = []
    for (pretext, images, backbone, batch, how), records in sorted(groups.items()):
        epochs = sorted(r.epochs_run for r in records if r.epochs_run is not None)
        rows.append([_pretext_label(pretext), images, backbone, batch, len(records), how,
                     "n/a" if not epochs else (f"{epochs[0]}" if epochs[0] == epochs[-1] else f"{epochs[0]}-{epochs[-1]}"),
                     f"{sum(r.wall_s for r in records) / 60:.1f}"])
    if not rows:
        return Section("pretraining", "Pre-training runs", missing="no finished pre-training run in the folder")
    body = table_html(["Pretext", "Images", "Backbone", "Batch size", "Runs", "Computed in", "Epochs run",
                       "Wall time (min, all runs)"], rows,
                      caption="Pre-training runs (each split's and the held-out model's); wall time as each run measured it")
    mixed = Counter(key[:4] for key in groups)
    mixed_rows = [f"{_pretext_label(k[0])} on {k[1]} images ({k[2]}, batch {k[3]})" for k, n in sorted(mixed.items()) if n > 1]
    if mixed_rows:  # "auto" timed near its margin, or the runs ran on different machines: the splits differ
        body += ("<p><strong>Computed in more than one way:</strong> " + esc("; ".join(mixed_rows)) + ". Their splits' "
                 "encoders differ by more than their data; set the precision in the config to compute them alike.</p>")
    return Section("pretraining", "Pre-training runs", body)


def _pretext_label(name: str) -> str:
    try:
        return get_pretext(name).label
    except ConfigError:  # a pretext registered when the study ran but not now
        return name


def config_section(run: RunFolder, study: dict | None) -> Section:
    body = []
    if run.config_yaml.exists():
        body.append(f"<h3>config.yaml</h3><pre>{esc(run.config_yaml.read_text())}</pre>")
    rows = list(software_versions().items())
    if study and isinstance(study.get("versions"), dict):
        rows += [(f"{k} (at study time)", v) for k, v in study["versions"].items()]
    body.append(table_html(["Software", "Version"], rows, caption="Software versions (report time; study time when recorded)"))
    return Section("config", "Configuration and software versions", "\n".join(body),
                   None if run.config_yaml.exists() else "config.yaml is not in the run folder")


def software_versions() -> dict[str, str]:
    """python, platform, cmrprior, torch, torchvision, numpy, scipy, scikit-learn, matplotlib (those installed).

    Versions come from the installed distributions' metadata, so listing them imports none of them."""
    from importlib import metadata

    import cmrprior

    out = {"python": platform.python_version(), "platform": platform.platform(), "cmrprior": cmrprior.__version__}
    for mod, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"), ("scipy", "scipy"),
                      ("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"), ("monai", "monai")):
        try:
            out[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[mod] = "not installed"
    return out


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)
