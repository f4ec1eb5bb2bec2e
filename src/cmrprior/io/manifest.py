"""Manifest CSV reader for a user's own cohort (e.g. the paper's private ICM/NICM or AMYL/HCM tasks).

Columns (header row required, order free):

    patient_id, label                            required (label may be empty = unlabelled)
    ed_image, es_image                           required unless the manifest has a `cine` column
    ed_mask, es_mask, cine, height_cm, weight_kg optional (masks come in pairs)
    ed_frame, es_frame                           optional 1-based frames of `cine`, used when an image
                                                 cell is empty
    meta_*                                       free metadata, kept in `PatientRecord.extra`

Any other column is an error that names it and the closest known column (a typo such as `ed_masks` would
otherwise drop the masks silently). A row with a `cine` (a 4D NIfTI or a DICOM cine series folder) and
empty image cells has `ed_image = es_image = cine`; its frames stay None when not given, and
`cmrprior.segmentation.phases.resolve_cohort_phases` finds them (given frames always win).

Each image or mask is a NIfTI file (.nii/.nii.gz) or a DICOM series folder; relative paths are resolved
against the CSV's folder. Classes: ACDC order when every label is an ACDC class, else sorted. Patient ids
that could leave a run folder (absolute, `..`, separators), labels differing only by case, two patients
sharing an image, ED and ES that are one image, and a row with more cells than the header (a trailing comma,
or a comma inside an unquoted value) are errors. Error messages give the row's line in the file (blank
lines counted).
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path

from cmrprior.errors import DataError
from cmrprior.io.acdc import cohort_classes
from cmrprior.io.checks import (check_body_size, check_distinct_filenames, check_distinct_images, check_labels,
                                 check_patient_id)
from cmrprior.io.records import Cohort, PatientRecord

REQUIRED_COLUMNS = ("patient_id", "label", "ed_image", "es_image")
OPTIONAL_COLUMNS = ("ed_mask", "es_mask", "cine", "height_cm", "weight_kg", "ed_frame", "es_frame")
META_PREFIX = "meta_"


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


def _check_two_phases(csv_path: Path, desc: str, ed: Path, es: Path, cine: Path | None,
                      ed_frame: int | None, es_frame: int | None) -> None:
    """Refuse ED and ES that are one image (as `read_acdc_patient` refuses ED = ES in Info.cfg): the same file
    or folder, unless both are frames of the cine and the frames differ or are still to be found."""
    if ed.resolve() != es.resolve():
        return
    from_cine = cine is not None and ed.resolve() == cine.resolve()
    if from_cine and (ed_frame is None or es_frame is None or ed_frame != es_frame):
        return
    what = f"frame {ed_frame} of {ed}" if from_cine else str(ed)
    raise DataError(csv_path, f"{desc}: ED and ES are the same image ({what}); they must be two different phases")


def _record(csv_path: Path, line: int, row: dict[str, str],
            allowed_labels: tuple[str, ...] | None) -> PatientRecord:
    pid = row["patient_id"]
    desc = f"line {line} (patient {pid!r})" if pid else f"line {line}"
    if not pid:
        raise DataError(csv_path, f"{desc}: empty patient_id")
    check_patient_id(pid, f"{csv_path}, {desc}")
    label = row["label"] or None
    if label is not None and allowed_labels is not None and label not in allowed_labels:
        raise DataError(csv_path, f"{desc}: unknown label {label!r} (allowed: {', '.join(allowed_labels)})")
    cine = _path(csv_path, desc, "cine", row.get("cine", ""))
    ed_frame = _number(csv_path, desc, "ed_frame", row.get("ed_frame", ""), integer=True)
    es_frame = _number(csv_path, desc, "es_frame", row.get("es_frame", ""), integer=True)
    images: dict[str, Path] = {}
    for col, frame in (("ed_image", ed_frame), ("es_image", es_frame)):
        p = _path(csv_path, desc, col, row.get(col, ""))
        if p is None:
            if cine is None:
                raise DataError(csv_path, f"{desc}: empty {col} (give a file, or a cine)")
            p = cine
        images[col] = p
    _check_two_phases(csv_path, desc, images["ed_image"], images["es_image"], cine, ed_frame, es_frame)
    ed_mask = _path(csv_path, desc, "ed_mask", row.get("ed_mask", ""))
    es_mask = _path(csv_path, desc, "es_mask", row.get("es_mask", ""))
    if (ed_mask is None) != (es_mask is None):
        raise DataError(csv_path, f"{desc}: give both ed_mask and es_mask, or neither")
    height_cm = _number(csv_path, desc, "height_cm", row.get("height_cm", ""))
    weight_kg = _number(csv_path, desc, "weight_kg", row.get("weight_kg", ""))
    check_body_size(height_cm, weight_kg, csv_path, desc)
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
        height_cm=height_cm,  # type: ignore[arg-type]
        weight_kg=weight_kg,  # type: ignore[arg-type]
        source=csv_path,
        extra={k: v for k, v in row.items() if k.startswith(META_PREFIX) and v},
    )


def _check_header(csv_path: Path, header: list[str]) -> None:
    """Required columns present (image columns optional with a cine column), no unknown column."""
    required = [c for c in REQUIRED_COLUMNS if "cine" not in header or c not in ("ed_image", "es_image")]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(csv_path, f"manifest missing column(s): {', '.join(missing)} (has: {', '.join(header) or 'none'})")
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    for col in header:
        if col in known or col.startswith(META_PREFIX):
            continue
        close = difflib.get_close_matches(col.lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(csv_path, f"unknown manifest column {col!r}: {hint}(known: {', '.join(known)}; "
                                  f"free metadata columns start with {META_PREFIX!r})")
    if len(set(header)) != len(header):
        dup = sorted({c for c in header if header.count(c) > 1})
        raise DataError(csv_path, f"manifest column(s) given twice: {', '.join(dup)}")


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str], int]]]:
    """(stripped header, [(line number in the file, row, number of cells beyond the header)]).

    Line numbers are those of the file (blank lines, which the csv module skips, are counted), so an error
    points at the row a user sees in an editor.
    """
    rows: list[tuple[int, dict[str, str], int]] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            for r in reader:
                # Cells beyond the header land under the key None (DictReader's restkey); a row ending
                # at a quoted cell spanning lines is numbered by its first line.
                line = reader.line_num - sum(v.count("\n") for v in r.values() if isinstance(v, str))
                extra = r.pop(None, None) or []
                rows.append((line, {(k or "").strip(): (v or "").strip() for k, v in r.items()}, len(extra)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_path, f"cannot read manifest ({exc})") from exc
    return header, rows


def read_manifest(path: str | Path, *, skip_bad: bool = False,
                  allowed_labels: tuple[str, ...] | None = None) -> Cohort:
    """Read a manifest CSV into a Cohort (paths only; voxels are loaded later).

    allowed_labels: when given, a label outside it is an error. skip_bad: bad rows (missing files,
    bad numbers, unknown labels, duplicate ids after the first) are left out and listed in
    `Cohort.skipped` as (patient id or line, reason).

    Raises:
        DataError: missing/unreadable CSV, missing or unknown columns, no rows, (unless skip_bad) a bad row
            (an invalid patient id, more cells than the header, ED = ES, an implausible height or weight),
            labels differing only by case, two patients sharing an image, two ids giving one file name.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise DataError(csv_path, "manifest not found")
    header, numbered_rows = _read_rows(csv_path)
    _check_header(csv_path, header)
    if not numbered_rows:
        raise DataError(csv_path, "manifest has no patient rows")
    records: list[PatientRecord] = []
    skipped: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    for line, row, n_extra in numbered_rows:
        try:
            if n_extra:
                raise DataError(csv_path, f"line {line}: {len(header) + n_extra} cells but the header has "
                                          f"{len(header)} columns (a trailing comma, or a value holding a comma "
                                          'without quotes? quote such values: "a, b")')
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
    check_labels(records, csv_path)
    check_distinct_images(records, csv_path)
    check_distinct_filenames(records, csv_path)
    return Cohort(source=csv_path, patients=tuple(records), classes=cohort_classes([r.label for r in records]),
                  skipped=tuple(skipped))
