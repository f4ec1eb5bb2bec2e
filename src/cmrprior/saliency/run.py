"""Saliency for every configuration of a study run: scores, overlays and the in-heart table.

`run_saliency(run_dir, config)` reads a study run folder through `cmrprior.runs.RunFolder`: for every
finished cell with a saved model (`RunFolder.iter_scored`, repeated splits then held-out cells) it loads the
model (`cmrprior.classify.model.load_classifier`) and the exact test slices it was scored on
(`cmrprior.classify.inputs.load_cell_test_inputs`), computes saliency maps of both branches for the scored
slices of each test patient (`SaliencyConfig.slices_per_patient`, evenly spaced base to apex; integrated
gradients on fewer slices and splits, see SaliencyConfig), and the in-heart score per image and patient
(`cmrprior.saliency.cell`).

Written under `RUN/saliency/` (paths: `RunFolder.saliency_*`; each file atomically; a cell's `scores.json`
is written last and is its done marker, so a killed run resumes):

    saliency/settings.json                               the SaliencyConfig used
    saliency/cells/{split}/{backbone}/{init}__{images}/scores.json
        {"backbone", "init", "images", "split", "target", "margin_mm", "methods": {method: {
          "patients": {pid: score}, "chance": {pid: heart area fraction}, "n_images": n,
          "slices_per_patient": k | null, "n_images_without_positive_saliency": m}}}
    saliency/overlays/{method}/{backbone}/{init}__{images}/split_{split}/{pid}.png   (ED | ES)
    saliency/grids/{method}/{backbone}/split_{split}__{pid}.png   rows = configurations, columns ED, ES
    tables/saliency.{md,csv,json}                        the in-heart table (`cmrprior.saliency.table`)

Overlays show one slice per patient (of its scored slices, the one with the largest ED heart area) for the
first `overlay_patients` test patients of the first `overlay_splits` splits (and of held-out cells).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmrprior.runs import HOLDOUT, CellResult, RunFolder
from cmrprior.saliency.cell import (CellMaps, config_label, panel_title, panels_path, saliency_maps, score_cell,
                                    scores_path, select_slices)
from cmrprior.saliency.config import SaliencyConfig
from cmrprior.saliency.overlays import OverlayPanel, save_grid
from cmrprior.saliency.table import write_saliency_table
from cmrprior.utils import atomic
from cmrprior.utils.progress import Progress

__all__ = ["CellMaps", "SaliencyConfig", "SaliencyOutputs", "run_saliency", "saliency_maps", "select_slices"]

log = logging.getLogger(__name__)

GridRows = dict[tuple[str, str, str, str], list[tuple[str, OverlayPanel, OverlayPanel]]]


@dataclass(frozen=True)
class SaliencyOutputs:
    folder: Path
    n_cells: int  # cells scored (this call or earlier)
    tables: dict  # {"md": Path, "csv": Path, "json": Path} or {}


def run_saliency(run_dir: str | Path, config: SaliencyConfig = SaliencyConfig()) -> SaliencyOutputs:
    """Score and draw saliency for every finished cell of a study run; write the in-heart table.

    Resumes: a cell whose scores.json exists with the same settings is not recomputed.
    Raises DataError when `run_dir` is not a run folder of this layout version or its prepared cohort
    lacks masks.
    """
    run = RunFolder(run_dir)
    info = run.info()
    fresh = _write_settings(run, config)
    unavailable: list[dict] = []
    cells = _scorable_cells(run, unavailable)
    split_order = sorted({c.key.split for c in cells if c.key.split != HOLDOUT}, key=int)
    overlay_splits = set(split_order[: config.overlay_splits]) | {HOLDOUT}
    ig_splits = set(split_order[: config.ig_splits]) | {HOLDOUT}
    scored = []
    grid_rows: GridRows = defaultdict(list)  # (method, backbone, split, pid) -> [(label, ed, es)]
    changed: set[tuple[str, str]] = set()  # (backbone, split) with a cell computed in this call
    progress = Progress("saliency", len(cells), log, unit="cells")
    for result in cells:
        marker = scores_path(run, result.key)
        overlays = result.key.split in overlay_splits
        reused = marker.exists() and not fresh
        if reused:
            scored.append(json.loads(marker.read_text()))
        else:
            scored.append(score_cell(run, info, result, config, config.methods_for(result.key.split, ig_splits),
                                     overlays=overlays))
            changed.add((result.key.backbone, result.key.split))
        if overlays:
            _collect_panels(run, result, config.methods, grid_rows)
        k = result.key
        progress.done(f"split {k.split}, {k.backbone}, {k.init}/{k.images}" + (", reused" if reused else ""), reused=reused)
    _write_grids(run, grid_rows, changed)
    repeated = [s for s in run.splits() or [] if s.name != HOLDOUT]
    ratio = float(np.mean([len(s.test) / len(s.train) for s in repeated])) if repeated else 0.0  # n_test / n_train
    tables = write_saliency_table(scored, run.tables, test_train_ratio=ratio, n_boot=config.n_boot, level=config.level,
                                  seed=config.seed, margin_mm=config.margin_mm, target=config.target, unavailable=unavailable,
                                  masks_source=info.masks.source) if scored else {}
    return SaliencyOutputs(folder=run.saliency, n_cells=len(scored), tables=tables)


def _write_settings(run: RunFolder, config: SaliencyConfig) -> bool:
    """Record the settings; True when they differ from the recorded ones (every cell is then recomputed)."""
    settings = asdict(config)
    path = run.saliency_settings_json
    fresh = path.exists() and json.loads(path.read_text()) != json.loads(json.dumps(settings))
    if fresh:
        log.info("saliency settings changed: recomputing every cell")
    atomic.write_json(path, settings)
    return fresh


def _scorable_cells(run: RunFolder, unavailable: list[dict]) -> list[CellResult]:
    """Finished cells with a model (repeated splits, then held-out); the others are appended to
    `unavailable` as {split, backbone, init, images, reason} (the table's "n/a: reason" rows)."""
    out = []
    for r in run.cells() + run.cells(holdout=True):
        if r.ok and run.model_path(r.key).exists():
            out.append(r)
        else:
            unavailable.append({"split": r.key.split, "backbone": r.key.backbone, "init": r.key.init,
                                "images": r.key.images, "reason": r.reason or f"status {r.status}, no model.pt"})
    return out


def _collect_panels(run: RunFolder, result: CellResult, methods: tuple[str, ...], grid_rows: GridRows) -> None:
    """Add a cell's overlay panels (from its panels_{method}.npz) to the per-patient grid rows."""
    label = config_label(result)
    for method in methods:
        path = panels_path(run, result.key, method)
        if not path.exists():
            continue
        with np.load(path) as z:
            for i, pid in enumerate(z["patient_ids"].tolist()):
                ed, es = (OverlayPanel(z[f"{ph}_image"][i], z[f"{ph}_map"][i], z[f"{ph}_heart"][i],
                                       panel_title(ph.upper(), z[f"{ph}_share"][i])) for ph in ("ed", "es"))
                grid_rows[(method, result.key.backbone, result.key.split, pid)].append((label, ed, es))


def _write_grids(run: RunFolder, grid_rows: GridRows, changed: set[tuple[str, str]]) -> None:
    """One grid per (method, backbone, split, patient): rows = configurations; kept when none of them changed."""
    for (method, backbone, split, pid), rows in grid_rows.items():
        path = run.saliency_grid(method, backbone, split, pid)
        if path.exists() and (backbone, split) not in changed:
            continue
        rows = sorted(rows, key=lambda r: r[0])
        save_grid(path, [[r[1], r[2]] for r in rows], [r[0] for r in rows])
