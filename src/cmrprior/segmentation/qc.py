"""Quality control of heart masks: overlap and distance against ground truth, and plausibility flags.

Metrics (per structure RV, MYO, LV, per patient and phase, in 3D on the prepared grid):
* Dice = 2|A∩B| / (|A| + |B|); NaN when both are empty, 0 when exactly one is.
* Hausdorff distance (mm) between the surfaces (boundary voxels) of A and B, with anisotropic voxel
  spacing `(slice thickness, pixel, pixel)`: HD = the largest surface distance either way; HD95 = the
  larger of the two directed 95th percentiles (A->B and B->A), the definition of MONAI's
  `compute_hausdorff_distance(directed=False, percentile=95)`; NaN when either mask is empty.

Flags (no ground truth needed), one row per patient and phase:
* `empty_heart`: no heart label on any slice.
* `missing_structure_mid`: a structure absent on a mid-ventricular slice (middle third of the stack).
* `myo_not_surrounding_lv`: on a slice with LV cavity, less than `ring_fraction` of the cavity's outer
  boundary pixels touch myocardium.
* `volume_jump`: the heart area changes by more than `jump_ratio` times between neighbouring slices
  (both areas above `min_area_px`).
* `tiny_field_of_view` and `blank_image` (image checks): fewer than `min_fov_px` pixels per side, or a
  constant image.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cmrprior.errors import InputError
from cmrprior.utils import atomic
from cmrprior.utils.intervals import t_interval

STRUCTURES: dict[int, str] = {1: "RV", 2: "MYO", 3: "LV"}
MASK_FLAGS: tuple[str, ...] = ("empty_heart", "missing_structure_mid", "myo_not_surrounding_lv", "volume_jump")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean arrays of the same shape (NaN when both are empty); InputError when shapes differ."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise InputError(f"shapes differ: {pred.shape} vs {truth.shape}")
    denom = int(pred.sum()) + int(truth.sum())
    if denom == 0:
        return float("nan")
    return 2.0 * int((pred & truth).sum()) / denom


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a bool mask: voxels of the mask with a 4/6-connected neighbour outside it
    (the image border counts as outside)."""
    mask = np.asarray(mask, bool)
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~eroded


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of `a` to the nearest surface voxel of `b`, and back.

    Computed on the bounding box of `a | b` plus one voxel (clipped at the image border, which keeps its
    meaning for `surface`): every surface voxel lies inside it, so the distances are those of the whole
    grid, at a fraction of the distance transforms' cost."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    both = np.argwhere(a | b)
    if len(both):
        lo, hi = np.maximum(both.min(0) - 1, 0), np.minimum(both.max(0) + 2, a.shape)
        box = tuple(slice(int(i), int(j)) for i, j in zip(lo, hi))
        a, b = a[box], b[box]
    sa, sb = surface(a), surface(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return dist_to_b[sa], dist_to_a[sb]


def hausdorff(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], percentile: float = 100.0) -> float:
    """Symmetric Hausdorff distance in mm: the larger of the two directed `percentile`s of surface
    distances (100 = the classical maximum). NaN when either mask is empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() or not truth.any():
        return float("nan")
    d_ab, d_ba = surface_distances(pred, truth, spacing)
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def structure_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Dice, HD95 and HD (mm) for RV, MYO, LV of one label volume `(Z, H, W)` against the truth.
    Keys like `dice_LV`, `hd95_LV`, `hd_LV`."""
    out: dict[str, float] = {}
    for value, name in STRUCTURES.items():
        p, t = pred == value, truth == value
        out[f"dice_{name}"] = dice(p, t)
        out[f"hd95_{name}"] = hausdorff(p, t, spacing, 95.0)
        out[f"hd_{name}"] = hausdorff(p, t, spacing, 100.0)
    return out


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and Student-t confidence interval of the finite values: (mean, low, high, n)."""
    mean, low, high = t_interval(values, 0.0, level)
    return mean, low, high, int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())


@dataclass(frozen=True)
class FlagConfig:
    ring_fraction: float = 0.5
    jump_ratio: float = 3.0
    min_area_px: int = 20
    min_fov_px: int = 32


def mask_flags(labels: np.ndarray, config: FlagConfig = FlagConfig()) -> dict[str, bool | str]:
    """Plausibility flags of one label stack uint8 `(Z, H, W)` (slices in anatomical order).

    Returns booleans `empty_heart`, `missing_structure_mid`, `myo_not_surrounding_lv`, `volume_jump` and
    `details` (a short text of where). Raises InputError when `labels` is not 3D.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels must be (Z, H, W), got shape {labels.shape}")
    z = labels.shape[0]
    heart_area = (labels > 0).reshape(z, -1).sum(axis=1)
    details: list[str] = []
    empty = bool(heart_area.sum() == 0)
    missing = False
    if not empty:
        hz = np.flatnonzero(heart_area > 0)
        lo, hi = hz[0], hz[-1]
        third = (hi - lo + 1) / 3.0
        mid = [k for k in range(lo, hi + 1) if lo + third <= k < hi + 1 - third] or [int((lo + hi) // 2)]
        for k in mid:
            absent = [name for value, name in STRUCTURES.items() if not (labels[k] == value).any()]
            if absent:
                missing = True
                details.append(f"slice {k}: no {'/'.join(absent)}")
    ring_bad = False
    for k in range(z):
        lv = labels[k] == 3
        if lv.sum() < 5:
            continue
        outer = ndimage.binary_dilation(lv) & ~lv
        touching = (labels[k][outer] == 2).mean() if outer.any() else 0.0
        if touching < config.ring_fraction:
            ring_bad = True
            details.append(f"slice {k}: myocardium covers {touching:.0%} of the LV border")
    jump = False
    for k in range(z - 1):
        a, b = heart_area[k], heart_area[k + 1]
        if min(a, b) >= config.min_area_px and max(a, b) > config.jump_ratio * min(a, b):
            jump = True
            details.append(f"slices {k}-{k + 1}: heart area {a} -> {b} px")
    if empty:
        details.append("no heart label on any slice")
    return {"empty_heart": empty, "missing_structure_mid": missing, "myo_not_surrounding_lv": ring_bad,
            "volume_jump": jump, "details": "; ".join(details)}


def image_flags(image: np.ndarray, config: FlagConfig = FlagConfig()) -> dict[str, bool]:
    """Input checks for one image stack `(Z, H, W)`: `blank_image` (constant) and `tiny_field_of_view`.

    Raises InputError when `image` is not 3D.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"image must be (Z, H, W), got shape {image.shape}")
    blank = bool(image.size == 0 or float(np.nanmax(image)) == float(np.nanmin(image)))
    tiny = bool(min(image.shape[1:]) < config.min_fov_px)
    return {"blank_image": blank, "tiny_field_of_view": tiny}


def evaluate_prepared(pred, truth=None, config: FlagConfig = FlagConfig()) -> list[dict]:
    """QC rows for a predicted `PreparedCohort` (`pred`), one per patient and phase.

    Each row: patient_id, label, phase, n_slices, the flags of `mask_flags` and, when `truth` (a cohort
    with ground-truth masks, same patients and slices) is given, the metrics of `structure_metrics` with
    spacing `(slice thickness, pixel, pixel)` mm.
    """
    rows: list[dict] = []
    for p, info in enumerate(pred.patients):
        idx = np.flatnonzero(pred.patient_index == p)
        idx = idx[np.argsort(pred.slice_index[idx], kind="stable")]
        t_idx = None
        if truth is not None:
            tp = truth.patient_ids.index(info.patient_id)
            t_idx = np.flatnonzero(truth.patient_index == tp)
            t_idx = t_idx[np.argsort(truth.slice_index[t_idx], kind="stable")]
        for phase in ("ed", "es"):
            lab = getattr(pred, f"{phase}_mask")[idx]
            row: dict = {"patient_id": info.patient_id, "label": info.label, "phase": phase.upper(),
                         "n_slices": int(idx.size)}
            row.update(mask_flags(lab, config))
            if truth is not None:
                spacing = (info.slice_thickness_mm, pred.pixel_spacing_mm, pred.pixel_spacing_mm)
                row.update(structure_metrics(lab, getattr(truth, f"{phase}_mask")[t_idx], spacing))
            rows.append(row)
    return rows


def write_mask_flags(prepared, path: str | Path, config: FlagConfig = FlagConfig()) -> Path:
    """Plausibility flags of the masks of a `PreparedCohort` (the masks the study uses; no ground truth needed),
    written as CSV at `path` (the study's is `RunFolder.mask_flags_csv`, `RUN/qc/mask_flags.csv`).

    One row per patient and phase, in cohort order: patient_id, label, phase (ED | ES), n_slices (count),
    the booleans of MASK_FLAGS (True | False), details (where; areas in px). Returns `path`.
    Raises DataError when the cohort has no masks.
    """
    from cmrprior.errors import DataError

    if prepared.ed_mask is None or prepared.es_mask is None:
        raise DataError(path, "mask flags need heart masks and the prepared cohort has none")
    columns = ["patient_id", "label", "phase", "n_slices", *MASK_FLAGS, "details"]
    rows = [{k: r[k] for k in columns} for r in evaluate_prepared(prepared, config=config)]
    write_csv(rows, path, columns)
    return Path(path)


def summarise(rows: list[dict], level: float = 0.95) -> list[dict]:
    """Mean and t confidence interval of every metric, per phase (ED, ES) and overall."""
    metrics = [k for k in rows[0] if k.startswith(("dice_", "hd95_", "hd_"))] if rows else []
    out = []
    for phase in ("ED", "ES", "all"):
        sel = [r for r in rows if phase == "all" or r["phase"] == phase]
        for m in metrics:
            mean, lo, hi, n = mean_ci([r[m] for r in sel], level)
            out.append({"phase": phase, "metric": m, "mean": mean, "ci_low": lo, "ci_high": hi, "n": n})
    return out


def write_csv(rows: list[dict], path, columns: Sequence[str] | None = None) -> None:
    """Write rows (dicts with the same keys) as CSV, atomically; `columns`: the header (a header row even
    without rows), default the first row's keys."""
    buf = io.StringIO()
    if rows or columns:
        writer = csv.DictWriter(buf, fieldnames=list(columns or rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    atomic.write_text(path, buf.getvalue())
