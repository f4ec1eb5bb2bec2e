"""Prepare a cohort for learning: resample, crop around the heart, normalise, pick slices, cache.

Per patient (ED and ES share one geometry; they must have the same shape and spacing):

1. Intensity: per volume, `(x - p_low) / (p_high - p_low)` clipped to [0, 1], with p_low/p_high the
   1st/99th percentiles (config) of all voxels of that volume (ED and ES normalised separately).
2. In-plane resampling to `pixel_spacing_mm` (default 1.5 mm): bilinear for images (anti-aliased when
   shrinking), nearest for masks, both with pixel-centre alignment (`align_corners=False`), so the output
   pixel i samples source coordinate `(i + 0.5) * target / spacing - 0.5`. Slices are not resampled in z.
3. Crop or zero-pad to `size x size`, centred on the heart: with a `HeartLocation` (the segmenter's
   whole-field-of-view pass, `cmrprior.segmentation.volumes.locate_heart`; the study's path, which needs
   no expert masks) its centre; without one, the centroid of the record's ED mask (labels 1-3, all
   slices; the ES mask if the ED mask is empty: the oracle setting), or the image centre when there are
   no masks. ES uses ED's crop. Steps 2 and 3 are fused (`cmrprior.data.resample.resample_crop`).
4. Slices: the slices with a heart label at ED and at ES (the location's, else the record's masks);
   all slices when there are no masks. Slices with heart at one phase only are left out (a segmented
   image of an empty mask is all zero) and listed in `PreparedCohort.dropped_slices`.
   ED and ES are paired by slice index z. `slice_position` = (z - z_min) / (z_max - z_min) over the kept
   slices (0 = first kept slice as stored, which is basal in ACDC; 0.5 when one slice is kept).
5. Full images of the kept slices: the whole acquired field of view (`full_fov_mm` None) or a
   `full_fov_mm` square around the image centre, padded to a square and resampled to `size x size`
   (steps 1-2 with pixel size fov / size); masks likewise (nearest). Never centred on the heart.

Masks: the location's labels (the segmenter's predictions from the same pass) when given, else the
record's masks. A study on segmenter masks passes records without mask paths, so expert masks are not read.

Cache: `cache_dir/<sha256>`, the hash over the config, a format version, the skip_bad flag and, for each
patient, its record, every source file's path, size and modification time, and its location (centre,
slices, a hash of its labels and the segmenter weights' sha256). A second call with the
same inputs loads `PreparedCohort.load` from there. Input folders are only read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmrprior.data.cache import PREPARE_VERSION, cache_key  # noqa: F401 (cache_key re-exported)
from cmrprior.data.intensity import apply_window
from cmrprior.data.prepare_config import PrepareConfig  # noqa: F401 - re-exported
from cmrprior.data.prepared import HeartLocation, PreparedCohort, PreparedPatient
from cmrprior.data.resample import resample_crop
from cmrprior.errors import ConfigError, DataError
from cmrprior.io.checks import check_field_of_view
from cmrprior.io.load import load_patient
from cmrprior.io.records import Cohort, PatientRecord, PatientVolumes
from cmrprior.utils import atomic
from cmrprior.utils.processes import map_in_processes
from cmrprior.utils.progress import track

log = logging.getLogger(__name__)


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


def heart_slices(ed_labels: np.ndarray, es_labels: np.ndarray) -> tuple[int, ...]:
    """z indices with heart labels at ED or at ES of `(Z, H, W)` masks."""
    heart = (ed_labels > 0).any(axis=(1, 2)) | (es_labels > 0).any(axis=(1, 2))
    return tuple(int(z) for z in np.flatnonzero(heart))


def mask_location(ed_mask: np.ndarray, es_mask: np.ndarray) -> HeartLocation:
    """The location given by masks of the source volume (the expert masks in the oracle setting)."""
    centre = mask_centre(ed_mask)
    if centre is None:
        centre = mask_centre(es_mask)
    if centre is None:
        centre = ((ed_mask.shape[1] - 1) / 2, (ed_mask.shape[2] - 1) / 2)
    return HeartLocation(centre, heart_slices(ed_mask, es_mask), ed_mask, es_mask)


@dataclass(frozen=True, eq=False)
class PreparedArrays:
    """One patient's prepared slices: images float32 `(n, S, S)`, masks uint8 or None, z indices; the
    full images (and masks) of the same slices with their pixel size; z of slices left out."""

    ed: np.ndarray
    es: np.ndarray
    ed_mask: np.ndarray | None
    es_mask: np.ndarray | None
    slice_index: np.ndarray
    slice_position: np.ndarray
    slice_thickness_mm: float
    ed_full: np.ndarray
    es_full: np.ndarray
    ed_full_mask: np.ndarray | None
    es_full_mask: np.ndarray | None
    full_pixel_spacing_mm: float
    dropped: tuple[int, ...] = ()


def _check_pair(volumes: PatientVolumes) -> None:
    ed, es = volumes.ed, volumes.es
    if ed.shape != es.shape:
        raise DataError(es.path, f"ES image shape {es.shape} differs from ED shape {ed.shape} ({ed.path}); "
                                 "ED and ES are paired by slice index")
    if not np.allclose(ed.spacing, es.spacing, rtol=1e-3, atol=1e-4):
        raise DataError(es.path, f"ES spacing {es.spacing} mm differs from ED spacing {ed.spacing} mm ({ed.path})")
    check_field_of_view(ed)  # the minimum of segment predict too: no image that one stage refuses passes another


def _location(volumes: PatientVolumes, location: HeartLocation | None) -> HeartLocation | None:
    if location is not None:
        if location.ed_labels.shape != volumes.ed.shape or location.es_labels.shape != volumes.es.shape:
            raise DataError(volumes.ed.path, f"heart location labels {location.ed_labels.shape} do not match the "
                                             f"image shape {volumes.ed.shape}")
        return location
    if volumes.ed_mask is not None and volumes.es_mask is not None:
        return mask_location(volumes.ed_mask.array, volumes.es_mask.array)
    return None


def full_grid(shape_hw: tuple[int, int], spacing_yx: tuple[float, float], config: PrepareConfig
              ) -> tuple[float, tuple[float, float]]:
    """(pixel size mm, window centre on that grid) of the full images: the square field of view
    (`full_fov_mm`, else the longer side of the acquired one) around the image centre, `size` px wide."""
    fov = config.full_fov_mm or max(shape_hw[0] * spacing_yx[0], shape_hw[1] * spacing_yx[1])
    t = float(fov) / config.size
    centre = tuple((n / 2) * s / t - 0.5 for n, s in zip(shape_hw, spacing_yx))
    return t, centre  # type: ignore[return-value]


def prepare_volumes(volumes: PatientVolumes, config: PrepareConfig, location: HeartLocation | None = None
                    ) -> PreparedArrays:
    """Apply steps 1-5 of the module docstring to one patient's loaded volumes.

    location: where the heart is and its masks (the segmenter's); None = the record's masks, if any.

    Raises:
        DataError: ED and ES differ in shape or spacing (they are paired by slice index), a field of view
            under `cmrprior.io.checks.MIN_FIELD_OF_VIEW_MM`, or the location's labels do not match the images.
    """
    _check_pair(volumes)
    ed, es = volumes.ed, volumes.es
    loc = _location(volumes, location)
    spacing_yx = (ed.spacing[1], ed.spacing[2])
    t = config.pixel_spacing_mm
    centre_src = loc.centre if loc is not None else ((ed.shape[1] - 1) / 2, (ed.shape[2] - 1) / 2)
    # source pixel c sits at output pixel (c + 0.5) * spacing / t - 0.5
    centre = tuple((c + 0.5) * s / t - 0.5 for c, s in zip(centre_src, spacing_yx))
    t_full, centre_full = full_grid(ed.shape[1:], spacing_yx, config)

    def resample(a: np.ndarray, is_mask: bool, full: bool) -> np.ndarray:  # a: kept slices only
        if full:
            return resample_crop(a, spacing_yx, target_mm=t_full, centre=centre_full, size=config.size, is_mask=is_mask)
        return resample_crop(a, spacing_yx, target_mm=t, centre=centre, size=config.size, is_mask=is_mask)

    keep, dropped = np.arange(ed.shape[0]), np.zeros(0, np.int64)
    if loc is not None and config.heart_slices_only:
        keep, dropped = _heart_rows(loc, lambda a: resample(a, True, False), volumes.record.patient_id)

    def image(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.percentile(vol, [config.low_percentile, config.high_percentile])
        win = apply_window(vol[keep], lo, hi)
        return np.clip(resample(win, False, False), 0.0, 1.0), np.clip(resample(win, False, True), 0.0, 1.0)

    def mask(labels: np.ndarray | None, full: bool) -> np.ndarray | None:
        return None if labels is None else resample(labels[keep], True, full)

    (ed_img, ed_full), (es_img, es_full) = image(ed.array), image(es.array)
    ed_lab, es_lab = (loc.ed_labels, loc.es_labels) if loc is not None else (None, None)
    position = (keep - keep[0]) / float(keep[-1] - keep[0]) if len(keep) > 1 else np.full(len(keep), 0.5)
    return PreparedArrays(
        ed=ed_img, es=es_img, ed_mask=mask(ed_lab, False), es_mask=mask(es_lab, False),
        slice_index=keep.astype(np.int64), slice_position=position.astype(np.float32),
        slice_thickness_mm=float(ed.spacing[0]), ed_full=ed_full, es_full=es_full,
        ed_full_mask=mask(ed_lab, True), es_full_mask=mask(es_lab, True), full_pixel_spacing_mm=t_full,
        dropped=tuple(int(z) for z in dropped),
    )


def _heart_rows(loc: HeartLocation, to_crop, patient_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(z kept, z left out): the location's heart slices, less those where the ED or the ES mask is empty
    on the crop (`to_crop`: source labels -> crop), unless `loc.keep_empty`."""
    keep = np.asarray(loc.slices, np.int64)
    if not len(keep):
        log.warning("%s: masks have no heart label; keeping all slices", patient_id)
        return np.arange(loc.ed_labels.shape[0]), np.zeros(0, np.int64)
    if loc.keep_empty:
        return keep, np.zeros(0, np.int64)
    both = to_crop(loc.ed_labels[keep]).any(axis=(1, 2)) & to_crop(loc.es_labels[keep]).any(axis=(1, 2))
    if not both.any():
        log.warning("%s: no slice has heart labels at both phases; keeping the heart slices", patient_id)
        return keep, np.zeros(0, np.int64)
    return keep[both], keep[~both]


def prepare_patient(record: PatientRecord, config: PrepareConfig, location: HeartLocation | None = None
                    ) -> PreparedArrays:
    """Load and prepare one patient. Raises DataError naming the bad file."""
    return prepare_volumes(load_patient(record), config, location)


def _prepare_or_error(args: tuple[PatientRecord, PrepareConfig, HeartLocation | None]) -> PreparedArrays | DataError:
    try:
        return prepare_patient(*args)
    except DataError as exc:
        return exc


# ----------------------------------------------------------------------------------------------------------
# Cohort + cache


def _run(records: list[PatientRecord], config: PrepareConfig, workers: int, progress: bool,
         locations: Mapping[str, HeartLocation] | None) -> Iterable[PreparedArrays | DataError]:
    jobs = [(r, config, None if locations is None else locations[r.patient_id]) for r in records]
    results = map_in_processes(_prepare_or_error, jobs, workers)
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
              skipped: list[tuple[str, str]], locations: Mapping[str, HeartLocation] | None) -> PreparedCohort:
    """One PreparedCohort of the prepared patients, slices stacked in patient order."""
    loc = (lambda pid: None) if locations is None else locations.get  # noqa: E731
    with_masks = all(a.ed_mask is not None for _, a in kept)
    if not with_masks and any(a.ed_mask is not None for _, a in kept):
        log.warning("some patients lack masks: masks dropped for the whole prepared cohort")
    cat = lambda name: np.concatenate([getattr(a, name) for _, a in kept])  # noqa: E731
    return PreparedCohort(
        ed=cat("ed"),
        es=cat("es"),
        ed_mask=cat("ed_mask") if with_masks else None,
        es_mask=cat("es_mask") if with_masks else None,
        ed_full=cat("ed_full"),
        es_full=cat("es_full"),
        ed_full_mask=cat("ed_full_mask") if with_masks else None,
        es_full_mask=cat("es_full_mask") if with_masks else None,
        dropped_slices=tuple((r.patient_id, int(z), "heart mask empty at ED or ES") for r, a in kept for z in a.dropped),
        patient_index=np.concatenate([np.full(len(a.slice_index), i, np.int64) for i, (_, a) in enumerate(kept)]),
        slice_index=cat("slice_index"),
        slice_position=cat("slice_position"),
        patients=tuple(
            PreparedPatient(
                patient_id=r.patient_id, label=r.label, height_cm=r.height_cm, weight_kg=r.weight_kg,
                slice_thickness_mm=a.slice_thickness_mm, n_slices=int(len(a.slice_index)),
                source=str(r.source if r.source is not None else r.ed_image),
                full_pixel_spacing_mm=a.full_pixel_spacing_mm,
                masks_model=getattr(loc(r.patient_id), "model", None),
                masks_model_sha256=getattr(loc(r.patient_id), "model_sha256", None),
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
    locations: Mapping[str, HeartLocation] | None = None,
) -> PreparedCohort:
    """Prepare every patient of `cohort` (module docstring) into one PreparedCohort, cached by hash.

    locations: patient id -> where its heart is and its masks (`cmrprior.segmentation.volumes.
        locate_cohort`); when given, every patient needs one and the records' own masks are not used.
    cache_dir: when given, the result is stored in / loaded from `cache_dir/<cache_key>`.
    skip_bad: leave out patients whose data is bad (and duplicate ids after the first) and list them,
        with the reason, in `PreparedCohort.skipped` (together with `cohort.skipped`).
    workers: processes (1 = in this process; results are identical either way).
    progress: log "prepare: k/N patients done" lines (a bar on a terminal; `cmrprior.utils.progress`).

    Raises:
        DataError: a bad patient (unless skip_bad), duplicate patient ids (unless skip_bad), or no patient
            left to prepare.
    """
    if locations is not None:
        missing = [r.patient_id for r in cohort.patients if r.patient_id not in locations]
        if missing:
            raise DataError(cohort.source, f"no heart location for patients {missing[:5]}")
    key = cache_key(cohort, config, skip_bad=skip_bad, locations=locations)
    folder = Path(cache_dir) / key if cache_dir is not None else None
    if folder is not None and (folder / "cohort.json").is_file():
        log.info("prepared cohort loaded from cache %s", folder)
        return PreparedCohort.load(folder)

    skipped: list[tuple[str, str]] = list(cohort.skipped)
    records = _unique_records(cohort, skip_bad, skipped)
    kept: list[tuple[PatientRecord, PreparedArrays]] = []
    for rec, res in zip(records, _run(records, config, workers, progress, locations)):
        if isinstance(res, DataError):
            if not skip_bad:
                raise res
            log.warning("skipping %s: %s", rec.patient_id, res)
            skipped.append((rec.patient_id, str(res)))
        else:
            kept.append((rec, res))
    if not kept:
        raise DataError(cohort.source, f"no patient could be prepared ({len(skipped)} skipped)")

    prepared = _assemble(kept, cohort, config, key, skipped, locations)
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
