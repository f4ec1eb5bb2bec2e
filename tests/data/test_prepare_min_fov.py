"""`prepare` and `segment predict` share one minimum field of view: a 4 x 4-pixel image is refused by both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmrprior.data.prepare import PrepareConfig, prepare_volumes
from cmrprior.errors import DataError
from cmrprior.io.records import PatientRecord, PatientVolumes, Volume


def _volumes(n_px: int, spacing: float) -> PatientVolumes:
    rng = np.random.default_rng(0)
    vols = [Volume(rng.uniform(0, 100, (3, n_px, n_px)).astype(np.float32), (8.0, spacing, spacing),
                   np.diag([spacing, spacing, 8.0, 1.0]), path=None) for _ in range(2)]
    rec = PatientRecord("p", "NOR", ed_image=Path("ed.nii.gz"), es_image=Path("es.nii.gz"))
    return PatientVolumes(record=rec, ed=vols[0], es=vols[1])


def test_prepare_refuses_the_image_segment_predict_refuses():
    tiny = _volumes(4, 1.4)
    with pytest.raises(DataError, match=r"field of view 6 x 6 mm .* too small for a heart"):
        prepare_volumes(tiny, PrepareConfig(size=16, pixel_spacing_mm=1.5))
    from cmrprior.segmentation.volumes import net_grid

    with pytest.raises(DataError, match=r"field of view 6 x 6 mm .* too small for a heart"):
        net_grid(tiny.ed)  # segment predict's step 1
    ok = prepare_volumes(_volumes(35, 1.4), PrepareConfig(size=16, pixel_spacing_mm=1.5))  # 49 mm: accepted
    assert ok.ed.shape[1:] == (16, 16)
    from cmrprior.io.checks import MIN_FIELD_OF_VIEW_MM
    from cmrprior.segmentation.volumes import MIN_FOV_MM

    assert MIN_FOV_MM == MIN_FIELD_OF_VIEW_MM == 48.0
