"""Short-axis cine DICOM (every slice at every cardiac phase) into T `Volume`s of one geometry (pydicom).

Input: one folder with the whole cine, or a study folder whose sub-folders are series (scanners often write
one series per slice position). Classic files (one image each) and enhanced multi-frame MR files (one file,
many frames, geometry in the per-frame functional groups) are both read.

1. Localisers/scouts are skipped with a listed reason (`ImageType` LOCALIZER/SCOUT, or a series
   description with a word such as "loc", "localizer", "scout", "survey", "tri-pilot", "3-plane": whole
   words, so "SA cine block" is kept), and so are files that are not DICOM (README.txt, Thumbs.db) and DICOM
   files that are not images (`cmrprior.io.dicom.non_image_reason`; a damaged image is an error naming it).
2. The rest must form one short-axis stack: one study, one orientation, one pixel spacing, one matrix
   (else `DataError` naming the first file that differs).
3. Slices: images grouped by position along the slice normal n = row x column cosine (`ImagePositionPatient
   . n`, within 0.01 mm), sorted along n; the distance between neighbours must be uniform (1 %).
4. Phases within a slice: ordered by `TriggerTime` (`NominalCardiacTriggerDelayTime` for enhanced files),
   else `InstanceNumber`, else acquisition time; every slice must have the same number of phases and no two
   images of a slice the same trigger time (a repeated series).
5. Affine and spacing as in `cmrprior.io.dicom` (voxel (column, row, slice) -> RAS+ mm).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.checks import check_spacing
from cmrprior.io.dicom import _attr, _listing, _read, dicom_files, non_image_reason, pixel_array
from cmrprior.io.records import Volume

log = logging.getLogger(__name__)

_POS_TOL_MM = 0.01
# Whole words of a lower-case description whose punctuation and `_` became spaces ("SA cine block" holds
# "loc" but is no localiser; "LOC_3-plane" is); "3 plane" and "tri pilot" are joined first.
_LOCALISER = re.compile(r"\b(?:loc|locali[sz]ers?|scout|survey|(?:tri)?pilot|3plane)\b")


def _description_words(desc: str) -> str:
    words = re.sub(r"[\W_]+", " ", desc.lower())
    return re.sub(r"\b(3|tri) (plane|pilot)\b", r"\1\2", words)


@dataclass(frozen=True, eq=False)
class Cine:
    """A cine: `frames[t]` is phase t + 1 (1-based in records), all frames share spacing and affine.

    `trigger_times_ms` per frame (mean over slices) or None when unknown; `skipped` lists
    (file, reason) for files left out (localisers, non-images).
    """

    frames: tuple[Volume, ...]
    trigger_times_ms: tuple[float, ...] | None
    path: Path
    skipped: tuple[tuple[Path, str], ...] = ()

    @property
    def n_frames(self) -> int:
        return len(self.frames)


@dataclass
class _Image:
    path: Path
    iop: np.ndarray
    ipp: np.ndarray
    spacing: tuple[float, float]
    shape: tuple[int, int]
    trigger: float | None
    order: tuple[float, ...]  # fallbacks: instance number, acquisition time, file order
    study: str
    pixels: object  # callable () -> float32 (H, W)


def _first(ds, *names: str) -> object | None:
    for name in names:
        value = getattr(ds, name, None)
        if value not in (None, ""):
            return value
    return None


def _float(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _localiser_reason(ds) -> str | None:
    image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
    if any(v in ("LOCALIZER", "SCOUT") for v in image_type):
        return f"localiser/scout image (ImageType {'/'.join(image_type)})"
    desc = str(getattr(ds, "SeriesDescription", "") or "")
    if desc and _LOCALISER.search(_description_words(desc)) and "sax" not in desc.lower():
        return f"localiser/scout series ({desc!r})"
    return None


def _rescale(ds, arr: np.ndarray) -> np.ndarray:
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _classic(ds, path: Path, k: int) -> _Image:
    shape = (int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0)))
    ps = _attr(ds, "PixelSpacing", path, 2)
    order = (_float(getattr(ds, "InstanceNumber", None)) or 0.0,
             _float(str(getattr(ds, "AcquisitionTime", "") or "").replace(":", "")) or 0.0, float(k))
    return _Image(path, np.array(_attr(ds, "ImageOrientationPatient", path, 6)),
                  np.array(_attr(ds, "ImagePositionPatient", path, 3)), (ps[0], ps[1]), shape,
                  _float(_first(ds, "TriggerTime", "NominalCardiacTriggerDelayTime")), order,
                  str(getattr(ds, "StudyInstanceUID", "")),
                  lambda: _rescale(ds, np.asarray(pixel_array(ds, path)).reshape(shape)))


def _group_item(groups, name: str):
    seq = getattr(groups, name, None) if groups is not None else None
    return seq[0] if seq else None


def _enhanced(ds, path: Path, k0: int) -> list[_Image]:
    """One `_Image` per frame of an enhanced multi-frame file (functional groups: per-frame, else shared)."""
    shared = _group_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []
    shape = (int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0)))
    cache: dict[str, np.ndarray] = {}

    def frame_pixels(f: int):
        def get() -> np.ndarray:
            if "a" not in cache:
                cache["a"] = np.asarray(pixel_array(ds, path))
            return _rescale(ds, cache["a"][f])
        return get

    out = []
    for f, fg in enumerate(per_frame):
        def item(name: str):
            return _group_item(fg, name) or _group_item(shared, name)

        where = f"{path} frame {f + 1}"
        pos, ori, meas = item("PlanePositionSequence"), item("PlaneOrientationSequence"), item("PixelMeasuresSequence")
        if pos is None or ori is None or meas is None:
            raise DataError(path, f"frame {f + 1}: plane position, orientation or pixel measures missing")
        sync = item("CardiacSynchronizationSequence")
        trigger = _float(getattr(sync, "NominalCardiacTriggerDelayTime", None)) if sync is not None else None
        ps = _attr(meas, "PixelSpacing", Path(where), 2)
        out.append(_Image(path, np.array(_attr(ori, "ImageOrientationPatient", Path(where), 6)),
                          np.array(_attr(pos, "ImagePositionPatient", Path(where), 3)), (ps[0], ps[1]), shape,
                          trigger, (float(f), 0.0, float(k0 + f)), str(getattr(ds, "StudyInstanceUID", "")),
                          frame_pixels(f)))
    if not out:
        raise DataError(path, "multi-frame file without per-frame functional groups")
    return out


def _collect(folder: Path) -> tuple[list[_Image], list[tuple[Path, str]]]:
    files, others = dicom_files(folder)
    if not files:
        subs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        listed = [dicom_files(d) for d in subs]
        files = [f for fs, _ in listed for f in fs]
        others += [f for _, other in listed for f in other]
    skipped: list[tuple[Path, str]] = [(f, "not a DICOM file") for f in others]
    if not files:
        extra = f" (files that are not DICOM: {_listing(others)})" if others else ""
        raise DataError(folder, f"no DICOM files in the cine folder (nor in its series sub-folders){extra}")
    images: list[_Image] = []
    for k, f in enumerate(files):
        ds = _read(f)
        reason = non_image_reason(ds, f) or _localiser_reason(ds)
        if reason is not None:
            log.info("%s: skipped, %s", f, reason)
            skipped.append((f, reason))
            continue
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            images.extend(_enhanced(ds, f, len(images)))
        else:
            images.append(_classic(ds, f, k))
    if not images:
        first = skipped[len(others)][1] if len(skipped) > len(others) else skipped[0][1]  # a DICOM file's reason
        raise DataError(folder, f"no cine images left after skipping {len(skipped)} file(s): {first}")
    return images, skipped


def _check_stack(images: list[_Image]) -> np.ndarray:
    """One study, orientation, pixel spacing and matrix; returns the slice normal."""
    ref = images[0]
    for im in images[1:]:
        if im.study != ref.study:
            raise DataError(im.path, f"StudyInstanceUID differs from {ref.path.name}: the folder mixes studies")
        if im.shape != ref.shape:
            raise DataError(im.path, f"image size {im.shape} differs from {ref.shape} of {ref.path.name}; mixed series")
        if not np.allclose(im.iop, ref.iop, atol=1e-3):
            raise DataError(im.path, f"ImageOrientationPatient differs from {ref.path.name}: not one short-axis "
                                     "stack (mixed series or an unmarked localiser)")
        if not np.allclose(im.spacing, ref.spacing, rtol=1e-3):
            raise DataError(im.path, f"PixelSpacing {list(im.spacing)} differs from {list(ref.spacing)} of {ref.path.name}")
    row, col = ref.iop[:3], ref.iop[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2 and abs(row @ col) < 1e-2):
        raise DataError(ref.path, f"ImageOrientationPatient {ref.iop.tolist()} is not two orthonormal vectors")
    return np.cross(row, col)


def _slices(images: list[_Image], normal: np.ndarray) -> list[list[_Image]]:
    """Images grouped by position along the normal (sorted), each group ordered by phase."""
    dist = np.array([im.ipp @ normal for im in images])
    order = np.argsort(dist, kind="stable")
    groups: list[list[_Image]] = []
    last = None
    for i in order:
        if last is None or dist[i] - last > _POS_TOL_MM:
            groups.append([])
        groups[-1].append(images[i])
        last = dist[i]
    for g in groups:
        triggers = [im.trigger for im in g]
        if all(t is not None for t in triggers):
            g.sort(key=lambda im: (im.trigger, im.order))
            for a, b in zip(g, g[1:]):
                if abs(a.trigger - b.trigger) < 1e-6:
                    raise DataError(b.path, f"same slice position and TriggerTime {b.trigger:g} ms as {a.path.name}: "
                                            "a repeated series in the folder?")
        else:
            g.sort(key=lambda im: im.order)
    counts = [len(g) for g in groups]
    if len(set(counts)) > 1:
        n = max(set(counts), key=counts.count)
        k = next(i for i, c in enumerate(counts) if c != n)
        raise DataError(groups[k][0].path, f"slice {k + 1} of {len(groups)} has {counts[k]} phases, the others "
                                           f"{n}: missing or extra phases")
    return groups


def read_dicom_cine(folder: str | Path) -> Cine:
    """Read a short-axis cine DICOM folder (or a study folder of series folders) into a `Cine`.

    Raises:
        DataError: missing folder, unreadable file, no images, mixed studies/orientations/spacings/sizes,
            repeated or missing phases, non-uniform slice spacing, implausible spacing, non-finite values.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "DICOM cine folder not found")
    images, skipped = _collect(folder)
    normal = _check_stack(images)
    groups = _slices(images, normal)
    pos = np.array([g[0].ipp @ normal for g in groups])
    gaps = np.diff(pos)
    ref = groups[0][0]
    if len(gaps):
        dz = float(gaps.mean())
        if np.abs(gaps - dz).max() > 0.01 * dz + 1e-3:
            raise DataError(folder, f"non-uniform slice spacing {np.round(gaps, 3).tolist()} mm (missing slices?)")
    else:
        dz = 8.0
    dy, dx = ref.spacing
    check_spacing((dz, dy, dx), folder, n_slices=len(groups))
    affine = np.eye(4)
    affine[:3, 0] = ref.iop[:3] * dx
    affine[:3, 1] = ref.iop[3:] * dy
    affine[:3, 2] = normal * dz
    affine[:3, 3] = ref.ipp
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    frames = []
    for t in range(len(groups[0])):
        array = np.stack([g[t].pixels() for g in groups])
        if not np.isfinite(array).all():
            raise DataError(folder, f"non-finite voxel values in phase {t + 1}")
        frames.append(Volume(array=array, spacing=(dz, float(dy), float(dx)), affine=affine, path=folder))
    triggers = None
    if all(im.trigger is not None for g in groups for im in g):
        triggers = tuple(float(np.mean([g[t].trigger for g in groups])) for t in range(len(groups[0])))
    return Cine(frames=tuple(frames), trigger_times_ms=triggers, path=folder, skipped=tuple(skipped))
