"""The prepared cohort: per slice position, the ED and ES image (and masks), ready for training.

All arrays share the first axis N (slices). Images are float32 `(N, S, S)` on a fixed in-plane grid
(`pixel_spacing_mm`), intensity-normalised per volume; masks uint8 `(N, S, S)` with ACDC labels, or None.
`patient_index[n]` indexes `patients`. Slices are grouped per patient; splits select whole patients.

Full images (`ed_full`, `es_full`, float32 `(N, S, S)`) are the same slices as acquired: the whole field of
view (or `full_fov_mm` around the image centre), padded to a square and resized to S, never centred on the
heart; their pixel size differs per patient (`PreparedPatient.full_pixel_spacing_mm`). `ed_full_mask` /
`es_full_mask` are the heart masks on that grid (for the in-heart saliency score). Cohorts prepared before
full images existed have them None; readers then use `ed`/`es` (what those runs were scored on).
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
    full_pixel_spacing_mm: float | None = None  # pixel size of the full images (mm)
    masks_model: str | None = None  # the segmenter that made this patient's masks (None: expert masks)
    masks_model_sha256: str | None = None


@dataclass(frozen=True, eq=False)
class HeartLocation:
    """Where one patient's heart is, found without expert masks, and the masks that go with it.

    Made by `cmrprior.segmentation.volumes.locate_heart` from the segmenter's whole-field-of-view pass on
    the raw ED/ES frames; consumed by `cmrprior.data.prepare.prepare_cohort(..., locations=...)`.
    centre: crop centre (row, col) in source pixel coordinates of the ED volume.
    slices: z indices with heart labels at ED or at ES. Preparation leaves out those where the mask of
        one phase is empty on the crop (a segmented image of an empty mask would be all zero) and lists
        them in `PreparedCohort.dropped_slices`, unless `keep_empty` (QC of other masks on these slices).
    ed_labels, es_labels: uint8 `(Z, H, W)` ACDC labels in the source geometry.
    model, model_sha256: the segmenter weights file that made them (None for expert masks).
    """

    centre: tuple[float, float]
    slices: tuple[int, ...]
    ed_labels: np.ndarray
    es_labels: np.ndarray
    model: str | None = None
    model_sha256: str | None = None
    keep_empty: bool = False


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
    ed_full: np.ndarray | None = None  # float32 (N, S, S), module docstring
    es_full: np.ndarray | None = None
    ed_full_mask: np.ndarray | None = None
    es_full_mask: np.ndarray | None = None
    # (patient id, z, reason) of heart slices left out because a phase's mask is empty there.
    dropped_slices: tuple[tuple[str, int, str], ...] = ()

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
    def full_pixel_spacing_per_slice(self) -> np.ndarray | None:
        """float64 (N,) pixel size (mm) of each slice's full image; None without full images."""
        if self.ed_full is None or any(p.full_pixel_spacing_mm is None for p in self.patients):
            return None
        return np.array([p.full_pixel_spacing_mm for p in self.patients], np.float64)[self.patient_index]

    @property
    def masks_models(self) -> dict[str, tuple[str, str] | None]:
        """Patient id -> (segmenter weights path, sha256) that made its masks; None for expert masks."""
        return {p.patient_id: None if p.masks_model is None else (p.masks_model, str(p.masks_model_sha256))
                for p in self.patients}

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
            ed_full=take(self.ed_full),
            es_full=take(self.es_full),
            ed_full_mask=take(self.ed_full_mask),
            es_full_mask=take(self.es_full_mask),
            dropped_slices=tuple(d for d in self.dropped_slices if d[0] in set(wanted)),
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
        for name in ("ed_mask", "es_mask", "ed_full", "es_full", "ed_full_mask", "es_full_mask"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        atomic.save_npz(folder / "arrays.npz", **arrays)
        meta = {
            "patients": [asdict(p) for p in self.patients],
            "classes": list(self.classes),
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "config_hash": self.config_hash,
            "n_slices": len(self),
            "skipped": [list(s) for s in self.skipped],
            "dropped_slices": [list(d) for d in self.dropped_slices],
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
            ed_full=arrays.get("ed_full"),
            es_full=arrays.get("es_full"),
            ed_full_mask=arrays.get("ed_full_mask"),
            es_full_mask=arrays.get("es_full_mask"),
            dropped_slices=tuple((str(a), int(b), str(c)) for a, b, c in meta.get("dropped_slices", [])),
        )
