"""Mask perturbations move the measures in the expected direction, by hand-computed amounts."""

from __future__ import annotations

import numpy as np
import pytest

from cmrprior.anatomy.measure import measure_patient
from cmrprior.anatomy.perturb import PERTURBATIONS, perturb_masks
from cmrprior.errors import ConfigError

SPACING = (8.0, 1.5, 1.5)


def _heart(z: int = 4) -> np.ndarray:
    """Square rings: LV cavity 6x6 inside a 10x10 myocardium, an RV cavity 4x6 beside it; slice 0 empty."""
    m = np.zeros((z, 24, 24), np.uint8)
    m[1:, 5:15, 5:15] = 2
    m[1:, 7:13, 7:13] = 3
    m[1:, 6:12, 16:20] = 1
    return m


def test_dilation_raises_cavity_volumes_and_erosion_lowers_them():
    ed = _heart()
    es = ed.copy()
    base = measure_patient(ed, es, SPACING)
    big = measure_patient(*perturb_masks(ed, es, "dilate", 1), SPACING)
    small = measure_patient(*perturb_masks(ed, es, "erode", 1), SPACING)
    voxel_ml = 8.0 * 1.5 * 1.5 / 1000
    # a 6x6 square dilated by a 3x3 cross gains 4 x 6 pixels per slice; eroded it keeps 4x4
    assert big.lv_edv_ml == pytest.approx(base.lv_edv_ml + 3 * 24 * voxel_ml)
    assert small.lv_edv_ml == pytest.approx(3 * 16 * voxel_ml)
    assert big.rv_edv_ml > base.rv_edv_ml > small.rv_edv_ml
    assert big.myo_mass_g < base.myo_mass_g < small.myo_mass_g  # the LV rim moves between cavity and wall


def test_dropping_a_basal_or_apical_slice_removes_one_slice_of_heart():
    ed = _heart()
    ed[3, 7:13, 7:13] = 2  # the apical slice has no cavity
    base = measure_patient(ed, ed, SPACING)
    voxel_ml = 8.0 * 1.5 * 1.5 / 1000
    basal = measure_patient(*perturb_masks(ed, ed, "drop_basal", 1), SPACING)
    apical = measure_patient(*perturb_masks(ed, ed, "drop_apical", 1), SPACING)
    assert basal.lv_edv_ml == pytest.approx(base.lv_edv_ml - 36 * voxel_ml)  # slice 1, the first with heart
    assert apical.lv_edv_ml == pytest.approx(base.lv_edv_ml)
    assert apical.myo_mass_g == pytest.approx(base.myo_mass_g - 100 * voxel_ml * 1.05)
    two = perturb_masks(ed, ed, "drop_basal", 2)[0]
    assert not two[:3].any() and (two[3] > 0).any()


def test_inputs_are_not_modified_and_bad_arguments_are_refused():
    ed = _heart()
    copy = ed.copy()
    for kind in PERTURBATIONS:
        perturb_masks(ed, ed, kind, 2)
    np.testing.assert_array_equal(ed, copy)
    with pytest.raises(ConfigError, match="unknown mask perturbation"):
        perturb_masks(ed, ed, "shift", 1)
    with pytest.raises(ConfigError, match=">= 1"):
        perturb_masks(ed, ed, "dilate", 0)
