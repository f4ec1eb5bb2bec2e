"""Checks done when a patient's voxels are loaded: mask shape and labels, finite images."""

from __future__ import annotations

import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.acdc import read_acdc, write_acdc_patient
from cmrprior.io.load import as_mask, load_patient, read_image
from cmrprior.io.records import Volume


def _patient(tmp_path, ed_mask=None, es_mask=None, ed=None, shape=(3, 8, 9)):
    rng = np.random.default_rng(0)
    img = rng.random(shape).astype(np.float32) if ed is None else ed
    good = np.zeros(shape, np.uint8)
    good[1, 2:5, 2:5] = 2
    write_acdc_patient(tmp_path, "patient001", ed=img, es=img, ed_frame=1, es_frame=2,
                       spacing_zyx=(8.0, 1.0, 1.0), group="NOR",
                       ed_mask=good if ed_mask is None else ed_mask,
                       es_mask=good if es_mask is None else es_mask)
    return read_acdc(tmp_path).patients[0]


def test_mask_shape_mismatch(tmp_path):
    rec = _patient(tmp_path, es_mask=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"mask shape \(3, 8, 8\).*differs from image shape \(3, 8, 9\)") as info:
        load_patient(rec)
    assert info.value.path == rec.es_mask


def test_mask_labels_outside_range(tmp_path):
    bad = np.zeros((3, 8, 9), np.uint8)
    bad[0, 0, 0] = 4
    bad[0, 0, 1] = 7
    rec = _patient(tmp_path, ed_mask=bad)
    with pytest.raises(DataError, match=r"mask labels outside 0..3: \[4, 7\]") as info:
        load_patient(rec)
    assert info.value.path == rec.ed_mask


def test_mask_non_integer_and_negative():
    img = Volume(np.zeros((1, 2, 2), np.float32), (1.0, 1.0, 1.0), np.eye(4))
    with pytest.raises(DataError, match="non-integer"):
        as_mask(Volume(np.full((1, 2, 2), 1.5, np.float32), (1.0, 1.0, 1.0), np.eye(4)), img)
    with pytest.raises(DataError, match="outside"):
        as_mask(Volume(np.full((1, 2, 2), -1, np.float32), (1.0, 1.0, 1.0), np.eye(4)), img)


def test_non_finite_image(tmp_path):
    img = np.zeros((3, 8, 9), np.float32)
    img[2, 3, 3] = np.nan
    rec = _patient(tmp_path, ed=img)
    with pytest.raises(DataError, match="non-finite") as info:
        load_patient(rec)
    assert info.value.path == rec.ed_image


def test_read_image_unknown_format(tmp_path):
    f = tmp_path / "image.png"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported image format"):
        read_image(f)
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "absent.nii.gz")
