"""Saliency of one finished cell of a study run: its test inputs, maps, in-heart scores and overlays.

A cell is explained on exactly the slices it was scored on (`cmrprior.classify.inputs.load_cell_test_inputs`),
with the heart mask brought onto the classifier's input grid the way the cell's images were made
(`geometry.heart_on_input_grid` with the cell's `ImageSpec` from `RunInfo`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmrprior.classify.data import SliceSet
from cmrprior.classify.inputs import load_cell_test_inputs
from cmrprior.classify.model import PooledDiagnosisModel, load_classifier
from cmrprior.errors import ConfigError, DataError
from cmrprior.runs import CellKey, CellResult, RunFolder, RunInfo
from cmrprior.saliency.attribution import integrated_gradients
from cmrprior.saliency.config import SaliencyConfig
from cmrprior.saliency.geometry import heart_masks_for, heart_on_input_grid
from cmrprior.saliency.gradcam import gradcam
from cmrprior.saliency.overlays import OverlayPanel, save_patient_overlay
from cmrprior.saliency.score import heart_area_fraction, in_heart_share, patient_scores
from cmrprior.utils import atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CellMaps:
    """Saliency of one cell's test slices: maps float32 (N, S, S) per branch."""

    ed: np.ndarray
    es: np.ndarray


@dataclass(frozen=True, eq=False)
class CellInputs:
    """A cell's test slice pairs and the dilated heart masks on the same grid, bool (N, S, S) per branch."""

    test: SliceSet
    heart_ed: np.ndarray
    heart_es: np.ndarray


def cell_inputs(run: RunFolder, info: RunInfo, result: CellResult, margin_mm: float) -> CellInputs:
    """The test slices a cell was scored on and their heart masks (dilated by `margin_mm`) on the input grid.

    Raises DataError when the run's prepared cohort has no heart masks.
    """
    test, prepared, rows = load_cell_test_inputs(run, result)
    if prepared.ed_mask is None or prepared.es_mask is None:
        raise DataError(run.prepared(), "prepared cohort has no heart masks: the in-heart score needs them")
    spec = info.spec(result.key.images)
    ed_masks, es_masks, spacing = heart_masks_for(prepared, rows, spec.mode)  # on the grid of the images
    # the rows hold every slice of each test patient, so the crop fallback (per patient) is the cohort's
    kw = dict(margin_mm=margin_mm, pixel_spacing_mm=spacing, image_mode=spec.mode,
              image_margin_mm=spec.margin_mm, input_size=info.input_size, groups=prepared.patient_index[rows])
    return CellInputs(test, heart_on_input_grid(ed_masks, **kw), heart_on_input_grid(es_masks, **kw))


def saliency_maps(model: torch.nn.Module, ed: np.ndarray, es: np.ndarray, targets: np.ndarray | None, *, method: str,
                  batch_size: int, ig_steps: int) -> CellMaps:
    """Maps of one method for slice pairs ed, es float32 (N, S, S); targets int (N,) or None (predicted)."""
    outs_ed, outs_es = [], []
    for s in range(0, ed.shape[0], batch_size):
        x_ed = torch.from_numpy(np.ascontiguousarray(ed[s : s + batch_size], dtype=np.float32)).unsqueeze(1)
        x_es = torch.from_numpy(np.ascontiguousarray(es[s : s + batch_size], dtype=np.float32)).unsqueeze(1)
        t = None if targets is None else torch.as_tensor(targets[s : s + batch_size], dtype=torch.long)
        if method == "gradcam":
            r = gradcam(model, x_ed, x_es, target_class=t)
            outs_ed.append(r.ed.numpy())
            outs_es.append(r.es.numpy())
        else:
            r = integrated_gradients(model, x_ed, x_es, target_class=t, steps=ig_steps)
            outs_ed.append(r.ed[:, 0].numpy())
            outs_es.append(r.es[:, 0].numpy())
    size = ed.shape[1:]
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros((0, *size), np.float32)  # noqa: E731
    return CellMaps(ed=cat(outs_ed), es=cat(outs_es))


def select_slices(patient_index: np.ndarray, per_patient: int | None) -> np.ndarray:
    """Rows to score: for each patient (in order), `per_patient` of its slices evenly spaced over its stack
    (slice j of k at position floor((j + 0.5) / k * n); k = 1 gives the middle slice); None = all rows."""
    patient_index = np.asarray(patient_index)
    if per_patient is None:
        return np.arange(patient_index.size)
    out = []
    for p in dict.fromkeys(patient_index.tolist()):
        rows = np.flatnonzero(patient_index == p)
        k = min(per_patient, rows.size)
        pos = np.floor((np.arange(k) + 0.5) / k * rows.size).astype(np.int64)
        out.append(rows[np.unique(pos)])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def scores_path(run: RunFolder, key: CellKey) -> Path:
    """A cell's `scores.json`: written last, so it is also the cell's done marker."""
    return run.saliency_cell_dir(key) / "scores.json"


