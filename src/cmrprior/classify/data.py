"""Slice-pair sets for the diagnosis model, and the resize to the model's input size.

A `SliceSet` holds the ED and ES images of N slice pairs, float32 `(N, S, S)`, the class index per slice
(its patient's), and the patient of each slice as an index `[0, P)` into `patient_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cmrprior.errors import InputError


@dataclass(frozen=True, eq=False)
class SliceSet:
    ed: np.ndarray  # float32 (N, S, S)
    es: np.ndarray  # float32 (N, S, S)
    labels: np.ndarray  # int64 (N,)
    patient_index: np.ndarray  # int64 (N,) in [0, P)
    patient_ids: tuple[str, ...]  # (P,)

    def __len__(self) -> int:
        return int(self.ed.shape[0])

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    @property
    def patient_labels(self) -> np.ndarray:
        """int64 (P,) label per patient (from its first slice)."""
        out = np.full(self.n_patients, -1, dtype=np.int64)
        out[self.patient_index[::-1]] = self.labels[::-1]
        return out

    def with_labels(self, labels: np.ndarray) -> "SliceSet":
        """The same slices with other class indices (int64 `(N,)`), e.g. in another cohort's class order."""
        return SliceSet(ed=self.ed, es=self.es, labels=np.asarray(labels, dtype=np.int64),
                        patient_index=self.patient_index, patient_ids=self.patient_ids)

    def subset_patients(self, patient_ids: list[str] | tuple[str, ...]) -> "SliceSet":
        """The slices of the given patients (in that patient order), re-indexed; InputError for unknown ids."""
        pos = {p: i for i, p in enumerate(self.patient_ids)}
        missing = [p for p in patient_ids if p not in pos]
        if missing:
            raise InputError(f"patients not in slice set: {missing[:5]}")
        order = [pos[p] for p in patient_ids]
        keep = np.concatenate([np.flatnonzero(self.patient_index == o) for o in order]) if order else np.zeros(0, np.int64)
        remap = np.full(self.n_patients, -1, dtype=np.int64)
        remap[order] = np.arange(len(order))
        return SliceSet(
            ed=self.ed[keep],
            es=self.es[keep],
            labels=self.labels[keep],
            patient_index=remap[self.patient_index[keep]],
            patient_ids=tuple(patient_ids),
        )


def resize_stack(images: np.ndarray, size: int) -> np.ndarray:
    """Resize float32 `(N, H, W)` to `(N, size, size)` (bilinear, antialiased when shrinking).

    Returns the input unchanged (not copied) when it already has that size.
    """
    if images.shape[1:] == (size, size):
        return images
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=size < images.shape[1])
    return out.squeeze(1).numpy()
