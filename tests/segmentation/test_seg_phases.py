"""ED/ES detection from LV volume curves (stub segmenters), cohort resolution, and masks of ACDC-style input."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cmrprior.anatomy.measure import label_volume_ml
from cmrprior.errors import DataError
from cmrprior.io.manifest import read_manifest
from cmrprior.io.nifti import read_nifti, write_nifti
from cmrprior.io.records import Volume
from cmrprior.segmentation.network import build_unet, save_segmenter
from cmrprior.segmentation.phases import curve_extremes, detect_phases, mid_ventricular_slices, resolve_cohort_phases
from cmrprior.segmentation.cohort_predict import predict_cohort
from seg_doubles import TINY, disc_heart

ACDC_ROOT = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "../shared/data/acdc/training"))
SPACING = (8.0, 1.5, 1.25)


def _frames(radii: list[float]) -> list[Volume]:
    """One frame per LV radius (px): 2 slices of disc hearts; the image encodes the labels."""
    out = []
    for r in radii:
        m = np.stack([disc_heart(48, (24, 26), r, 3.0, 12.0)] * 2)
        out.append(Volume(m.astype(np.float32) * 100 + 1, SPACING, np.diag([1.25, 1.5, 8.0, 1.0])))
    return out


def label_reader(frame: Volume, index: int) -> np.ndarray:
    """A perfect segmenter for `_frames` images (labels = (image - 1) / 100)."""
    return np.rint((frame.array - 1) / 100).astype(np.uint8)


def test_ed_largest_es_smallest_with_hand_computed_curve():
    radii = [9.0, 8.0, 6.0, 5.0, 6.5, 8.5]  # ED = frame 1, ES = frame 4
    frames = _frames(radii)
    det = detect_phases(frames, segment=label_reader, trigger_times_ms=[0, 40, 80, 120, 160, 200])
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    expected = [float((label_reader(f, 0) == 3).sum()) * voxel_ml for f in frames]
    assert det.lv_volume_ml == pytest.approx(expected)
    assert (det.ed_frame, det.es_frame, det.trigger_zero_frame) == (1, 4, 1) and det.ed_matches_trigger
    assert det.ejection_fraction == pytest.approx(100 * (expected[0] - expected[3]) / expected[0])
    row = det.as_row()
    assert row["ed_frame"] == 1 and len(str(row["lv_volume_ml"]).split(";")) == 6


def test_cross_check_is_cyclic_and_flags_disagreement():
    frames = _frames([8.0, 6.0, 5.0, 7.0, 9.0])  # largest at the last frame: one frame before frame 1, cyclically
    det = detect_phases(frames, segment=label_reader)
    assert (det.ed_frame, det.es_frame) == (5, 3) and not det.trigger_times_known and det.ed_matches_trigger
    det = detect_phases(frames, segment=label_reader, trigger_times_ms=[80, 120, 160, 0, 40])
    assert det.trigger_zero_frame == 4 and det.ed_matches_trigger
    det = detect_phases(frames, segment=label_reader, trigger_times_ms=[160, 0, 40, 80, 120])
    assert det.trigger_zero_frame == 2 and not det.ed_matches_trigger


def test_no_lv_anywhere_and_too_few_frames():
    empty = [Volume(np.ones((2, 48, 48), np.float32), SPACING, np.eye(4), Path("c.nii.gz"))] * 3
    with pytest.raises(DataError, match="no LV cavity found"):
        detect_phases(empty, segment=lambda f, i: np.zeros(f.shape, np.uint8))
    with pytest.raises(DataError, match="at least 2 frames"):
        detect_phases(_frames([5.0]), segment=label_reader)


def _unimodal(rng: np.random.Generator, n: int) -> tuple[np.ndarray, int, int]:
    """A random cyclic curve with one maximum and one minimum (distinct values): random positive steps down
    from the peak to the trough, then up again; some steps large (a basal slice leaving a coarse stack)."""
    peak, length = int(rng.integers(n)), int(rng.integers(1, n))  # length: frames from peak to trough
    steps = rng.exponential(1.0, n) * np.where(rng.random(n) < 0.2, 20.0, 1.0) + 1e-3
    v = np.empty(n)
    v[0] = 100.0
    v[1:length + 1] = 100.0 - np.cumsum(steps[:length])
    rise = np.cumsum(steps[length:n - 1])
    v[length + 1:] = v[length] + rise * (100.0 - v[length] - 1e-3) / (rise[-1] + 1e-3 if rise.size else 1.0)
    return np.roll(v, peak), peak + 1, (peak + length) % n + 1


def test_curve_extremes_are_the_raw_extremes_of_any_one_peak_curve():
    """The slow reference on curves without outliers is the plain argmax / argmin."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(3, 40))
        v, ed, es = _unimodal(rng, n)
        assert (int(np.argmax(v)) + 1, int(np.argmin(v)) + 1) == (ed, es)
        assert curve_extremes(v) == (ed, es)


