"""Open a cohort from whatever the user points at: an ACDC-layout folder or a manifest CSV."""

from __future__ import annotations

from pathlib import Path

from cmrprior.errors import DataError
from cmrprior.io.records import ACDC_CLASSES, Cohort


def open_cohort(path: str | Path, *, skip_bad: bool = False,
                allowed_labels: tuple[str, ...] | None = None) -> Cohort:
    """Folder -> `read_acdc` (Groups must be ACDC classes unless `allowed_labels` says otherwise);
    `.csv` file -> `read_manifest` (any labels unless `allowed_labels` is given).

    Raises:
        DataError: path missing, neither a folder nor a .csv file, or a reader error.
    """
    path = Path(path)
    if path.is_dir():
        from cmrprior.io.acdc import read_acdc

        return read_acdc(path, skip_bad=skip_bad, allowed_labels=allowed_labels or ACDC_CLASSES)
    if path.is_file() and path.suffix.lower() == ".csv":
        from cmrprior.io.manifest import read_manifest

        return read_manifest(path, skip_bad=skip_bad, allowed_labels=allowed_labels)
    if not path.exists():
        raise DataError(path, "not found (expected an ACDC-layout folder or a manifest .csv)")
    raise DataError(path, "not a cohort (expected an ACDC-layout folder or a manifest .csv)")
