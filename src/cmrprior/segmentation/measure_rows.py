"""Resume for `cmrprior measure`: each patient's finished row is kept in `OUT/measure_rows/<patient>.json`
with a key of everything the row depends on; a rerun reuses the rows whose key it would compute again, so
a killed run continues where it stopped and a finished one only rewrites `measures.csv`.

The key (sha256) covers the mask mode, the segmenter given (`None`: the shipped set; a set folder or a
weights file, whole content, hashed with the run folder's cache `input_hashes.json`), the plausible ranges,
the record's label, height, weight and ED/ES frames, and the whole content of the patient's input files
(for segmenter masks the record without its mask files, which are never read then). A row whose key
differs is measured again; rows of patients no longer in the cohort are left alone and not written to the
CSV.

    {"version": 1, "key": "<sha256>", "row": {<column>: <value>, ...}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from cmrprior.errors import DataError
from cmrprior.io.fingerprint import record_files
from cmrprior.io.records import Cohort, PatientRecord
from cmrprior.segmentation.mask_index import HASH_CACHE
from cmrprior.utils import atomic
from cmrprior.utils.file_hashes import FileHashes
from cmrprior.utils.filenames import patient_filename

log = logging.getLogger(__name__)

ROWS_DIR = "measure_rows"
_VERSION = 2  # 2: the mid-ventricular RV/LV ratios and the definition measures


def _hash(hashes: FileHashes, path: Path) -> str:
    try:
        return hashes.tree(path)
    except OSError as exc:
        raise DataError(path, f"cannot read this input ({exc.strerror or exc})") from exc


def row_keys(out: Path, cohort: Cohort, *, masks: str, model: str | Path | None, model_default: Path | None,
             ranges: Any) -> dict[str, str]:
    """patient id -> the key of the row this run would measure. `model_default`: the shipped set, hashed when
    `model` is None and it exists (else the missing set is named, and the segmenter's error comes later)."""
    hashes = FileHashes(out / HASH_CACHE)
    chosen = Path(model) if model is not None else model_default
    model_print = _hash(hashes, chosen) if chosen is not None and chosen.exists() else f"missing:{chosen}"
    common = {"version": _VERSION, "masks": masks, "model": model_print, "ranges": dataclasses.asdict(ranges)}
    keys = {}
    for rec in cohort.patients:
        read = rec if masks == "given" else dataclasses.replace(rec, ed_mask=None, es_mask=None)
        doc = {**common, "record": [rec.patient_id, rec.label, rec.height_cm, rec.weight_kg, rec.ed_frame,
                                    rec.es_frame],
               "inputs": [(role.split("/", 1)[1], _hash(hashes, path)) for role, path in record_files(read)]}
        keys[rec.patient_id] = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
    hashes.save()
    return keys


def _path(out: Path, rec: PatientRecord) -> Path:
    return out / ROWS_DIR / f"{patient_filename(rec.patient_id)}.json"


def kept_row(out: Path, rec: PatientRecord, key: str) -> dict[str, Any] | None:
    """The row written for `rec` by an earlier run with the same key, or None (none, another key, unreadable)."""
    try:
        doc = json.loads(_path(out, rec).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and doc.get("version") == _VERSION and doc.get("key") == key
    return doc["row"] if ok and isinstance(doc.get("row"), dict) else None


def keep_row(out: Path, rec: PatientRecord, key: str, row: dict[str, Any]) -> None:
    """Write `rec`'s finished row under `key`, atomically."""
    _path(out, rec).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(_path(out, rec), json.dumps({"version": _VERSION, "key": key, "row": row}))
