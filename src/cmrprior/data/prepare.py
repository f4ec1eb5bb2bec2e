"""Prepare a cohort for learning: resample, crop around the heart, normalise, pick slices, cache.

Per patient (ED and ES share one geometry; they must have the same shape and spacing):

1. Intensity: per volume, `(x - p_low) / (p_high - p_low)` clipped to [0, 1], with p_low/p_high the
   1st/99th percentiles (config) of all voxels of that volume (ED and ES normalised separately).
2. In-plane resampling to `pixel_spacing_mm` (default 1.5 mm): bilinear for images (anti-aliased when
   shrinking), nearest for masks, both with pixel-centre alignment (`align_corners=False`), so the output
   pixel i samples source coordinate `(i + 0.5) * target / spacing - 0.5`. Slices are not resampled in z.
3. Crop or zero-pad to `size x size`, centred on the centroid of the ED heart mask (labels 1-3, all slices;
   the ES mask if the ED mask is empty), or on the image centre when there are no masks. ES uses ED's crop.
   Steps 2 and 3 are fused (`cmrprior.data.resample.resample_crop`): only the output window is computed.
4. Slices: when masks exist, the slices where the ED or ES mask has a heart label; else all slices.
   ED and ES are paired by slice index z. `slice_position` = (z - z_min) / (z_max - z_min) over the kept
   slices (0 = first kept slice as stored, which is basal in ACDC; 0.5 when one slice is kept).

Cache: `cache_dir/<sha256>`, the hash over the config, a format version, the skip_bad flag and, for each
patient, its record and every source file's path, size and modification time. A second call with the
same inputs loads `PreparedCohort.load` from there. Input folders are only read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmrprior.data.intensity import apply_window
from cmrprior.data.prepared import PreparedCohort, PreparedPatient
from cmrprior.data.resample import resample_crop
from cmrprior.errors import ConfigError, DataError
from cmrprior.io.load import load_patient
from cmrprior.io.records import Cohort, PatientRecord, PatientVolumes
from cmrprior.utils import atomic
from cmrprior.utils.progress import track

log = logging.getLogger(__name__)

PREPARE_VERSION = 1


@dataclass(frozen=True)
class PrepareConfig:
    """How to prepare a cohort (all fields enter the cache hash).

    pixel_spacing_mm: in-plane output spacing in mm.
    size: output height = width in pixels.
    low_percentile, high_percentile: intensity window per volume, mapped to [0, 1] and clipped.
    heart_slices_only: keep only slices with a heart label at ED or ES (when masks exist).
    """

    pixel_spacing_mm: float = 1.5
    size: int = 128
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    heart_slices_only: bool = True

    def __post_init__(self) -> None:
        if not (self.pixel_spacing_mm > 0 and np.isfinite(self.pixel_spacing_mm)):
            raise ConfigError(f"pixel_spacing_mm must be a positive number, got {self.pixel_spacing_mm}")
        if int(self.size) != self.size or self.size < 8:
            raise ConfigError(f"size must be an integer >= 8, got {self.size}")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ConfigError(
                f"need 0 <= low_percentile < high_percentile <= 100, got {self.low_percentile}, {self.high_percentile}"
            )


# ----------------------------------------------------------------------------------------------------------
# One patient


def mask_centre(mask: np.ndarray) -> tuple[float, float] | None:
    """Centroid `(row, col)` of all heart voxels (label > 0) of a `(Z, H, W)` mask; None when empty."""
    fg = mask > 0
    if not fg.any():
        return None
    counts_r = fg.sum(axis=(0, 2)).astype(np.float64)
    counts_c = fg.sum(axis=(0, 1)).astype(np.float64)
    total = counts_r.sum()
    return (float(counts_r @ np.arange(fg.shape[1])) / total, float(counts_c @ np.arange(fg.shape[2])) / total)


@dataclass(frozen=True, eq=False)
class PreparedArrays:
    """One patient's prepared slices: images float32 `(n, S, S)`, masks uint8 or None, z indices."""

    ed: np.ndarray
    es: np.ndarray
    ed_mask: np.ndarray | None
    es_mask: np.ndarray | None
    slice_index: np.ndarray
    slice_position: np.ndarray
    slice_thickness_mm: float


