"""Stable fingerprints of images: the same pixels give the same fingerprint wherever the file lives.

A segmenter trained on some patients must not segment them when the masks feed a model that is scored on
them. Folder names are not enough to recognise such a patient (a user may copy or rename a public dataset),
so images are matched by their content: the shape and the float32 voxel values after the reader's scaling.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from cmrprior.io.load import load_patient
from cmrprior.io.records import Cohort, PatientRecord, Volume

# every field of a PatientRecord that names an input file or folder (one place: a new such field goes here)
RECORD_FILE_FIELDS = ("ed_image", "es_image", "ed_mask", "es_mask", "cine")


def record_files(record: PatientRecord) -> list[tuple[str, Path]]:
    """(role, path) of every file or folder one record points to, role "<patient id>/<field>"."""
    return [(f"{record.patient_id}/{name}", Path(getattr(record, name))) for name in RECORD_FILE_FIELDS
            if getattr(record, name) is not None]


def referenced_files(cohort: Cohort) -> list[tuple[str, Path]]:
    """`record_files` of every patient of a cohort: what a run folder's input fingerprint covers
    (`cmrprior.utils.runfolder_checks.input_fingerprint`)."""
    return [item for r in cohort.patients for item in record_files(r)]


def volume_fingerprint(volume: Volume) -> str:
    """sha256 (32 hex digits) of a volume's shape and float32 voxels; independent of path and header."""
    arr = np.ascontiguousarray(volume.array, dtype=np.float32)
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:32]


def patient_fingerprints(record: PatientRecord) -> tuple[str, str]:
    """(ED, ES) image fingerprints of a patient (its masks are not read). Raises DataError when an image
    cannot be read."""
    vols = load_patient(dataclasses.replace(record, ed_mask=None, es_mask=None))
    return volume_fingerprint(vols.ed), volume_fingerprint(vols.es)