def _sharp_curve(n: int, es: int) -> np.ndarray:
    """LV volume (ml) falling linearly 150 -> 60 to `es`, then refilling; frames 1-based."""
    t = np.arange(1, n + 1)
    up = 60 + 90 * (t - es) / (n + 1 - es)
    return np.where(t <= es, 150 - 90 * (t - 1) / (es - 1), up)


def test_curve_extremes_ignore_one_badly_segmented_frame():
    v = _sharp_curve(30, 12)
    assert curve_extremes(v) == (1, 12) == (int(np.argmax(v)) + 1, int(np.argmin(v)) + 1)
    bad = v.copy()
    bad[5] = 40.0  # frame 6: a failed segmentation, far below the true ESV
    bad[20] = 170.0  # frame 21: a frame over-segmented above the true EDV
    assert (int(np.argmax(bad)) + 1, int(np.argmin(bad)) + 1) == (21, 6)  # what the raw extremes say
    assert curve_extremes(bad) == (1, 12)
    near = v.copy()
    near[29] = 151.0  # the largest volume one frame before frame 1: measured extremes win near the fit's
    assert curve_extremes(near) == (30, 12)


def test_curve_extremes_by_hand():
    # running median of [8, 6, 9, 5, 7, 7.5] (cyclic): 7.5, 8, 6, 7, 7, 7.5; its largest (8) at frame 2, where
    # frames 1-3 hold the raw largest 9 (frame 3); its smallest (6) at frame 3: frames 2-4 hold 5 (frame 4)
    assert curve_extremes([8.0, 6.0, 9.0, 5.0, 7.0, 7.5]) == (3, 4)
    assert curve_extremes([5.0, 5.0, 4.0]) == (1, 3)  # ties: earliest frame
    assert curve_extremes([3.0, 4.0]) == (2, 1)  # two frames: the raw extremes


def test_mid_ventricular_slices_by_hand():
    present = np.ones((4, 9))
    present[1, 7] = 0  # slice 7: LV in 3 of 4 frames (a false blob past the apex); slice 8: never
    present[:, 8] = 0
    # slices 0-6 hold LV in every frame; 15 mm at 10 mm spacing trims 2 slices at each end
    assert mid_ventricular_slices(present, 10.0).tolist() == [2, 3, 4]
    assert mid_ventricular_slices(present, 7.5).tolist() == [2, 3, 4]  # 15 / 7.5 = 2 exactly
    assert mid_ventricular_slices(present, 20.0).tolist() == [1, 2, 3, 4, 5]  # at least one each end
    assert mid_ventricular_slices(np.ones((3, 12)), 5.0).tolist() == [3, 4, 5, 6, 7, 8]
    # the longest run of slices present in every frame; trimmed less so that 3 remain
    gap = np.ones((3, 9))
    gap[2, 2] = 0
    assert mid_ventricular_slices(gap, 10.0).tolist() == [4, 5, 6, 7]
    assert mid_ventricular_slices(np.ones((3, 4)), 10.0).tolist() == [0, 1, 2, 3]  # 4 slices: no trim
    assert mid_ventricular_slices(np.eye(3), 10.0).tolist() == [0, 1, 2]  # no slice in every frame: all


