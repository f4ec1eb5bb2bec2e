"""Reader for the ACDC folder layout (training and official testing sets).

Layout::

    ROOT/patientNNN/Info.cfg                  ED, ES, Group, Height, Weight, NbFrame ("Key: value" lines)
    ROOT/patientNNN/patientNNN_frameXX.nii.gz ED and ES frames, XX = zero-padded 1-based frame number
    ROOT/patientNNN/patientNNN_frameXX_gt.nii.gz   optional masks (0 BG, 1 RV, 2 MYO, 3 LV cavity)
    ROOT/patientNNN/patientNNN_4d.nii.gz      optional 4D cine (X, Y, Z, T)

When a frame file is missing but the 4D cine is present, the record points at the cine and the loader
takes the frame from it. In the official testing set Info.cfg has no Group: if no patient of the folder
has a Group the cohort is unlabelled (label None); if some do, a missing Group is an error.
Only headers and Info.cfg are touched here; voxels are loaded by `cmrprior.io.load.load_patient`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.checks import (check_body_size, check_distinct_filenames, check_distinct_images, check_labels,
                                 check_patient_id)
from cmrprior.utils.filenames import patient_filename
from cmrprior.io.records import ACDC_CLASSES, Cohort, PatientRecord

INFO_FILE = "Info.cfg"
_KEY_VALUE = re.compile(r"^\s*([A-Za-z]+)\s*[:=]\s*(.*?)\s*$")


def parse_info_cfg(path: str | Path) -> dict[str, str]:
    """Parse an ACDC Info.cfg into a dict of raw strings (keys as written: ED, ES, Group, ...).

    Raises:
        DataError: file missing or unreadable, a non-blank line that is not `Key: value`, or a key given
            twice (which of two Group lines is meant cannot be known).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "Info.cfg not found")
    try:
        # utf-8-sig: a byte-order mark (Windows editors add one) is dropped, as the manifest reader does.
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read Info.cfg ({exc})") from exc
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _KEY_VALUE.match(line)
        if not m:
            raise DataError(path, f"malformed line {n}: {line.strip()!r} (expected 'Key: value')")
        if m.group(1) in out:
            raise DataError(path, f"line {n}: {m.group(1)} given twice ({out[m.group(1)]!r} and {m.group(2)!r})")
        out[m.group(1)] = m.group(2)
    return out


def _int_field(info: dict[str, str], key: str, path: Path, required: bool) -> int | None:
    if key not in info or info[key] == "":
        if required:
            raise DataError(path, f"missing {key} in Info.cfg")
        return None
    raw = info[key]
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value == value or value != int(value):
        raise DataError(path, f"{key} must be an integer frame number, got {raw!r}")
    return int(value)


def _float_field(info: dict[str, str], key: str, path: Path) -> float | None:
    raw = info.get(key, "")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise DataError(path, f"{key} must be a number, got {raw!r}") from exc
    if not value == value or value <= 0:
        raise DataError(path, f"{key} must be a positive number, got {raw!r}")
    return value


def _find_frame(folder: Path, pid: str, frame: int, suffix: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        for stem in (f"{pid}_frame{frame:02d}{suffix}", f"{pid}_frame{frame}{suffix}"):
            cand = folder / f"{stem}{ext}"
            if cand.is_file():
                return cand
    return None


def read_acdc_patient(folder: str | Path, *, require_group: bool = True,
                      allowed_labels: tuple[str, ...] | None = ACDC_CLASSES) -> PatientRecord:
    """One `patientNNN/` folder -> PatientRecord (paths only; nothing is decoded).

    Raises:
        DataError: missing/malformed Info.cfg (missing ED/ES, or Group when `require_group`; non-integer
            frame; frame outside 1..NbFrame; ED equal to ES; Height or Weight outside the plausible range in cm and
            kg, see `cmrprior.io.checks`), invalid folder name as patient id, unknown Group, missing ED/ES frame file (and no 4D cine),
            or only one of the two masks present.
    """
    folder = Path(folder)
    pid = folder.name
    check_patient_id(pid, folder)
    cfg = folder / INFO_FILE
    info = parse_info_cfg(cfg)
    ed = _int_field(info, "ED", cfg, required=True)
    es = _int_field(info, "ES", cfg, required=True)
    n_frames = _int_field(info, "NbFrame", cfg, required=False)
    assert ed is not None and es is not None
    for key, frame in (("ED", ed), ("ES", es)):
        if frame < 1 or (n_frames is not None and frame > n_frames):
            limit = f"1..{n_frames}" if n_frames is not None else ">= 1"
            raise DataError(cfg, f"{key} frame {frame} out of range ({limit})")
    if ed == es:
        raise DataError(cfg, f"ED and ES are the same frame ({ed}); they must be two different phases")
    group = info.get("Group") or None
    if group is None and require_group:
        raise DataError(cfg, "missing Group in Info.cfg")
    if group is not None and allowed_labels is not None and group not in allowed_labels:
        raise DataError(cfg, f"unknown Group {group!r} (expected one of {', '.join(allowed_labels)})")

    cine = next((c for c in (folder / f"{pid}_4d.nii.gz", folder / f"{pid}_4d.nii") if c.is_file()), None)
    images: dict[str, Path] = {}
    for key, frame in (("ED", ed), ("ES", es)):
        found = _find_frame(folder, pid, frame, "")
        if found is None:
            if cine is None:
                raise DataError(folder / f"{pid}_frame{frame:02d}.nii.gz", f"{key} frame file not found (and no {pid}_4d.nii.gz)")
            found = cine
        images[key] = found
    ed_mask = _find_frame(folder, pid, ed, "_gt")
    es_mask = _find_frame(folder, pid, es, "_gt")
    if (ed_mask is None) != (es_mask is None):
        missing = folder / f"{pid}_frame{(ed if ed_mask is None else es):02d}_gt.nii.gz"
        raise DataError(missing, "mask file not found (the other phase has one; masks must come in ED/ES pairs)")
    height_cm, weight_kg = _float_field(info, "Height", cfg), _float_field(info, "Weight", cfg)
    check_body_size(height_cm, weight_kg, cfg, f"patient {pid}")
    return PatientRecord(
        patient_id=pid,
        label=group,
        ed_image=images["ED"],
        es_image=images["ES"],
        ed_mask=ed_mask,
        es_mask=es_mask,
        cine=cine,
        ed_frame=ed,
        es_frame=es,
        n_frames=n_frames,
        height_cm=height_cm,
        weight_kg=weight_kg,
        source=folder,
        extra={k: v for k, v in info.items() if k not in {"ED", "ES", "Group", "NbFrame", "Height", "Weight"}},
    )


def _patient_folders(root: Path) -> list[Path]:
    if (root / INFO_FILE).is_file():
        return [root]
    folders = [
        d for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".") and ((d / INFO_FILE).exists() or d.name.lower().startswith("patient"))
    ]
    return folders


