"""Per-patient anatomy measures on disk: one CSV row per patient (and mask perturbation), units in the header.

Columns: `patient_id, label, perturbation, size, <measures>`, where `perturbation` is `none` or one of
`cmrprior.anatomy.perturb.PERTURBATIONS` and `size` its size (pixels for dilate/erode, slices for the slice
drops, 0 for none); the measures are every field of `AnatomyMeasures` (whatever fields it has), named with
their unit by `anatomy.measure.column_name`. Empty cells are unknown values (None or NaN).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cmrprior.anatomy.measure import CSV_COLUMNS, column_name
from cmrprior.errors import DataError
from cmrprior.utils import atomic

NO_PERTURBATION = "none"
_ID_COLUMNS = ("patient_id", "label", "perturbation", "size")
_FIELDS_BY_COLUMN = {column: field for field, column in CSV_COLUMNS.items()}


@dataclass(frozen=True)
class MeasuresRow:
    """The measures of one patient's masks (perturbed or not); `values`: field -> value (None: unknown)."""

    patient_id: str
    label: str | None
    values: dict[str, float | None]
    perturbation: str = NO_PERTURBATION
    size: int = 0


def _field_name(column: str) -> str:
    return _FIELDS_BY_COLUMN.get(column, column)


def _cell(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def write_measures_csv(rows: Sequence[MeasuresRow], path: Path) -> Path:
    """Write `rows` atomically (columns: module doc; the measures of the first row name them all)."""
    fields = list(rows[0].values) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*_ID_COLUMNS, *(column_name(f) for f in fields)])
    for r in rows:
        w.writerow([r.patient_id, "" if r.label is None else r.label, r.perturbation, r.size,
                    *(_cell(r.values.get(f)) for f in fields)])
    return atomic.write_text(path, buf.getvalue())


def read_measures_csv(path: Path) -> list[MeasuresRow]:
    """The rows of a measures CSV; DataError naming the file when it is unreadable or malformed."""
    try:
        reader = csv.DictReader(io.StringIO(Path(path).read_text()))
        out = []
        for r in reader:
            values = {_field_name(c): (None if v == "" else float(v)) for c, v in r.items() if c not in _ID_COLUMNS}
            out.append(MeasuresRow(r["patient_id"], r["label"] or None, values, r["perturbation"], int(r["size"])))
        return out
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(path, f"not an anatomy measures CSV ({type(exc).__name__}: {exc})") from exc


def has_current_measures(path: Path) -> bool:
    """Whether the CSV at `path` holds exactly this version's measures (`CSV_COLUMNS`), so that a run may reuse it:
    a file written before a measure was added or renamed is stale. False for a missing or headerless file."""
    try:
        header = next(csv.reader(io.StringIO(Path(path).read_text())), None)
    except OSError:
        return False
    return header is not None and set(header) - set(_ID_COLUMNS) == set(CSV_COLUMNS.values())
