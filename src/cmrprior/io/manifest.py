"""Manifest CSV reader for a user's own cohort (e.g. the paper's private ICM/NICM or AMYL/HCM tasks).

Columns (header row required, order free, extra columns kept in `PatientRecord.extra`):

    patient_id, label, ed_image, es_image        required (label may be empty = unlabelled)
    ed_mask, es_mask, cine, height_cm, weight_kg optional (masks come in pairs)
    ed_frame, es_frame                           optional 1-based frames, used when an image cell is
                                                 empty and `cine` (a 4D NIfTI) is given

Each image or mask is a NIfTI file (.nii/.nii.gz) or a DICOM series folder; relative paths are resolved
against the CSV's folder. Classes: ACDC order when every label is an ACDC class, else sorted.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cmrprior.errors import DataError
from cmrprior.io.acdc import cohort_classes
from cmrprior.io.records import Cohort, PatientRecord

REQUIRED_COLUMNS = ("patient_id", "label", "ed_image", "es_image")
OPTIONAL_COLUMNS = ("ed_mask", "es_mask", "cine", "height_cm", "weight_kg", "ed_frame", "es_frame")


def _path(csv_path: Path, row_desc: str, column: str, cell: str) -> Path | None:
    if not cell:
        return None
    p = Path(cell).expanduser()
    if not p.is_absolute():
        p = csv_path.parent / p
    if not p.exists():
        raise DataError(p, f"not found ({column} of {row_desc} in {csv_path})")
    return p


def _number(csv_path: Path, row_desc: str, column: str, cell: str, integer: bool = False) -> float | int | None:
    if not cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if not value == value or value <= 0 or (integer and value != int(value)):
        kind = "a positive integer" if integer else "a positive number"
        raise DataError(csv_path, f"{row_desc}: {column} must be {kind}, got {cell!r}")
    return int(value) if integer else value


def _record(csv_path: Path, line: int, row: dict[str, str],
            allowed_labels: tuple[str, ...] | None) -> PatientRecord:
    pid = row["patient_id"]
    desc = f"line {line} (patient {pid!r})" if pid else f"line {line}"
    if not pid:
        raise DataError(csv_path, f"{desc}: empty patient_id")
    label = row["label"] or None
    if label is not None and allowed_labels is not None and label not in allowed_labels:
        raise DataError(csv_path, f"{desc}: unknown label {label!r} (allowed: {', '.join(allowed_labels)})")
    cine = _path(csv_path, desc, "cine", row.get("cine", ""))
    ed_frame = _number(csv_path, desc, "ed_frame", row.get("ed_frame", ""), integer=True)
    es_frame = _number(csv_path, desc, "es_frame", row.get("es_frame", ""), integer=True)
    images: dict[str, Path] = {}
    for col, frame in (("ed_image", ed_frame), ("es_image", es_frame)):
        p = _path(csv_path, desc, col, row[col])
        if p is None:
            if cine is None or frame is None:
                raise DataError(csv_path, f"{desc}: empty {col} (give a file, or cine with {col[:2]}_frame)")
            p = cine
        images[col] = p
    ed_mask = _path(csv_path, desc, "ed_mask", row.get("ed_mask", ""))
    es_mask = _path(csv_path, desc, "es_mask", row.get("es_mask", ""))
    if (ed_mask is None) != (es_mask is None):
        raise DataError(csv_path, f"{desc}: give both ed_mask and es_mask, or neither")
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    return PatientRecord(
        patient_id=pid,
        label=label,
        ed_image=images["ed_image"],
        es_image=images["es_image"],
        ed_mask=ed_mask,
        es_mask=es_mask,
        cine=cine,
        ed_frame=ed_frame,  # type: ignore[arg-type]
        es_frame=es_frame,  # type: ignore[arg-type]
        height_cm=_number(csv_path, desc, "height_cm", row.get("height_cm", "")),  # type: ignore[arg-type]
        weight_kg=_number(csv_path, desc, "weight_kg", row.get("weight_kg", "")),  # type: ignore[arg-type]
        source=csv_path,
        extra={k: v for k, v in row.items() if k not in known and v},
    )


def read_manifest(path: str | Path, *, skip_bad: bool = False,
                  allowed_labels: tuple[str, ...] | None = None) -> Cohort:
    """Read a manifest CSV into a Cohort (paths only; voxels are loaded later).

    allowed_labels: when given, a label outside it is an error. skip_bad: bad rows (missing files,
    bad numbers, unknown labels, duplicate ids after the first) are left out and listed in
    `Cohort.skipped` as (patient id or line, reason).

    Raises:
        DataError: missing/unreadable CSV, missing columns, no rows, or (unless skip_bad) a bad row.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise DataError(csv_path, "manifest not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_path, f"cannot read manifest ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(csv_path, f"manifest missing column(s): {', '.join(missing)} (has: {', '.join(header) or 'none'})")
    if not rows:
        raise DataError(csv_path, "manifest has no patient rows")
    records: list[PatientRecord] = []
    skipped: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            pid = row.get("patient_id", "")
            if pid in first_line:
                raise DataError(csv_path, f"line {line}: duplicate patient id {pid!r} (first on line {first_line[pid]})")
            rec = _record(csv_path, line, row, allowed_labels)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append((row.get("patient_id") or f"line {line}", str(exc)))
            continue
        first_line[pid] = line
        records.append(rec)
    if not records:
        raise DataError(csv_path, f"no usable patient rows ({len(skipped)} skipped)")
    return Cohort(source=csv_path, patients=tuple(records), classes=cohort_classes([r.label for r in records]),
                  skipped=tuple(skipped))
