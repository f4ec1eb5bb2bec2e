"""Slice-pair sets for the diagnosis model, and the resize to the model's input size.

A `SliceSet` holds the ED and ES images of N slice pairs, float32 `(N, S, S)`, the class index per slice
(its patient's), the patient of each slice as an index `[0, P)` into `patient_ids`, and, where the cohort has
them, the study's heart masks of those images at the same size (what the Seg-teacher pre-training learns to
draw; never read by the diagnosis models), and each slice's position from base to apex.
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
    ed_mask: np.ndarray | None = None  # uint8 (N, S, S) ACDC labels of `ed`, or None
    es_mask: np.ndarray | None = None  # uint8 (N, S, S) ACDC labels of `es`, or None
    positions: np.ndarray | None = None  # float32 (N,) base (0) to apex (1) in the patient's stack, or None

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
                        patient_index=self.patient_index, patient_ids=self.patient_ids,
                        ed_mask=self.ed_mask, es_mask=self.es_mask, positions=self.positions)

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
            ed_mask=None if self.ed_mask is None else self.ed_mask[keep],
            es_mask=None if self.es_mask is None else self.es_mask[keep],
            positions=None if self.positions is None else self.positions[keep],
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


def resize_labels(masks: np.ndarray, size: int, n_labels: int = 4) -> np.ndarray:
    """Resize label maps uint8 `(N, H, W)` (values in `[0, n_labels)`) to `(N, size, size)`: each output
    pixel takes the label with the largest area under it (area-weighted one-hot, then argmax; ties go to
    the lower label), so thin structures keep their share instead of being skipped by nearest-neighbour.

    Returns the input unchanged (not copied) when it already has that size.
    """
    if masks.shape[1:] == (size, size):
        return masks
    t = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.int64))
    onehot = F.one_hot(t, n_labels).permute(0, 3, 1, 2).float()
    area = F.interpolate(onehot, size=(size, size), mode="area" if size <= masks.shape[1] else "nearest")
    return area.argmax(1).numpy().astype(np.uint8)
