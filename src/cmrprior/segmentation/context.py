"""Through-plane context for the segmenter: each slice enters with its neighbours as extra channels (2.5D).

A short-axis slice alone is ambiguous at the base (ventricle or atrium?) and at the apex (a thin cap of
myocardium or partial volume?). Its neighbours in the same stack tell. A network with `in_channels = k`
(odd) sees, for the slice at position z, the slices z - k//2 ... z + k//2 of the same patient and phase;
at the ends of the stack the end slice is repeated, so every slice has a full input.

The slices of many patients are often stored together (a prepared cohort: one array per phase with
`patient_index` and `slice_index`). `context_index` turns such a layout into an index array `(N, k)` into
that array, so the same code serves one volume and a whole cohort without copying the images.
"""

from __future__ import annotations

import numpy as np

from cmrprior.errors import ConfigError


def check_context(k: int) -> None:
    """Raises ConfigError unless `k` (the number of input slices) is odd and >= 1."""
    if k < 1 or k % 2 == 0:
        raise ConfigError(f"the segmenter's input slices (in_channels) must be odd and >= 1, got {k}")


def context_index(patient_index: np.ndarray, slice_index: np.ndarray, k: int) -> np.ndarray:
    """`(N, k)` int64: row i lists the positions (in the same arrays) of slice i's `k` neighbours, from
    base-most to apex-most, centred on i, within the same patient, the ends repeated.

    Args:
        patient_index: `(N,)` which stack each slice belongs to.
        slice_index: `(N,)` the slice's position within its stack (any increasing numbering; gaps are
            bridged, so the neighbour is the next slice that exists).
        k: odd number of slices per input.
    """
    check_context(k)
    patient_index = np.asarray(patient_index)
    slice_index = np.asarray(slice_index)
    n = patient_index.shape[0]
    out = np.empty((n, k), np.int64)
    order = np.lexsort((slice_index, patient_index))
    starts = np.flatnonzero(np.r_[True, patient_index[order][1:] != patient_index[order][:-1]])
    ends = np.r_[starts[1:], n]
    offsets = np.arange(k) - k // 2
    for s, e in zip(starts, ends):
        members = order[s:e]
        pos = np.clip(np.arange(e - s)[:, None] + offsets[None, :], 0, e - s - 1)
        out[members] = members[pos]
    return out


def volume_context(n_slices: int, k: int) -> np.ndarray:
    """`context_index` for one stack of `n_slices` consecutive slices."""
    return context_index(np.zeros(n_slices, np.int64), np.arange(n_slices), k)


def gather(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`images[index]`: `(N, H, W)` slices and an `(M, k)` index -> `(M, k, H, W)` float32 inputs."""
    return np.ascontiguousarray(images[index], dtype=np.float32)
