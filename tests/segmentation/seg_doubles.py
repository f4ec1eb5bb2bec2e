"""Small synthetic data and a tiny U-Net for fast segmentation tests."""

from __future__ import annotations

import numpy as np
import pytest

from cmrprior.data.prepared import PreparedCohort, PreparedPatient
from cmrprior.segmentation.network import UNetArgs

TINY = UNetArgs(channels=(4, 8), strides=(2,), num_res_units=0)


def disc_heart(size: int, centre: tuple[float, float], r_lv: float, wall: float, rv_shift: float) -> np.ndarray:
    """A hand-made short-axis slice: LV disc (3), myocardial ring (2), RV disc to the left (1)."""
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - centre[0], xx - centre[1])
    m = np.zeros((size, size), np.uint8)
    rv = np.hypot(yy - centre[0], xx - (centre[1] - rv_shift)) < r_lv * 1.1
    m[rv] = 1
    m[d < r_lv + wall] = 2
    m[d < r_lv] = 3
    return m


def make_cohort(n_patients: int = 6, n_slices: int = 3, size: int = 32, seed: int = 0) -> PreparedCohort:
    """Prepared-cohort double: images = noisy intensity coding of disc masks, two classes."""
    rng = np.random.default_rng(seed)
    ed, es, edm, esm, pidx, sidx = [], [], [], [], [], []
    patients = []
    for p in range(n_patients):
        for z in range(n_slices):
            c = (size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2))
            r = size * 0.12 * (1 - 0.15 * z)
            for masks, imgs, scale in ((edm, ed, 1.0), (esm, es, 0.7)):
                m = disc_heart(size, c, r * scale, 2.0, size * 0.25)
                lut = np.array([0.1, 0.6, 0.3, 0.9], np.float32)
                masks.append(m)
                imgs.append(lut[m] + rng.normal(0, 0.05, m.shape).astype(np.float32))
            pidx.append(p)
            sidx.append(z)
        patients.append(PreparedPatient(f"p{p:02d}", ["NOR", "DCM"][p % 2], None, None, 8.0, n_slices, "synthetic"))
    return PreparedCohort(
        ed=np.stack(ed), es=np.stack(es), ed_mask=np.stack(edm), es_mask=np.stack(esm),
        patient_index=np.array(pidx, np.int64), slice_index=np.array(sidx, np.int64),
        slice_position=np.tile(np.linspace(0, 1, n_slices), n_patients).astype(np.float32),
        patients=tuple(patients), classes=("NOR", "DCM"), pixel_spacing_mm=1.5,
    )