def test_ed_es_come_from_the_mid_ventricular_slices():
    """The whole-heart curve is misled by the ends of the stack (a basal slice taking in atrium at ES, a false
    blob past the apex at frame 2); the mid-ventricular slices are not."""
    n_frames, es = 12, 6
    f = np.where(np.arange(n_frames) < es, np.arange(n_frames) / (es - 1), (n_frames - np.arange(n_frames)) / (n_frames - es + 1))
    radii = np.array([10.0, 10.0, 9.5, 9.0, 8.0, 6.5, 4.5])  # base -> apex, slice 7 past the apex
    labels = np.zeros((n_frames, 8, 48, 48), np.uint8)
    for t in range(n_frames):
        for z, r in enumerate(radii):
            labels[t, z] = disc_heart(48, (24, 26), r * (1 - 0.3 * f[t]), 3.0, 12.0)
    labels[es - 1, 1] = disc_heart(48, (24, 26), 12.0, 3.0, 12.0)  # at ES: atrium read as LV on slice 1
    labels[1, 7] = disc_heart(48, (24, 26), 9.0, 3.0, 12.0)  # frame 2: a false LV past the apex
    frames = [Volume(m.astype(np.float32) * 100 + 1, (10.0, 1.5, 1.5), np.diag([1.5, 1.5, 10.0, 1.0])) for m in labels]
    det = detect_phases(frames, segment=label_reader)
    whole = np.asarray(det.lv_volume_ml)
    voxel_ml = 10.0 * 1.5 * 1.5 / 1000.0
    assert whole == pytest.approx((labels == 3).sum(axis=(2, 3)).sum(axis=1) * voxel_ml)
    assert (int(whole.argmax()) + 1, int(whole.argmin()) + 1) == (2, 7)  # what every slice together says
    assert det.mid_slices == (2, 3, 4)  # slices 0-6 in every frame, 2 trimmed at each end
    assert det.mid_volume_ml == pytest.approx((labels[:, 2:5] == 3).sum(axis=(1, 2, 3)) * voxel_ml)
    assert (det.ed_frame, det.es_frame) == (1, es)
    row = det.as_row()
    assert row["mid_slices"] == "2;3;4" and len(str(row["mid_lv_volume_ml"]).split(";")) == n_frames


def _cine_manifest(tmp_path: Path, rows: str) -> Path:
    frames = _frames([7.0, 9.0, 6.0, 4.5, 8.0])  # ED = 2, ES = 4
    cine = np.stack([f.array for f in frames], axis=-1)
    affine = np.diag([-1.25, -1.5, 8.0, 1.0])  # ACDC's in-plane frame: read back unturned (cmrprior.io.orientation)
    for name in ("c1", "c2", "c3"):
        write_nifti(cine + (name == "c2"), affine, tmp_path / f"{name}.nii.gz")
    write_nifti(frames[0].array, affine, tmp_path / "ed.nii.gz")
    write_nifti(frames[3].array, affine, tmp_path / "es.nii.gz")
    (tmp_path / "m.csv").write_text("patient_id,label,ed_image,es_image,cine,ed_frame,es_frame\n" + rows)
    return tmp_path / "m.csv"


def test_resolve_fills_missing_frames_and_given_frames_win(tmp_path):
    path = _cine_manifest(tmp_path, "a,NOR,,,c1.nii.gz,,\nb,DCM,,,c2.nii.gz,1,\nc,HCM,ed.nii.gz,es.nii.gz,c3.nii.gz,,\n")
    cohort = read_manifest(path)
    calls = []

    def seg(frame: Volume, index: int) -> np.ndarray:
        calls.append(index)
        return np.rint((frame.array - 1) / 100).astype(np.uint8)

    resolved, dets = resolve_cohort_phases(cohort, segment=seg)
    a, b, c = resolved.patients
    assert (a.ed_frame, a.es_frame, a.n_frames) == (2, 4, 5)
    assert (b.ed_frame, b.es_frame) == (1, 4)  # the given ED frame wins over the detected 2
    assert c == cohort.patients[2] and len(calls) == 10  # separate ED/ES files: not segmented
    assert [d.patient_id for d in dets] == ["a", "b"] and dets[1].ed_frame == 2
    from cmrprior.io.load import load_patient

    vols = load_patient(a)
    np.testing.assert_array_equal(vols.es.array, _frames([4.5])[0].array)


