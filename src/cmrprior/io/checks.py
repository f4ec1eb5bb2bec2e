"""Plausibility checks shared by every reader, and the one helper that turns a patient id into a file name.

* Voxel spacing: a short-axis CMR image has pixels of `PLAUSIBLE_INPLANE_MM` and slices
  `PLAUSIBLE_SLICE_MM` apart. Outside these ranges the header is wrong (a 0.001 mm pixel gives a field of view
  of a fraction of a millimetre, blank network inputs and empty masks; a 50 mm pixel makes resampling to the
  1.5 mm network grid allocate tens of gigabytes), so readers refuse it.
* Field of view: an image under `MIN_FIELD_OF_VIEW_MM` on a side cannot hold a heart; `prepare` and
  `segment predict` refuse it through `check_field_of_view`.
* Height and weight: `PLAUSIBLE_HEIGHT_CM` and `PLAUSIBLE_WEIGHT_KG`, from newborns to the heaviest adults. A
  height written in metres (1.72) or a weight in grams would otherwise give a BSA and indexed volumes ten or
  more times wrong without a word, so readers refuse values outside and say the units.
* Patient ids become folder and file names of run folders: an id that is absolute, holds `..` or a path
  separator would write outside the run folder, so readers refuse it and `patient_filename` is used wherever
  a file name is built from an id. That mapping is not one-to-one (`a b` and `a_b`, `müller` and `m_ller`,
  and `P1` and `p1` on case-insensitive disks), so readers refuse a cohort where two ids give one file name:
  one patient's masks would overwrite the other's.
* Cohort-level checks: labels that differ only by case, and two patients sharing image files (train/test
  leakage).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.records import PatientRecord, Volume
from cmrprior.utils.filenames import patient_filename

PLAUSIBLE_INPLANE_MM: tuple[float, float] = (0.2, 5.0)
PLAUSIBLE_SLICE_MM: tuple[float, float] = (1.0, 30.0)
# Smallest in-plane field of view (mm on each side) in which a heart can be found and cropped: an adult heart
# is about 10 cm across. Every stage that looks for the heart (prepare, segment predict) refuses smaller.
MIN_FIELD_OF_VIEW_MM = 48.0
PLAUSIBLE_HEIGHT_CM: tuple[float, float] = (50.0, 250.0)
PLAUSIBLE_WEIGHT_KG: tuple[float, float] = (2.0, 400.0)


def check_spacing(spacing_zyx: Sequence[float], path: str | Path | None, *, n_slices: int | None = None) -> None:
    """Refuse a voxel spacing `(z, y, x)` mm outside the plausible CMR ranges.

    The slice spacing of a single-slice image (`n_slices == 1`) is not checked: it is only a thickness.

    Raises:
        DataError: naming `path`, the spacing and the accepted range.
    """
    z, y, x = (float(s) for s in spacing_zyx)
    lo, hi = PLAUSIBLE_INPLANE_MM
    for name, value in (("row", y), ("column", x)):
        if not (np.isfinite(value) and lo <= value <= hi):
            raise DataError(path, f"implausible in-plane pixel spacing ({name}) {value:g} mm for CMR "
                                  f"(accepted {lo:g}-{hi:g} mm); the header is probably wrong")
    lo, hi = PLAUSIBLE_SLICE_MM
    if n_slices != 1 and not (np.isfinite(z) and lo <= z <= hi):
        raise DataError(path, f"implausible slice spacing {z:g} mm for short-axis CMR (accepted {lo:g}-{hi:g} mm); "
                              "the header is probably wrong")


def body_size_problem(height_cm: float | None, weight_kg: float | None) -> str | None:
    """What is implausible about a height (cm) and weight (kg), or None when both are plausible or absent.

    The message names the value, the accepted range and the unit, with the likely slip (metres, grams).
    """
    lo, hi = PLAUSIBLE_HEIGHT_CM
    if height_cm is not None and not lo <= height_cm <= hi:
        hint = f" (a height in metres? {height_cm:g} m is {height_cm * 100:g} cm)" if height_cm < lo else ""
        return (f"height {height_cm:g} cm is outside the plausible {lo:g}-{hi:g} cm; height must be in "
                f"centimetres{hint}")
    lo, hi = PLAUSIBLE_WEIGHT_KG
    if weight_kg is not None and not lo <= weight_kg <= hi:
        hint = " (a weight in grams or pounds?)" if weight_kg > hi else ""
        return f"weight {weight_kg:g} kg is outside the plausible {lo:g}-{hi:g} kg; weight must be in kilograms{hint}"
    return None


def check_body_size(height_cm: float | None, weight_kg: float | None, path: str | Path | None, where: str) -> None:
    """Refuse an implausible height (cm) or weight (kg); None (not given) passes.

    Raises:
        DataError: naming `path` (the Info.cfg or manifest), `where` (the patient or row) and the value.
    """
    problem = body_size_problem(height_cm, weight_kg)
    if problem is not None:
        raise DataError(path, f"{where}: {problem}")


def check_patient_id(patient_id: str, where: str | Path | None) -> None:
    """Refuse an id that could leave a run folder once used as a file name (absolute, `..`, separators).

    Raises:
        DataError: naming `where` (the manifest or folder the id came from) and the id.
    """
    bad = (not patient_id or patient_id.strip() != patient_id or "/" in patient_id or "\\" in patient_id
           or ".." in patient_id or Path(patient_id).is_absolute() or patient_id.startswith("~")
           or patient_id in {".", ".."} or "\x00" in patient_id or ":" in patient_id)
    if bad:
        raise DataError(where, f"invalid patient id {patient_id!r}: ids must not be empty, absolute, contain '..', "
                               "path separators or ':' (they become file names)")


def check_field_of_view(volume: Volume) -> None:
    """Refuse an image whose in-plane field of view (pixels x spacing) is under `MIN_FIELD_OF_VIEW_MM` on a side.

    Raises:
        DataError: naming the image file, its field of view and the minimum.
    """
    _, h, w = volume.array.shape[-3:]
    fov = (h * float(volume.spacing[1]), w * float(volume.spacing[2]))
    if min(fov) < MIN_FIELD_OF_VIEW_MM:
        raise DataError(volume.path, f"field of view {fov[0]:.0f} x {fov[1]:.0f} mm ({h} x {w} pixels) is too small "
                                     f"for a heart (need >= {MIN_FIELD_OF_VIEW_MM:.0f} mm on each side)")


def check_not_constant(volume: Volume) -> None:
    """Refuse an image whose voxels are all equal (no anatomy to segment or classify).

    Raises:
        DataError: naming the image file.
    """
    arr = volume.array
    if arr.size == 0 or float(arr.max()) == float(arr.min()):
        value = float(arr.flat[0]) if arr.size else float("nan")
        raise DataError(volume.path, f"constant image (every voxel is {value:g}): no anatomy")


def check_labels(records: Sequence[PatientRecord], source: str | Path) -> None:
    """Refuse labels that differ only by case (e.g. "DCM" and "dcm" would become two classes).

    Raises:
        DataError: naming `source` and both spellings.
    """
    seen: dict[str, tuple[str, str]] = {}
    for rec in records:
        if rec.label is None:
            continue
        key = rec.label.casefold()
        if key in seen and seen[key][0] != rec.label:
            first, pid = seen[key]
            raise DataError(source, f"labels {first!r} (patient {pid}) and {rec.label!r} (patient {rec.patient_id}) "
                                    "differ only by case; use one spelling")
        seen.setdefault(key, (rec.label, rec.patient_id))


def _image_files(rec: PatientRecord) -> set[Path]:
    return {Path(p).resolve() for p in (rec.ed_image, rec.es_image, rec.cine) if p is not None}


def check_distinct_images(records: Sequence[PatientRecord], source: str | Path) -> None:
    """Refuse two patients whose image files (ED, ES or cine) are the same file or folder: a patient could
    then be in the training and the test part of a split at once.

    Raises:
        DataError: naming `source`, the shared file and both patient ids.
    """
    owner: dict[Path, str] = {}
    for rec in records:
        for f in sorted(_image_files(rec)):
            if f in owner and owner[f] != rec.patient_id:
                raise DataError(source, f"patients {owner[f]!r} and {rec.patient_id!r} point at the same image {f} "
                                        "(duplicate patient: train/test leakage)")
            owner[f] = rec.patient_id


def check_distinct_filenames(records: Sequence[PatientRecord], source: str | Path) -> None:
    """Refuse two patient ids that give one file name (`patient_filename`, compared without case, as macOS and
    Windows disks do): their output files would overwrite each other.

    Raises:
        DataError: naming `source`, both ids and the file name; or an id that gives no usable file name.
    """
    owner: dict[str, str] = {}
    for rec in records:
        try:
            name = patient_filename(rec.patient_id)
        except DataError as exc:
            raise DataError(source, exc.problem) from exc
        key = name.casefold()
        if key in owner and owner[key] != rec.patient_id:
            raise DataError(source, f"patient ids {owner[key]!r} and {rec.patient_id!r} give the same file name "
                                    f"{name!r} (characters other than letters, digits and ._- become _, and case "
                                    "is ignored): their outputs would overwrite each other; rename one")
        owner.setdefault(key, rec.patient_id)
