"""The cache key of a prepared cohort: what the prepared arrays depend on (`cmrprior.data.prepare`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cmrprior.data.prepared import HeartLocation
from cmrprior.io.records import Cohort, PatientRecord

if TYPE_CHECKING:
    from cmrprior.data.prepare import PrepareConfig

PREPARE_VERSION = 2


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


def _location_digest(loc: HeartLocation) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([list(loc.centre), list(loc.slices), loc.keep_empty, loc.model_sha256]).encode())
    for a in (loc.ed_labels, loc.es_labels):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
    return h.hexdigest()


def cache_key(cohort: Cohort, config: "PrepareConfig", *, skip_bad: bool = False,
              locations: Mapping[str, HeartLocation] | None = None) -> str:
    """sha256 hex of config, format version, skip_bad and each patient's record, source-file stats and
    location (labels hash and segmenter weights sha256)."""
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
        if locations is not None:
            loc = locations.get(rec.patient_id)
            h.update(f"location|{None if loc is None else _location_digest(loc)}\n".encode())
    return h.hexdigest()
