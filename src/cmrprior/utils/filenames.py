"""File names built from patient ids (ids come from users' folders and spreadsheets)."""

from __future__ import annotations

import re

from cmrprior.errors import DataError

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def mask_filename(stem: str, phase: str) -> str:
    """The name of a mask file that cmrprior writes for an image: `<stem>_<phase>_seg.nii.gz` (phase `ED`, `ES` or
    `cine`), so that the name says it is a segmentation, not an image."""
    return f"{stem}_{phase}_seg.nii.gz"


def patient_filename(patient_id: str) -> str:
    """A file/folder name built from a patient id: characters other than letters, digits, `._-` become `_`,
    leading dots are dropped. Used for every file name cmrprior builds from an id.

    Raises:
        DataError: the id gives an empty name.
    """
    name = _SAFE_CHARS.sub("_", patient_id).lstrip(".")
    if not name or set(name) <= {"_", "-"}:
        raise DataError(None, f"patient id {patient_id!r} gives no usable file name")
    return name