def cohort_classes(labels: list[str | None]) -> tuple[str, ...]:
    """Class order: ACDC order when every label is an ACDC class, else sorted (None ignored)."""
    present = {lab for lab in labels if lab is not None}
    if present and present <= set(ACDC_CLASSES):
        return tuple(c for c in ACDC_CLASSES if c in present)
    return tuple(sorted(present))


def read_acdc(folder: str | Path, *, skip_bad: bool = False,
              allowed_labels: tuple[str, ...] | None = ACDC_CLASSES) -> Cohort:
    """Read an ACDC-layout folder (or a single `patientNNN/` folder) into a Cohort.

    Labels: Group of Info.cfg; when no patient has a Group (official testing layout) every label is None.
    `allowed_labels=None` accepts any Group string. Classes are in ACDC order (NOR, DCM, HCM, MINF, RV),
    restricted to those present. With `skip_bad=True` bad patients are left out and listed in
    `Cohort.skipped` as (patient id, reason).

    Raises:
        DataError: folder missing or without patient folders, (unless skip_bad) any bad patient, labels
            differing only by case, two patients sharing an image file, or two ids giving one file name.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(root, "ACDC folder not found")
    folders = _patient_folders(root)
    if not folders:
        raise DataError(root, "no ACDC patient folders (patientNNN/ with Info.cfg) found")
    has_group = []
    for d in folders:
        try:
            has_group.append(bool(parse_info_cfg(d / INFO_FILE).get("Group")))
        except DataError:
            has_group.append(False)
    labelled = any(has_group)
    records: list[PatientRecord] = []
    skipped: list[tuple[str, str]] = []
    for d in folders:
        try:
            records.append(read_acdc_patient(d, require_group=labelled, allowed_labels=allowed_labels))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append((d.name, str(exc)))
    if not records:
        raise DataError(root, f"no readable patient ({len(skipped)} skipped: {skipped[0][1] if skipped else ''})")
    check_labels(records, root)
    check_distinct_images(records, root)
    check_distinct_filenames(records, root)
    return Cohort(source=root, patients=tuple(records), classes=cohort_classes([r.label for r in records]),
                  skipped=tuple(skipped))


def write_acdc_patient(
    root: str | Path,
    patient_id: str,
    *,
    ed: np.ndarray,
    es: np.ndarray,
    ed_frame: int,
    es_frame: int,
    spacing_zyx: tuple[float, float, float],
    group: str | None,
    ed_mask: np.ndarray | None = None,
    es_mask: np.ndarray | None = None,
    n_frames: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
) -> Path:
    """Write one patient in the ACDC layout under `root/patient_id/` (files written atomically).

    Images are `(Z, H, W)` arrays (stored as float32 unless already int16/uint8), masks uint8 `(Z, H, W)`;
    the affine is ACDC's, diag(-x, -y, z) from `spacing_zyx` (mm), so that the arrays read back unchanged
    (`cmrprior.io.orientation`). `group=None` writes no Group line (testing layout).
    Returns the patient folder.
    """
    from cmrprior.io.nifti import write_nifti
    from cmrprior.utils import atomic

    check_patient_id(patient_id, root)
    folder = Path(root) / patient_filename(patient_id)
    stem = folder.name
    sz, sy, sx = spacing_zyx
    affine = np.diag([-sx, -sy, sz, 1.0])
    lines = [f"ED: {ed_frame}", f"ES: {es_frame}"]
    if group is not None:
        lines.append(f"Group: {group}")
    if height_cm is not None:
        lines.append(f"Height: {height_cm}")
    lines.append(f"NbFrame: {n_frames if n_frames is not None else max(ed_frame, es_frame)}")
    if weight_kg is not None:
        lines.append(f"Weight: {weight_kg}")
    for frame, image, mask in ((ed_frame, ed, ed_mask), (es_frame, es, es_mask)):
        write_nifti(image, affine, folder / f"{stem}_frame{frame:02d}.nii.gz")
        if mask is not None:
            write_nifti(np.asarray(mask, dtype=np.uint8), affine, folder / f"{stem}_frame{frame:02d}_gt.nii.gz")
    atomic.write_text(folder / INFO_FILE, "\n".join(lines) + "\n")
    return folder