def prepare_volumes(volumes: PatientVolumes, config: PrepareConfig) -> PreparedArrays:
    """Apply steps 1-4 of the module docstring to one patient's loaded volumes.

    Raises:
        DataError: ED and ES differ in shape or spacing (they are paired by slice index).
    """
    ed, es = volumes.ed, volumes.es
    if ed.shape != es.shape:
        raise DataError(es.path, f"ES image shape {es.shape} differs from ED shape {ed.shape} ({ed.path}); "
                                 "ED and ES are paired by slice index")
    if not np.allclose(ed.spacing, es.spacing, rtol=1e-3, atol=1e-4):
        raise DataError(es.path, f"ES spacing {es.spacing} mm differs from ED spacing {ed.spacing} mm ({ed.path})")
    has_masks = volumes.ed_mask is not None and volumes.es_mask is not None
    z_all = np.arange(ed.shape[0])
    keep = z_all
    if has_masks and config.heart_slices_only:
        heart = (volumes.ed_mask.array > 0).any(axis=(1, 2)) | (volumes.es_mask.array > 0).any(axis=(1, 2))
        if heart.any():
            keep = z_all[heart]
        else:
            log.warning("%s: masks have no heart label; keeping all slices", volumes.record.patient_id)
    spacing_yx = (ed.spacing[1], ed.spacing[2])
    t = config.pixel_spacing_mm
    scale = (spacing_yx[0] / t, spacing_yx[1] / t)
    centre_src = None
    if has_masks:
        centre_src = mask_centre(volumes.ed_mask.array)
        if centre_src is None:
            centre_src = mask_centre(volumes.es_mask.array)
    if centre_src is None:
        centre_src = ((ed.shape[1] - 1) / 2, (ed.shape[2] - 1) / 2)
    # source pixel c sits at output pixel (c + 0.5) * scale - 0.5
    centre = ((centre_src[0] + 0.5) * scale[0] - 0.5, (centre_src[1] + 0.5) * scale[1] - 0.5)

    def resample(a: np.ndarray, is_mask: bool = False) -> np.ndarray:  # a: kept slices only
        return resample_crop(a, spacing_yx, target_mm=t, centre=centre, size=config.size, is_mask=is_mask)

    def image(vol: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(vol, [config.low_percentile, config.high_percentile])
        return np.clip(resample(apply_window(vol[keep], lo, hi)), 0.0, 1.0)

    ed_img, es_img = image(ed.array), image(es.array)
    ed_m = resample(volumes.ed_mask.array[keep], True) if has_masks else None
    es_m = resample(volumes.es_mask.array[keep], True) if has_masks else None
    if len(keep) > 1:
        position = (keep - keep[0]) / float(keep[-1] - keep[0])
    else:
        position = np.full(len(keep), 0.5)
    return PreparedArrays(
        ed=ed_img, es=es_img, ed_mask=ed_m, es_mask=es_m,
        slice_index=keep.astype(np.int64), slice_position=position.astype(np.float32),
        slice_thickness_mm=float(ed.spacing[0]),
    )


def prepare_patient(record: PatientRecord, config: PrepareConfig) -> PreparedArrays:
    """Load and prepare one patient. Raises DataError naming the bad file."""
    return prepare_volumes(load_patient(record), config)


def _prepare_or_error(args: tuple[PatientRecord, PrepareConfig]) -> PreparedArrays | DataError:
    try:
        return prepare_patient(*args)
    except DataError as exc:
        return exc


# ----------------------------------------------------------------------------------------------------------
# Cohort + cache


def _record_files(record: PatientRecord) -> list[Path]:
    paths = [record.ed_image, record.es_image, record.ed_mask, record.es_mask]
    files: list[Path] = []
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        else:
            files.append(p)
    return files


def cache_key(cohort: Cohort, config: PrepareConfig, *, skip_bad: bool = False) -> str:
    """sha256 hex of config, format version, skip_bad and each patient's record and source-file stats."""
    h = hashlib.sha256()
    head = {"version": PREPARE_VERSION, "config": asdict(config), "skip_bad": skip_bad,
            "classes": list(cohort.classes), "skipped": [list(s) for s in cohort.skipped]}
    h.update(json.dumps(head, sort_keys=True).encode())
    for rec in cohort.patients:
        h.update(json.dumps(asdict(rec), sort_keys=True, default=str).encode())
        for f in _record_files(rec):
            try:
                st = os.stat(f)
                h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{os.path.abspath(f)}|missing\n".encode())
    return h.hexdigest()


def _run(records: list[PatientRecord], config: PrepareConfig, workers: int, progress: bool
         ) -> Iterable[PreparedArrays | DataError]:
    jobs = [(r, config) for r in records]
    if workers <= 1 or len(jobs) < 4:
        results: Iterable = map(_prepare_or_error, jobs)
        yield from track(results, "prepare", len(jobs), log, unit="patients") if progress else results
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        results = pool.map(_prepare_or_error, jobs, chunksize=4)
        yield from track(results, "prepare", len(jobs), log, unit="patients") if progress else results


def _unique_records(cohort: Cohort, skip_bad: bool, skipped: list[tuple[str, str]]) -> list[PatientRecord]:
    """The cohort's records, the first of each patient id; later duplicates raise DataError or, with
    `skip_bad`, are appended to `skipped` (patient id, reason)."""
    records: list[PatientRecord] = []
    seen: set[str] = set()
    for rec in cohort.patients:
        if rec.patient_id in seen:
            err = DataError(rec.source or rec.ed_image, f"duplicate patient id {rec.patient_id!r}")
            if not skip_bad:
                raise err
            skipped.append((rec.patient_id, str(err)))
            continue
        seen.add(rec.patient_id)
        records.append(rec)
    return records


def _assemble(kept: list[tuple[PatientRecord, PreparedArrays]], cohort: Cohort, config: PrepareConfig, key: str,
              skipped: list[tuple[str, str]]) -> PreparedCohort:
    """One PreparedCohort of the prepared patients, slices stacked in patient order."""
    with_masks = all(a.ed_mask is not None for _, a in kept)
    if not with_masks and any(a.ed_mask is not None for _, a in kept):
        log.warning("some patients lack masks: masks dropped for the whole prepared cohort")
    cat = lambda name: np.concatenate([getattr(a, name) for _, a in kept])  # noqa: E731
    return PreparedCohort(
        ed=cat("ed"),
        es=cat("es"),
        ed_mask=cat("ed_mask") if with_masks else None,
        es_mask=cat("es_mask") if with_masks else None,
        patient_index=np.concatenate([np.full(len(a.slice_index), i, np.int64) for i, (_, a) in enumerate(kept)]),
        slice_index=cat("slice_index"),
        slice_position=cat("slice_position"),
        patients=tuple(
            PreparedPatient(
                patient_id=r.patient_id, label=r.label, height_cm=r.height_cm, weight_kg=r.weight_kg,
                slice_thickness_mm=a.slice_thickness_mm, n_slices=int(len(a.slice_index)),
                source=str(r.source if r.source is not None else r.ed_image),
            )
            for r, a in kept
        ),
        classes=cohort.classes,
        pixel_spacing_mm=config.pixel_spacing_mm,
        config_hash=key,
        skipped=tuple(skipped),
    )


def prepare_cohort(
    cohort: Cohort,
    config: PrepareConfig = PrepareConfig(),
    cache_dir: str | Path | None = None,
    *,
    skip_bad: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> PreparedCohort:
    """Prepare every patient of `cohort` (module docstring) into one PreparedCohort, cached by hash.

    cache_dir: when given, the result is stored in / loaded from `cache_dir/<cache_key>`.
    skip_bad: leave out patients whose data is bad (and duplicate ids after the first) and list them,
        with the reason, in `PreparedCohort.skipped` (together with `cohort.skipped`).
    workers: processes (1 = in this process; results are identical either way).
    progress: log "prepare: k/N patients done" lines (a bar on a terminal; `cmrprior.utils.progress`).

    Raises:
        DataError: a bad patient (unless skip_bad), duplicate patient ids (unless skip_bad), or no patient
            left to prepare.
    """
    key = cache_key(cohort, config, skip_bad=skip_bad)
    folder = Path(cache_dir) / key if cache_dir is not None else None
    if folder is not None and (folder / "cohort.json").is_file():
        log.info("prepared cohort loaded from cache %s", folder)
        return PreparedCohort.load(folder)

    skipped: list[tuple[str, str]] = list(cohort.skipped)
    records = _unique_records(cohort, skip_bad, skipped)
    kept: list[tuple[PatientRecord, PreparedArrays]] = []
    for rec, res in zip(records, _run(records, config, workers, progress)):
        if isinstance(res, DataError):
            if not skip_bad:
                raise res
            log.warning("skipping %s: %s", rec.patient_id, res)
            skipped.append((rec.patient_id, str(res)))
        else:
            kept.append((rec, res))
    if not kept:
        raise DataError(cohort.source, f"no patient could be prepared ({len(skipped)} skipped)")

    prepared = _assemble(kept, cohort, config, key, skipped)
    if folder is not None:
        atomic.write_json(folder / "prepare.json", {"config": asdict(config), "version": PREPARE_VERSION,
                                                    "source": str(cohort.source), "skip_bad": skip_bad})
        prepared.save(folder)
    return prepared


def load_prepared(path: str | Path) -> PreparedCohort:
    """Load a prepared cohort from a cache folder (with cohort.json) or a `cmrprior prepare --out` folder.

    Raises:
        DataError: neither a cache folder nor a prepare output folder.
    """
    path = Path(path)
    if (path / "cohort.json").is_file():
        return PreparedCohort.load(path)
    pointer = path / "prepared.json"
    if pointer.is_file():
        info = json.loads(pointer.read_text())
        return PreparedCohort.load(path / info["cache"])
    raise DataError(path, "not a prepared cohort (no cohort.json or prepared.json)")
