"""The prepared cohort: per slice position, the ED and ES image (and masks), ready for training.

All arrays share the first axis N (slices). Images are float32 `(N, S, S)` on a fixed in-plane grid
(`pixel_spacing_mm`), intensity-normalised per volume; masks uint8 `(N, S, S)` with ACDC labels, or None.
`patient_index[n]` indexes `patients`. Slices are grouped per patient; splits select whole patients.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError, InputError
from cmrprior.utils import atomic


@dataclass(frozen=True)
class PreparedPatient:
    patient_id: str
    label: str | None
    height_cm: float | None
    weight_kg: float | None
    slice_thickness_mm: float
    n_slices: int
    source: str


@dataclass(frozen=True, eq=False)
class PreparedCohort:
    ed: np.ndarray
    es: np.ndarray
    ed_mask: np.ndarray | None
    es_mask: np.ndarray | None
    patient_index: np.ndarray  # int64 (N,)
    slice_index: np.ndarray  # int64 (N,) z index in the source volume
    slice_position: np.ndarray  # float32 (N,) 0 = most basal kept slice, 1 = most apical
    patients: tuple[PreparedPatient, ...]
    classes: tuple[str, ...]
    pixel_spacing_mm: float
    config_hash: str = ""
    # (patient id or path, reason) for patients left out by prepare_cohort(..., skip_bad=True).
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return int(self.ed.shape[0])

    @property
    def patient_ids(self) -> list[str]:
        return [p.patient_id for p in self.patients]

    @property
    def patient_labels(self) -> np.ndarray:
        """int64 (P,) class index per patient (-1 when unlabelled)."""
        lut = {c: i for i, c in enumerate(self.classes)}
        return np.array([lut.get(p.label, -1) if p.label else -1 for p in self.patients], dtype=np.int64)

    @property
    def slice_labels(self) -> np.ndarray:
        """int64 (N,) class index per slice (its patient's)."""
        return self.patient_labels[self.patient_index]

    def select_patients(self, patient_ids: list[str] | np.ndarray) -> "PreparedCohort":
        """A new cohort holding only the given patients (in the given order); arrays are copies.

        Raises InputError for ids that are not in the cohort.
        """
        wanted = list(patient_ids)
        pos = {pid: i for i, pid in enumerate(self.patient_ids)}
        missing = [p for p in wanted if p not in pos]
        if missing:
            raise InputError(f"patients not in cohort: {missing[:5]}")
        old_idx = [pos[p] for p in wanted]
        remap = {o: n for n, o in enumerate(old_idx)}
        keep = np.concatenate([np.flatnonzero(self.patient_index == o) for o in old_idx]) if old_idx else np.zeros(0, np.int64)
        take = lambda a: None if a is None else a[keep]  # noqa: E731
        return PreparedCohort(
            ed=take(self.ed),
            es=take(self.es),
            ed_mask=take(self.ed_mask),
            es_mask=take(self.es_mask),
            patient_index=np.array([remap[i] for i in self.patient_index[keep]], dtype=np.int64),
            slice_index=self.slice_index[keep],
            slice_position=self.slice_position[keep],
            patients=tuple(self.patients[o] for o in old_idx),
            classes=self.classes,
            pixel_spacing_mm=self.pixel_spacing_mm,
            config_hash=self.config_hash,
        )

    def save(self, folder: str | Path) -> Path:
        """Write `arrays.npz` and `cohort.json` atomically into `folder` (json last = commit marker)."""
        folder = Path(folder)
        arrays = {
            "ed": self.ed,
            "es": self.es,
            "patient_index": self.patient_index,
            "slice_index": self.slice_index,
            "slice_position": self.slice_position,
        }
        if self.ed_mask is not None and self.es_mask is not None:
            arrays["ed_mask"] = self.ed_mask
            arrays["es_mask"] = self.es_mask
        atomic.save_npz(folder / "arrays.npz", **arrays)
        meta = {
            "patients": [asdict(p) for p in self.patients],
            "classes": list(self.classes),
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "config_hash": self.config_hash,
            "n_slices": len(self),
            "skipped": [list(s) for s in self.skipped],
        }
        atomic.write_json(folder / "cohort.json", meta)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "PreparedCohort":
        folder = Path(folder)
        meta_path = folder / "cohort.json"
        if not meta_path.exists():
            raise DataError(folder, "not a prepared cohort (cohort.json missing)")
        meta = json.loads(meta_path.read_text())
        with np.load(folder / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
        return cls(
            ed=arrays["ed"],
            es=arrays["es"],
            ed_mask=arrays.get("ed_mask"),
            es_mask=arrays.get("es_mask"),
            patient_index=arrays["patient_index"],
            slice_index=arrays["slice_index"],
            slice_position=arrays["slice_position"],
            patients=tuple(PreparedPatient(**p) for p in meta["patients"]),
            classes=tuple(meta["classes"]),
            pixel_spacing_mm=float(meta["pixel_spacing_mm"]),
            config_hash=meta.get("config_hash", ""),
            skipped=tuple((str(a), str(b)) for a, b in meta.get("skipped", [])),
        )
