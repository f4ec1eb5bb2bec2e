"""A cine far longer than one cardiac cycle (500 frames) is refused for the ED/ES search before it is decoded,
and a slow search logs its progress."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.manifest import read_manifest
from cmrprior.io.nifti import write_nifti
from cmrprior.io.records import Volume
from cmrprior.segmentation import phases
from cmrprior.segmentation.phases import detect_phases, lv_slice_volumes_ml, resolve_cohort_phases


def _frame(value: float) -> Volume:
    arr = np.zeros((2, 8, 8), np.float32)
    arr[:, 2:6, 2:6] = value
    return Volume(arr, (8.0, 1.5, 1.5), np.diag([1.5, 1.5, 8.0, 1.0]), path=Path("cine.nii.gz"))


def _lv_where_bright(frame: Volume, index: int) -> np.ndarray:
    return (frame.array > 0).astype(np.uint8) * 3


def test_cine_with_too_many_frames_is_refused_from_the_header(tmp_path, monkeypatch):
    cine = tmp_path / "rt.nii.gz"
    write_nifti(np.random.default_rng(0).uniform(0, 9, (2, 8, 8, 500)).astype(np.float32),
                np.diag([1.5, 1.5, 8.0, 1.0]), cine)
    (tmp_path / "m.csv").write_text("patient_id,label,cine\np1,NOR,rt.nii.gz\n")
    cohort = read_manifest(tmp_path / "m.csv")

    def no_decoding(path):
        raise AssertionError("the 500 frames were decoded before the refusal")

    monkeypatch.setattr(phases, "read_cine", no_decoding)
    with pytest.raises(DataError, match=r"cine of 500 frames: .* at most 100 accepted.* Give ed_frame and es_frame") as info:
        resolve_cohort_phases(cohort, segment=_lv_where_bright)
    assert info.value.path == cine


def test_detect_phases_refuses_more_than_the_maximum_and_accepts_it():
    frames = [_frame(1.0 + t) for t in range(101)]
    with pytest.raises(DataError, match="cine of 101 frames"):
        detect_phases(frames, segment=_lv_where_bright)
    assert phases.MAX_CINE_FRAMES == 100
    assert detect_phases(frames[:100], segment=_lv_where_bright).n_frames == 100


def test_slow_frame_segmentation_logs_progress(caplog):
    ticks = iter(range(0, 10_000, 15))  # every frame takes 15 s on this clock
    frames = [_frame(1.0)] * 6
    with caplog.at_level(logging.INFO, logger="cmrprior.segmentation.phases"):
        vols = lv_slice_volumes_ml(frames, _lv_where_bright, clock=lambda: float(next(ticks)))
    assert vols.shape == (6, 2) and vols[0, 0] == pytest.approx(16 * 1.5 * 1.5 * 8.0 / 1000.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["cine.nii.gz: ED/ES search: 2/6 frames segmented, 30 s elapsed",
                     "cine.nii.gz: ED/ES search: 4/6 frames segmented, 1 min 00 s elapsed"]