def test_a_flat_curve_is_flagged_and_warned_about(tmp_path, caplog):
    """A segmenter that does not follow the cavity: the LV volume moves < 5 % over the cine (hand count:
    discs of radius 8 and 7.8 px hold 193 and 185 pixels, 4.1 % apart)."""
    det = detect_phases(_frames([8.0, 7.8, 8.0, 7.8]), segment=label_reader)
    assert det.curve_change_percent == pytest.approx(100 * 8 / 193)
    assert not det.reliable and det.as_row()["reliable"] is False
    assert detect_phases(_frames([9.0, 8.0, 6.0, 5.0]), segment=label_reader).reliable
    path = _cine_manifest(tmp_path, "a,NOR,,,c1.nii.gz,,\n")
    flat = [np.rint((f.array - 1) / 100).astype(np.uint8) for f in _frames([8.0, 7.8, 8.0, 7.8, 7.8])]
    with caplog.at_level("WARNING", logger="cmrprior.segmentation.phases"):
        resolve_cohort_phases(read_manifest(path), segment=lambda frame, i: flat[i])
    assert "patient a" in caplog.text and "c1.nii.gz" in caplog.text and "unreliable" in caplog.text


def test_predicted_masks_of_acdc_style_input_measure_the_same_with_nibabel(tmp_path):
    """ACDC header (unit sform, true spacing in pixdim): the written masks say the true spacing."""
    src = tmp_path / "in"
    src.mkdir()
    arrays = _frames([9.0, 5.0])
    for name, vol in (("ed", arrays[0]), ("es", arrays[1])):
        img = nib.Nifti1Image(np.ascontiguousarray(vol.array.transpose(2, 1, 0)), np.diag([-1.0, -1.0, 1.0, 1.0]))
        img.header.set_zooms((1.25, 1.5, 8.0))
        img.header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
        img.header.set_qform(None, code=0)
        (src / f"{name}.nii").write_bytes(img.to_bytes())
    with open(src / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["patient_id", "label", "ed_image", "es_image"], ["p1", "NOR", "ed.nii", "es.nii"]])
    torch.manual_seed(0)
    model = save_segmenter(build_unet(TINY), TINY, tmp_path / "model" / "m.safetensors")
    predict_cohort(src / "m.csv", tmp_path / "run", model_path=model, overlays=0, include_cine=False)
    out = tmp_path / "run" / "p1" / "p1_ED_seg.nii.gz"
    img = nib.load(str(out))
    np.testing.assert_allclose(img.header.get_zooms(), (1.25, 1.5, 8.0))
    assert int(img.header["sform_code"]) == 2
    labels = read_nifti(out).array
    for label in (1, 2, 3):
        by_nibabel = float((np.asarray(img.dataobj) == label).sum()) * float(np.prod(img.header.get_zooms()))
        assert by_nibabel / 1000 == pytest.approx(label_volume_ml(labels, label, SPACING))


@pytest.mark.acdc
@pytest.mark.skipif(not ACDC_ROOT.is_dir(), reason="ACDC training folder not found")
def test_shipped_segmenter_masks_on_acdc_measure_the_same_with_nibabel(tmp_path, one_torch_thread):
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "m.csv", "w", newline="") as fh:
        p = ACDC_ROOT / "patient001"
        csv.writer(fh).writerows([["patient_id", "label", "ed_image", "es_image"],
                                  ["patient001", "DCM", p / "patient001_frame01.nii.gz", p / "patient001_frame12.nii.gz"]])
    predict_cohort(tmp_path / "in" / "m.csv", tmp_path / "run", overlays=0, include_cine=False)
    out = tmp_path / "run" / "patient001" / "patient001_ED_seg.nii.gz"
    img, ref = nib.load(str(out)), read_nifti(p / "patient001_frame01.nii.gz")
    labels = np.asarray(img.dataobj)
    lv_nib = float((labels == 3).sum()) * float(np.prod(img.header.get_zooms())) / 1000
    assert lv_nib == pytest.approx(label_volume_ml(labels.transpose(2, 1, 0), 3, ref.spacing))
    assert 200 < lv_nib < 350  # patient001 (DCM) expert LV EDV is ~296 ml; a 1 mm header would give ~12 ml


def test_cine_detection_reports_progress(tmp_path, caplog):
    path = _cine_manifest(tmp_path, "a,NOR,,,c1.nii.gz,,\nb,DCM,,,c2.nii.gz,,\n")
    with caplog.at_level("INFO", logger="cmrprior.segmentation.phases"):
        resolve_cohort_phases(read_manifest(path), segment=lambda f, i: np.rint((f.array - 1) / 100).astype(np.uint8))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ED/ES from cines")]
    assert lines and "2/2 patients done" in lines[-1]
