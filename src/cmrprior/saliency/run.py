"""Saliency for every configuration of a study run: scores, overlays and the in-heart table.

`run_saliency(run_dir, config)` reads the run folder of `cmrprior study` (layout in
`cmrprior/experiments/README.md`): for every finished cell (`splits/split_{i}/cells/{backbone}/
{init}__{images}/result.json` with status "ok", plus `holdout/cells/...`) it loads the trained model
(`cmrprior.classify.model.load_classifier`) and the exact test slices it was scored on (rebuilt from
`prepared/` and `config.yaml` as `cmrprior.experiments.study.load_cell_inputs` does), computes saliency maps
of both branches for the scored slices of each test patient (`SaliencyConfig.slices_per_patient`, evenly
spaced base to apex; integrated gradients on fewer slices and splits, see SaliencyConfig), and the in-heart
score per image and patient.

Written under `RUN/saliency/` (each file atomically; a cell's `scores.json` is written last and is its
done marker, so a killed run resumes):

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
import torch

from cmrprior.errors import ConfigError, DataError
from cmrprior.io.checks import patient_filename
from cmrprior.saliency.attribution import integrated_gradients
from cmrprior.saliency.gradcam import gradcam
from cmrprior.saliency.geometry import heart_on_input_grid
from cmrprior.saliency.overlays import OverlayPanel, save_grid, save_patient_overlay
from cmrprior.saliency.score import heart_area_fraction, in_heart_share, patient_scores
from cmrprior.utils import atomic

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("gradcam", "integrated_gradients")
METHOD_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients"}


@dataclass(frozen=True)
class SaliencyConfig:
    """Settings of `run_saliency`.

    methods: subset of METHODS. target: "predicted" (each slice's predicted class), "true" (the
    patient's label) or a class name of the run (e.g. "DCM": every map explains that class). margin_mm: heart-mask dilation for the score.
    slices_per_patient: slices scored per test patient (evenly spaced from base to apex; None = all).
    ig_steps: quadrature points of integrated gradients (baseline: zero image); IG costs about
    3 x ig_steps Grad-CAMs, so it runs on the first `ig_splits` splits (and the held-out cells) and on
    `ig_slices_per_patient` slices per patient only. batch_size: slice pairs per forward pass.
    overlay_patients / overlay_splits: how many test patients / splits get overlay images.
    n_boot, level, seed: the score summary's bootstrap (see `cmrprior.saliency.score`).
    """

    methods: tuple[str, ...] = METHODS
    target: str = "predicted"
    margin_mm: float = 5.0
    slices_per_patient: int | None = 3
    ig_steps: int = 8
    ig_splits: int = 1
    ig_slices_per_patient: int = 1
    batch_size: int = 32
    overlay_patients: int = 4
    overlay_splits: int = 1
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"saliency methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"saliency target must be 'predicted', 'true' or a class name, got {self.target!r}")
        if (self.margin_mm < 0 or self.ig_steps < 1 or self.batch_size < 1 or self.ig_slices_per_patient < 1
                or (self.slices_per_patient is not None and self.slices_per_patient < 1)):
            raise ConfigError(f"invalid saliency settings: {self}")


@dataclass(frozen=True)
class SaliencyOutputs:
    folder: Path
    n_cells: int  # cells scored (this call or earlier)
    tables: dict  # {"md": Path, "csv": Path, "json": Path} or {}


@dataclass(frozen=True, eq=False)
class CellMaps:
    """Saliency of one cell's test slices: maps float32 (N, S, S) per branch, heart bool (N, S, S)."""

    ed: np.ndarray
    es: np.ndarray


def find_cells(run_dir: Path, *, unavailable: list | None = None) -> list[dict]:
    """Finished cells of a run: dicts with split, backbone, init, images, folder, result (status "ok" only).

    Cells without a usable model are appended to `unavailable` (when given) as {split, backbone, init,
    images, reason}.
    """
    found = []
    for res_path in sorted(run_dir.glob("splits/split_*/cells/*/*/result.json")) + sorted(
        run_dir.glob("holdout/cells/*/*/result.json")
    ):
        try:
            result = json.loads(res_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(res_path, f"unreadable cell result ({exc})") from exc
        split = "holdout" if res_path.parts[-5] == "holdout" else str(result.get("split"))
        if result.get("status") != "ok" or not (res_path.parent / "model.pt").exists():
            if unavailable is not None:
                unavailable.append({"split": split, "backbone": result.get("backbone"), "init": result.get("init"),
                                    "images": result.get("images"),
                                    "reason": result.get("reason") or f"status {result.get('status')}, no model.pt"})
            continue
        found.append({"split": split, "backbone": result["backbone"], "init": result["init"], "images": result["images"],
                      "folder": res_path.parent, "result": result})
    return found


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


class _RunInputs:
    """Prepared cohorts, slice sets and heart masks of a run, built once per cohort (split or holdout)."""

    def __init__(self, run_dir: Path, margin_mm: float) -> None:
        from cmrprior.experiments.config import StudyConfig

        self.run_dir = run_dir
        self.margin_mm = margin_mm
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.exists():
            raise DataError(run_dir, "not a study run folder (config.yaml missing)")
        self.config = StudyConfig.from_yaml(cfg_path)
        self._cache: dict[str, tuple] = {}

    def cohort(self, split: str):
        key = "holdout" if split == "holdout" else "main"
        if key not in self._cache:
            from cmrprior.data.prepared import PreparedCohort
            from cmrprior.experiments.cohort_data import build_slice_sets

            prep_dir = self.run_dir / "holdout" / "prepared" if key == "holdout" else self.run_dir / "prepared"
            prepared = PreparedCohort.load(prep_dir)
            if prepared.ed_mask is None or prepared.es_mask is None:
                raise DataError(prep_dir, "prepared cohort has no heart masks: the in-heart score needs them")
            sets = build_slice_sets(prepared, self.config)
            hearts = {}
            for kind in sets:
                mode = "full" if kind == "full" else self.config.images.segmented_mode
                kw = dict(margin_mm=self.margin_mm, pixel_spacing_mm=prepared.pixel_spacing_mm, image_mode=mode,
                          image_margin_mm=self.config.images.margin_mm, input_size=self.config.classifier.input_size,
                          groups=prepared.patient_index)
                hearts[kind] = (heart_on_input_grid(prepared.ed_mask, **kw), heart_on_input_grid(prepared.es_mask, **kw))
            self._cache[key] = (prepared, sets, hearts)
        return self._cache[key]

    def cell_inputs(self, cell: dict):
        """(test SliceSet, heart_ed, heart_es, slice rows into the prepared cohort) of one cell."""
        prepared, sets, hearts = self.cohort(cell["split"])
        ids = list(cell["result"]["test"]["patient_ids"])
        data = sets[cell["images"]]
        pos = {p: i for i, p in enumerate(data.patient_ids)}
        missing = [p for p in ids if p not in pos]
        if missing:
            raise DataError(cell["folder"] / "result.json", f"test patients not in the prepared cohort: {missing[:5]}")
        rows = np.concatenate([np.flatnonzero(data.patient_index == pos[p]) for p in ids])
        test = data.subset_patients(ids)  # same slice order as `rows` (E's load_cell_inputs)
        h_ed, h_es = hearts[cell["images"]]
        return test, h_ed[rows], h_es[rows], rows


def _cell_dir(folder: Path, cell: dict) -> Path:
    return folder / "cells" / cell["split"] / cell["backbone"] / f"{cell['init']}__{cell['images']}"


def run_saliency(run_dir: str | Path, config: SaliencyConfig = SaliencyConfig()) -> SaliencyOutputs:
    """Score and draw saliency for every finished cell of a study run; write the in-heart table.

    Resumes: a cell whose scores.json exists with the same settings is not recomputed.
    Raises DataError when `run_dir` is not a study run folder or its prepared cohort lacks masks.
    """
    from cmrprior.saliency.table import write_saliency_table

    run_dir = Path(run_dir)
    folder = run_dir / "saliency"
    inputs = _RunInputs(run_dir, config.margin_mm)
    settings = asdict(config)
    old = folder / "settings.json"
    if old.exists() and json.loads(old.read_text()) != json.loads(json.dumps(settings)):
        log.info("saliency settings changed: recomputing every cell")
        fresh = True
    else:
        fresh = False
    atomic.write_json(old, settings)
    unavailable: list[dict] = []
    cells = find_cells(run_dir, unavailable=unavailable)
    split_order = sorted({c["split"] for c in cells if c["split"] != "holdout"}, key=lambda s: int(s))
    overlay_splits = split_order[: config.overlay_splits]
    ig_splits = set(split_order[: config.ig_splits]) | {"holdout"}
    scored = []
    grid_rows: dict[tuple, list] = defaultdict(list)  # (method, backbone, split, pid) -> [(label, ed, es)]
    changed: set[tuple] = set()  # (backbone, split) with a cell computed in this call
    for cell in cells:
        out = _cell_dir(folder, cell)
        marker = out / "scores.json"
        want_overlays = cell["split"] in overlay_splits or cell["split"] == "holdout"
        if marker.exists() and not fresh:
            scored.append(json.loads(marker.read_text()))
        else:
            methods = [m for m in config.methods if m != "integrated_gradients" or cell["split"] in ig_splits]
            scored.append(_score_cell(cell, inputs, config, folder, want_overlays, methods))
            changed.add((cell["backbone"], cell["split"]))
        label = f"{cell['init']} / {cell['images']}"
        for method in config.methods:
            panels = out / f"panels_{method}.npz"
            if not (want_overlays and panels.exists()):
                continue
            with np.load(panels) as z:
                for i, pid in enumerate(z["patient_ids"].tolist()):
                    ed_p = OverlayPanel(z["ed_image"][i], z["ed_map"][i], z["ed_heart"][i], _title("ED", z["ed_share"][i]))
                    es_p = OverlayPanel(z["es_image"][i], z["es_map"][i], z["es_heart"][i], _title("ES", z["es_share"][i]))
                    grid_rows[(method, cell["backbone"], cell["split"], pid)].append((label, ed_p, es_p))
    for (method, backbone, split, pid), rows in grid_rows.items():
        path = folder / "grids" / method / backbone / f"split_{split}__{patient_filename(pid)}.png"
        if path.exists() and (backbone, split) not in changed:
            continue
        rows = sorted(rows, key=lambda r: r[0])
        save_grid(path, [[r[1], r[2]] for r in rows], [r[0] for r in rows])
    tables = write_saliency_table(scored, run_dir / "tables", n_boot=config.n_boot, level=config.level, seed=config.seed,
                                  margin_mm=config.margin_mm, target=config.target, unavailable=unavailable,
                                  masks_source=_masks_source(run_dir)) if scored else {}
    return SaliencyOutputs(folder=folder, n_cells=len(scored), tables=tables)


def _score_cell(cell: dict, inputs: _RunInputs, config: SaliencyConfig, folder: Path, want_overlays: bool,
                methods: list[str]) -> dict:
    """Compute one cell's maps, scores, overlay PNGs and panel arrays; write scores.json last."""
    from cmrprior.classify.model import load_classifier

    out = _cell_dir(folder, cell)
    test, h_ed, h_es, _ = inputs.cell_inputs(cell)
    model, _meta = load_classifier(cell["folder"] / "model.pt")
    record = {"backbone": cell["backbone"], "init": cell["init"], "images": cell["images"], "split": cell["split"],
              "target": config.target, "margin_mm": config.margin_mm, "methods": {}}
    overlay_ids = list(test.patient_ids[: config.overlay_patients]) if want_overlays else []
    label = f"{cell['init']} / {cell['images']}"
    for method in methods:
        per_patient = config.ig_slices_per_patient if method == "integrated_gradients" else config.slices_per_patient
        rows = select_slices(test.patient_index, per_patient)
        pids = [test.patient_ids[i] for i in test.patient_index[rows]]
        targets = _targets(config.target, test.labels[rows], cell)
        maps = saliency_maps(model, test.ed[rows], test.es[rows], targets, method=method, batch_size=config.batch_size,
                             ig_steps=config.ig_steps)
        hed, hes = h_ed[rows], h_es[rows]
        shares_ed, shares_es = in_heart_share(maps.ed, hed), in_heart_share(maps.es, hes)
        record["methods"][method] = {
            "patients": patient_scores(shares_ed, shares_es, pids),
            "chance": patient_scores(heart_area_fraction(hed), heart_area_fraction(hes), pids),
            "n_images": int(2 * len(pids)), "slices_per_patient": per_patient,
            "n_images_without_positive_saliency": int(np.isnan(shares_ed).sum() + np.isnan(shares_es).sum()),
        }
        if overlay_ids:
            local = {pid: _overlay_slice(test, rows, pid, hed) for pid in overlay_ids}  # index into `rows`
            for pid, k in local.items():
                r = rows[k]
                save_patient_overlay(
                    _overlay_path(folder, method, cell, pid),
                    OverlayPanel(test.ed[r], maps.ed[k], hed[k], _title("ED", shares_ed[k])),
                    OverlayPanel(test.es[r], maps.es[k], hes[k], _title("ES", shares_es[k])),
                    title=f"{pid}  {cell['backbone']}  {label}  split {cell['split']}",
                )
            ks = np.array(list(local.values()), dtype=np.int64)
            atomic.save_npz(out / f"panels_{method}.npz", patient_ids=np.array(overlay_ids),
                            ed_image=test.ed[rows[ks]], es_image=test.es[rows[ks]], ed_map=maps.ed[ks], es_map=maps.es[ks],
                            ed_heart=hed[ks], es_heart=hes[ks], ed_share=shares_ed[ks], es_share=shares_es[ks])
    atomic.write_json(out / "scores.json", record)
    log.info("saliency: split %s %s %s/%s done", cell["split"], cell["backbone"], cell["init"], cell["images"])
    return record


def _masks_source(run_dir: Path) -> str | None:
    meta = run_dir / "prepared" / "masks.json"
    try:
        m = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return str(m.get("masks_source")) if m.get("masks_source") else None


def _title(phase: str, share: float) -> str:
    return f"{phase} {share:.2f}" if np.isfinite(share) else f"{phase} n/a"  # n/a: no positive saliency


def _targets(target: str, labels: np.ndarray, cell: dict) -> np.ndarray | None:
    if target == "predicted":
        return None
    if target == "true":
        return labels
    classes = list(cell["result"].get("classes", []))
    if target not in classes:
        raise ConfigError(f"saliency target {target!r} is not a class of {cell['folder']} (classes: {classes})")
    return np.full(labels.shape, classes.index(target), dtype=np.int64)


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


def _overlay_path(folder: Path, method: str, cell: dict, pid: str) -> Path:
    return (folder / "overlays" / method / cell["backbone"] / f"{cell['init']}__{cell['images']}"
            / f"split_{cell['split']}" / f"{patient_filename(pid)}.png")


def _overlay_slice(test, rows: np.ndarray, pid: str, heart_ed: np.ndarray) -> int:
    """Position in `rows` of the patient's scored slice with the largest ED heart area (`heart_ed` per row)."""
    mine = np.flatnonzero(test.patient_index[rows] == test.patient_ids.index(pid))
    areas = heart_ed[mine].reshape(len(mine), -1).sum(axis=1)
    return int(mine[int(np.argmax(areas))])
