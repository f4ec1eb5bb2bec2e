"""Patient-level pooling of slice features: the whole heart seen at once, as a reader sees it.

The study's model scores each ED/ES slice pair and averages the slice probabilities of a patient. With
`classifier.pooling: patient`, the frozen encoders' slice features of a patient are pooled into one
descriptor, their mean and their standard deviation over the patient's slices (the average slice and how much
the slices differ, e.g. a cavity that narrows fast towards the apex or one thick segment), and one linear layer
scores the patient. Both statistics ignore the slice order.

With `classifier.position_bins: B` (> 0) the descriptor also holds the mean features of the slices in each of B
equal parts of the heart from base to apex (a patient's mean where a part has no slice), so the layer can weigh
a basal segment differently from an apical one. Positions run from the base (0) to the apex (1) whichever way
the stack was stored (`base_to_apex`).
"""

from __future__ import annotations

import numpy as np
import torch

from cmrprior.errors import InputError

POOLINGS: tuple[str, ...] = ("slices", "patient")


def descriptor_size(n_features: int, bins: int) -> int:
    """Length of a patient's descriptor for slice features of length `n_features`: mean, SD, one mean per bin."""
    return (2 + int(bins)) * int(n_features)


def _bin_of(positions: torch.Tensor, bins: int) -> torch.Tensor:
    """The part (0..bins-1) of each position in [0, 1]; position 1 falls in the last part."""
    return torch.clamp((positions * bins).long(), 0, bins - 1)


def pool_slices(features: torch.Tensor, positions: torch.Tensor | None = None, bins: int = 0) -> torch.Tensor:
    """One patient's descriptor from its slice features `(S, F)`: their mean, their population standard
    deviation (ddof 0), then with `bins` > 0 the mean of each base-to-apex part (`positions` `(S,)` in [0, 1];
    the patient's mean for an empty part). The pooled model's forward and the cells' cached features both use it.

    Raises InputError when `bins` > 0 and the positions are missing or do not match the slices.
    """
    parts = [features.mean(0), features.std(0, unbiased=False)]
    if bins > 0:
        if positions is None or positions.shape != (features.shape[0],):
            raise InputError(f"position bins need one position per slice; got "
                             f"{None if positions is None else tuple(positions.shape)} for {features.shape[0]} slices")
        which = _bin_of(positions, bins)
        for b in range(bins):
            sel = which == b
            parts.append(features[sel].mean(0) if bool(sel.any()) else parts[0])
    return torch.cat(parts)


def patient_descriptors(features: np.ndarray, patient_index: np.ndarray, n_patients: int,
                        positions: np.ndarray | None = None, bins: int = 0) -> np.ndarray:
    """float32 `(P, descriptor_size(F, bins))`: `pool_slices` of each patient's slice features `(N, F)`
    (computed in float64); `patient_index` `(N,)` in `[0, n_patients)`; `positions` `(N,)` base (0) to apex (1).

    Raises InputError for a patient without a slice (its descriptor would be undefined), or missing positions.
    """
    f = np.ascontiguousarray(features, dtype=np.float64)
    idx = np.asarray(patient_index, dtype=np.int64)
    counts = np.bincount(idx, minlength=n_patients)[:n_patients]
    if f.ndim != 2 or idx.shape != (f.shape[0],) or (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()[:5]
        raise InputError(f"patient pooling needs features (N, F) with a slice for every patient; "
                         f"features {f.shape}, patients without slices {empty}")
    t = torch.from_numpy(f)
    pos = None if positions is None else torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float64))
    out = []
    for p in range(n_patients):
        sel = torch.from_numpy(idx == p)
        out.append(pool_slices(t[sel], None if pos is None else pos[sel], bins))
    return torch.stack(out).float().numpy()


def base_to_apex(slice_position: np.ndarray, patient_index: np.ndarray, heart_area: np.ndarray | None) -> np.ndarray:
    """Slice positions float32 `(N,)` with 0 at each patient's base: `slice_position` (0 = first kept slice as
    stored) reversed for a patient whose heart (`heart_area` `(N,)`, pixels with a heart label) is larger in the
    second half of its stack than in the first, since the heart narrows from base to apex. Without areas the
    stored order is kept.
    """
    pos = np.asarray(slice_position, dtype=np.float32).copy()
    if heart_area is None:
        return pos
    area = np.asarray(heart_area, dtype=np.float64)
    for p in np.unique(patient_index):
        sel = np.flatnonzero(patient_index == p)
        x = pos[sel]
        first, second = area[sel][x < 0.5].sum(), area[sel][x > 0.5].sum()
        if second > first:
            pos[sel] = 1.0 - x
    return pos
