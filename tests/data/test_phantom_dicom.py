"""Phantom written as DICOM cine series: read back, ED/ES found automatically, equal to the true frames."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from cmrprior.data.phantom import PhantomConfig, generate_phantom, render_patient
from cmrprior.data.phantom.render import contraction
from cmrprior.io.load import load_patient, read_cine
from cmrprior.io.manifest import read_manifest
from cmrprior.io.records import Volume
from cmrprior.segmentation.phases import resolve_cohort_phases


@pytest.mark.parametrize("n_frames, es_frame", [(25, 10), (30, 12), (35, 15), (25, 9), (21, 15)])
def test_contraction_curve_has_sharp_single_extremes(n_frames, es_frame):
    f = contraction(n_frames, es_frame)
    assert f[0] == 0.0 and f[es_frame - 1] == pytest.approx(1.0)
    assert np.all(np.diff(f[:es_frame]) > 0) and np.all(np.diff(f[es_frame - 1:]) < 0)
    # constant-rate ejection: every systolic step is 1 / (es_frame - 1) of the motion, by hand
    np.testing.assert_allclose(np.diff(f[:es_frame]), 1.0 / (es_frame - 1))
    # every frame but ED / ES is at least one systolic step away from the extremes (a raised cosine left
    # the neighbours within ~1 %, so segmentation noise decided which frame was "ED" / "ES")
    margin = 1.0 / (es_frame - 1) - 1e-9
    assert np.all(np.delete(f, 0) >= margin) and np.all(np.delete(f, es_frame - 1) <= 1 - margin)
    assert f[-1] == pytest.approx(0.5 * (1 - 0.7), abs=1e-3)  # half-way through the 2-frame atrial kick


@pytest.fixture(scope="module")
def dicom_phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph") / "cohort"
    generate_phantom(out, n_patients=2, seed=3, classes=("NOR", "DCM"), output_format="dicom")
    return out


def test_dicom_phantom_ed_es_found_from_the_cine(dicom_phantom):
    cohort = read_manifest(dicom_phantom / "manifest.csv")
    assert [r.label for r in cohort.patients] == ["NOR", "DCM"]
    assert all(r.ed_frame is None and r.ed_image == r.cine for r in cohort.patients)
    truth, masks = {}, {}
    for i, rec in enumerate(cohort.patients):  # independent re-render: exact masks of every frame
        p = render_patient(rec.label, i, 2, PhantomConfig(), np.random.SeedSequence([3, i]), cine=True)
        truth[rec.patient_id], masks[rec.patient_id] = p, p.cine_masks

    def exact_masks(frame: Volume, index: int) -> np.ndarray:
        """The true mask of whichever rendered frame this image is (so the read order is tested too)."""
        pid = frame.path.parent.name
        hits = [t for t, img in enumerate(truth[pid].cine_images) if np.array_equal(img, frame.array)]
        assert len(hits) == 1
        return masks[pid][hits[0]]

    resolved, dets = resolve_cohort_phases(cohort, segment=exact_masks)
    for rec, det in zip(resolved.patients, dets):
        p = truth[rec.patient_id]
        saved = json.loads((dicom_phantom / rec.patient_id / "phantom_truth.json").read_text())
        assert (rec.ed_frame, rec.es_frame, rec.n_frames) == (1, p.es_frame, p.n_frames)
        assert (saved["ed_frame"], saved["es_frame"]) == (1, p.es_frame)
        assert det.lv_volume_ml == pytest.approx(p.cine_lv_ml) and det.lv_volume_ml == pytest.approx(saved["lv_volume_ml"], abs=1e-3)
        assert det.trigger_times_known and det.trigger_zero_frame == 1 and det.ed_matches_trigger
        # the written true ED / ES are the largest / smallest true LV volumes, every other frame clearly apart
        lv = np.asarray(saved["lv_volume_ml"])
        stroke = lv[0] - lv[p.es_frame - 1]
        assert np.delete(lv, 0).max() < lv[0] - 0.03 * stroke
        assert np.delete(lv, p.es_frame - 1).min() > lv[p.es_frame - 1] + 0.03 * stroke
        vols = load_patient(rec)
        np.testing.assert_array_equal(vols.ed.array, p.ed_image.astype(np.float32))
        np.testing.assert_array_equal(vols.es.array, p.es_image.astype(np.float32))
        assert vols.ed.spacing == pytest.approx(p.spacing, rel=1e-6)


def test_dicom_phantom_tags(dicom_phantom):
    files = sorted((dicom_phantom / "patient001" / "cine").iterdir())
    cine = read_cine(dicom_phantom / "patient001" / "cine")
    assert len(files) == cine.n_frames * cine.frames[0].shape[0]
    ds = pydicom.dcmread(str(files[1]))
    assert ds.Modality == "MR" and ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.PatientID == "patient001"
    assert ds.CardiacNumberOfImages == cine.n_frames and float(ds.TriggerTime) > 0
    row, col = np.array(ds.ImageOrientationPatient[:3]), np.array(ds.ImageOrientationPatient[3:])
    assert abs(row @ col) < 1e-6 and 0.1 < abs(np.cross(row, col)[2]) < 0.9  # an oblique plane
    assert float(ds.SpacingBetweenSlices) == pytest.approx(cine.frames[0].spacing[0], rel=1e-6)
