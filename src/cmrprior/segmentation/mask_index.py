"""Which model made which mask: `OUT/masks_index.json` of `cmrprior segment predict`.

A prediction folder used twice (another model, another cohort, images replaced) would otherwise keep some
patients' masks from the first run beside the others' from the second, with nothing to tell them apart.
Each patient's entry records the sha256 of the segmenter weights, a whole-content fingerprint of the
patient's input files (`cmrprior.io.fingerprint.record_files`, hashed with the run folder's cache
`input_hashes.json`), the inference settings and the files written. A run refuses a folder whose entries
(or mask files without an entry) another model, other inputs or other settings made; entries equal to
its own are the resume of a killed run and are simply written again.

    {"version": 1, "patients": {"<patient id>": {"model_sha256": ..., "inputs": ..., "settings": {...},
                                                 "files": ["<patient>/<patient>_ED_seg.nii.gz", ...]}}}

A folder written before masks were named `_seg` (`<patient>_ED.nii.gz`) is taken over by a rerun with the same
model, inputs and settings: each patient's masks are written again under the new names, the old files removed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cmrprior.errors import ConfigError, DataError
from cmrprior.io.fingerprint import record_files
from cmrprior.io.records import Cohort, PatientRecord
from cmrprior.utils import atomic
from cmrprior.utils.file_hashes import FileHashes

INDEX_NAME = "masks_index.json"
HASH_CACHE = "input_hashes.json"
_VERSION = 1


@dataclass(frozen=True)
class MaskOrigin:
    """What one patient's masks were made by and from."""

    model_sha256: str
    inputs: str  # sha256 over the patient's input files, whole (roles and contents)
    settings: dict[str, Any]  # inference settings and the ED/ES frames used

    def differs(self, entry: dict) -> list[str]:
        """Names of the fields in which a recorded `entry` differs from this origin."""
        return [k for k, v in asdict(self).items() if entry.get(k) != v]


def planned_origins(out: Path, cohort: Cohort, model_sha256: str, settings: dict[str, Any]) -> dict[str, MaskOrigin]:
    """patient id -> the origin its masks will have in this run. Raises DataError for an unreadable input."""
    hashes = FileHashes(out / HASH_CACHE)
    plans = {}
    for rec in cohort.patients:
        plans[rec.patient_id] = MaskOrigin(model_sha256, _inputs(rec, hashes),
                                           {**settings, "ed_frame": rec.ed_frame, "es_frame": rec.es_frame})
    hashes.save()
    return plans


def _inputs(rec: PatientRecord, hashes: FileHashes) -> str:
    h = hashlib.sha256()
    for role, path in record_files(rec):
        try:
            h.update(f"{role}\0{hashes.tree(path)}\n".encode())
        except OSError as exc:
            raise DataError(path, f"cannot read this input ({exc.strerror or exc})") from exc
    return h.hexdigest()


class MaskIndex:
    """The index of one prediction folder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / INDEX_NAME
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.entries = dict(data["patients"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DataError(self.path, f"unreadable index of the masks in this folder ({exc}); use a new --out") from exc

    def check(self, plans: dict[str, MaskOrigin]) -> None:
        """Refuse a folder holding masks this run would not make itself (ConfigError naming the patients and
        what differs): entries of patients outside the cohort or of another model, inputs or settings, and
        mask files no entry lists (written by an older cmrprior, or by hand)."""
        problems = []
        for pid, entry in sorted(self.entries.items()):
            if pid not in plans:
                problems.append(f"{pid} (not in this cohort)")
            elif diff := plans[pid].differs(entry):
                problems.append(f"{pid} (other {', '.join(d.replace('_sha256', '') for d in diff)})")
        known = {f for e in self.entries.values() for f in e.get("files", [])}
        unknown = sorted({p.parent.name for p in self.out.glob("*/*.nii.gz")
                          if p.relative_to(self.out).as_posix() not in known})
        problems += [f"{name}/ (masks of unknown origin)" for name in unknown]
        if problems:
            more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise ConfigError(f"{self.out}: this folder holds masks made by another model or from other inputs or "
                              f"settings: {'; '.join(problems[:5])}{more}; use a new --out (or remove the folder)")

    def record(self, patient_id: str, origin: MaskOrigin, files: list[Path]) -> None:
        """Write the patient's entry before its masks are written (so a run killed in between leaves masks
        that its rerun recognises as its own); the index is rewritten atomically. Files of the patient's earlier
        entry that this run does not write (older names of the same masks) are removed once the entry is written."""
        old = set(self.entries.get(patient_id, {}).get("files", []))
        self.entries[patient_id] = {**asdict(origin), "files": sorted(f.relative_to(self.out).as_posix() for f in files)}
        atomic.write_json(self.path, {"version": _VERSION, "patients": self.entries})
        for stale in sorted(old - set(self.entries[patient_id]["files"])):
            (self.out / stale).unlink(missing_ok=True)
