"""Patient-level pooling of slice features: the whole heart seen at once, as a reader sees it.

The study's model scores each ED/ES slice pair and averages the slice probabilities of a patient. With
`classifier.pooling: patient`, the frozen encoders' slice features of a patient are pooled into one
descriptor, their mean and their standard deviation over the patient's slices (the average slice and how much
the slices differ, e.g. a cavity that narrows fast towards the apex or one thick segment), and one linear layer
scores the patient. Both statistics ignore the slice order, so stacks acquired apex-first read the same.
"""

from __future__ import annotations

import numpy as np
import torch

from cmrprior.errors import InputError

POOLINGS: tuple[str, ...] = ("slices", "patient")


def pool_slices(features: torch.Tensor) -> torch.Tensor:
    """One patient's descriptor `(2F,)` from its slice features `(S, F)`: their mean, then their population
    standard deviation (ddof 0). The pooled model's forward and the cells' cached features both use it."""
    return torch.cat([features.mean(0), features.std(0, unbiased=False)])


def patient_descriptors(features: np.ndarray, patient_index: np.ndarray, n_patients: int) -> np.ndarray:
    """float32 `(P, 2F)`: `pool_slices` of each patient's slice features `(N, F)` (computed in float64);
    `patient_index` `(N,)` in `[0, n_patients)`.

    Raises InputError for a patient without a slice (its descriptor would be undefined).
    """
    f = np.asarray(features, dtype=np.float64)
    idx = np.asarray(patient_index, dtype=np.int64)
    counts = np.bincount(idx, minlength=n_patients)[:n_patients]
    if f.ndim != 2 or idx.shape != (f.shape[0],) or (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()[:5]
        raise InputError(f"patient pooling needs features (N, F) with a slice for every patient; "
                         f"features {f.shape}, patients without slices {empty}")
    t = torch.from_numpy(f)
    return torch.stack([pool_slices(t[torch.from_numpy(idx == p)]) for p in range(n_patients)]).float().numpy()
