"""Plain records for images and patients. No torch here.

Conventions
-----------
* `Volume.array` is float32 `(Z, H, W)`: Z = short-axis slice index (base to apex in ACDC order as stored),
  H = image rows, W = image columns. For a NIfTI file with data `(X, Y, Z)` the array is
  `data.transpose(2, 1, 0)`, i.e. H = Y and W = X.
* `Volume.spacing` is `(z, y, x)` in millimetres, matching the array axes.
* `Volume.affine` is the 4x4 voxel-to-world matrix of the array's voxels (NIfTI: (i, j, k) = (W, H, Z) index
  -> RAS+ mm). Readers of `cmrprior.io.load` turn every image to one in-plane frame
  (`cmrprior.io.orientation`); the array, spacing and affine are then those of the turned image, and
  `Volume.stored_frame` keeps the file's own affine, spacing and the transform (None: stored as used).
* `Volume.header` is the source NIfTI header (a nibabel header) or None (DICOM, arrays), describing the file
  as stored: writers copy it, after turning the array back (`cmrprior.io.orientation.for_writing`), so that
  `pixdim`, qform/sform and their codes survive (ACDC files have a unit-scale sform and the true spacing
  only in `pixdim`).
* Masks use ACDC labels: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cmrprior.io.orientation import StoredFrame

MASK_LABELS: dict[int, str] = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
ACDC_CLASSES: tuple[str, ...] = ("NOR", "DCM", "HCM", "MINF", "RV")


@dataclass(frozen=True, eq=False)
class Volume:
    """One 3D image (one cardiac phase), float32 `(Z, H, W)`, spacing `(z, y, x)` mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path | None = None
    header: Any = None
    stored_frame: StoredFrame | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class PatientRecord:
    """Where one patient's data lives, and what is known about them; loading is separate.

    `ed_image`/`es_image` are NIfTI files or DICOM series folders. `cine` is an optional 4D NIfTI
    `(X, Y, Z, T)` or None. Frames are 1-based as in ACDC's Info.cfg.
    """

    patient_id: str
    label: str | None
    ed_image: Path
    es_image: Path
    ed_mask: Path | None = None
    es_mask: Path | None = None
    cine: Path | None = None
    ed_frame: int | None = None
    es_frame: int | None = None
    n_frames: int | None = None
    height_cm: float | None = None
    weight_kg: float | None = None
    source: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def has_masks(self) -> bool:
        return self.ed_mask is not None and self.es_mask is not None


@dataclass(frozen=True)
class PatientVolumes:
    """A patient's loaded ED/ES volumes and optional masks (masks as uint8 arrays in `Volume.array`)."""

    record: PatientRecord
    ed: Volume
    es: Volume
    ed_mask: Volume | None = None
    es_mask: Volume | None = None


@dataclass(frozen=True)
class Cohort:
    """A set of patients from one source (ACDC folder, manifest, or phantom folder)."""

    source: Path
    patients: tuple[PatientRecord, ...]
    classes: tuple[str, ...]
    # (patient id or path, reason) for entries a reader left out with skip_bad=True.
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def labels(self) -> list[str | None]:
        return [p.label for p in self.patients]