def panels_path(run: RunFolder, key: CellKey, method: str) -> Path:
    """Arrays of a cell's overlay panels, gathered by `run_saliency` into the per-patient grids."""
    return run.saliency_cell_dir(key) / f"panels_{method}.npz"


def config_label(result: CellResult) -> str:
    """A configuration's row label in overlays and grids."""
    return f"{result.key.init} / {result.key.images}"


def score_cell(run: RunFolder, info: RunInfo, result: CellResult, config: SaliencyConfig, methods: list[str], *,
               overlays: bool) -> dict:
    """One cell's maps and in-heart scores (and, with `overlays`, its overlay PNGs and panel arrays);
    writes and returns the `scores.json` record, written last (the cell's done marker)."""
    key = result.key
    inputs = cell_inputs(run, info, result, config.margin_mm)
    model, _meta = load_classifier(run.model_path(key))
    record = {"backbone": key.backbone, "init": key.init, "images": key.images, "split": key.split,
              "target": config.target, "margin_mm": config.margin_mm, "methods": {}}
    if isinstance(model, PooledDiagnosisModel):
        # a pooled cell scores a patient's whole stack; its maps explain each slice pair as a one-slice patient
        model = model.one_slice_model()
        record["model"] = "patient-pooled cell, explained as one-slice patients (mean features, SD 0)"
    for method in methods:
        rows = select_slices(inputs.test.patient_index, config.slices_for(method))
        record["methods"][method] = _score_method(run, result, inputs, rows, model, method, config, overlays)
    atomic.write_json(scores_path(run, key), record)
    return record


def _score_method(run: RunFolder, result: CellResult, inputs: CellInputs, rows: np.ndarray, model: torch.nn.Module,
                  method: str, config: SaliencyConfig, overlays: bool) -> dict:
    test = inputs.test
    pids = [test.patient_ids[i] for i in test.patient_index[rows]]
    targets = _targets(config.target, test.labels[rows], result)
    maps = saliency_maps(model, test.ed[rows], test.es[rows], targets, method=method, batch_size=config.batch_size,
                         ig_steps=config.ig_steps)
    hed, hes = inputs.heart_ed[rows], inputs.heart_es[rows]
    shares_ed, shares_es = in_heart_share(maps.ed, hed), in_heart_share(maps.es, hes)
    overlay_ids = list(test.patient_ids[: config.overlay_patients]) if overlays else []
    if overlay_ids:
        local = {pid: _overlay_slice(test, rows, pid, hed) for pid in overlay_ids}  # index into `rows`
        for pid, k in local.items():
            r = rows[k]
            save_patient_overlay(
                run.saliency_overlay(method, result.key, pid),
                OverlayPanel(test.ed[r], maps.ed[k], hed[k], panel_title("ED", shares_ed[k])),
                OverlayPanel(test.es[r], maps.es[k], hes[k], panel_title("ES", shares_es[k])),
                title=f"{pid}  {result.key.backbone}  {config_label(result)}  split {result.key.split}",
            )
        ks = np.array(list(local.values()), dtype=np.int64)
        atomic.save_npz(panels_path(run, result.key, method), patient_ids=np.array(overlay_ids),
                        ed_image=test.ed[rows[ks]], es_image=test.es[rows[ks]], ed_map=maps.ed[ks], es_map=maps.es[ks],
                        ed_heart=hed[ks], es_heart=hes[ks], ed_share=shares_ed[ks], es_share=shares_es[ks])
    return {
        "patients": patient_scores(shares_ed, shares_es, pids),
        "chance": patient_scores(heart_area_fraction(hed), heart_area_fraction(hes), pids),
        "n_images": int(2 * len(pids)), "slices_per_patient": config.slices_for(method),
        "n_images_without_positive_saliency": int(np.isnan(shares_ed).sum() + np.isnan(shares_es).sum()),
    }


def panel_title(phase: str, share: float) -> str:
    return f"{phase} {share:.2f}" if np.isfinite(share) else f"{phase} n/a"  # n/a: no positive saliency


def _targets(target: str, labels: np.ndarray, result: CellResult) -> np.ndarray | None:
    if target == "predicted":
        return None
    if target == "true":
        return labels
    classes = list(result.classes)
    if target not in classes:
        raise ConfigError(f"saliency target {target!r} is not a class of cell {result.key} (classes: {classes})")
    return np.full(labels.shape, classes.index(target), dtype=np.int64)


def _overlay_slice(test: SliceSet, rows: np.ndarray, pid: str, heart_ed: np.ndarray) -> int:
    """Position in `rows` of the patient's scored slice with the largest ED heart area (`heart_ed` per row)."""
    mine = np.flatnonzero(test.patient_index[rows] == test.patient_ids.index(pid))
    areas = heart_ed[mine].reshape(len(mine), -1).sum(axis=1)
    return int(mine[int(np.argmax(areas))])
