"""DICOM cine reader: slices x phases grouped from shuffled files, series folders, localisers, bad series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cmrprior.errors import DataError
from cmrprior.io.dicom_cine import read_dicom_cine
from cmrprior.io.load import load_patient, read_cine, read_image
from cmrprior.io.manifest import read_manifest

N_Z, N_T, SHAPE, DZ = 3, 4, (6, 5), 8.0
TIMES = (0.0, 35.0, 70.0, 105.0)
ORIGIN = np.array([10.0, -20.0, 30.0])


def _stack() -> np.ndarray:
    return np.random.default_rng(3).integers(1, 1000, size=(N_T, N_Z) + SHAPE).astype(np.int16)


def _tag(path: Path, **tags) -> None:
    ds = pydicom.dcmread(str(path))
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(str(path))


def _cine(folder: Path, dicom_slice, normal, *, per_slice_series=False, skip=None, times=TIMES) -> np.ndarray:
    """Write every (slice, phase) as one file, file names in a shuffled order. Returns stored (T, Z, H, W)."""
    stack = _stack()
    pairs = [(k, t) for k in range(N_Z) for t in range(N_T) if (k, t) != skip]
    order = np.random.default_rng(5).permutation(len(pairs))
    for n, i in enumerate(order):
        k, t = pairs[i]
        sub = folder / f"series{k}" if per_slice_series else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"IM{n:04d}.dcm"
        dicom_slice(path, stack[t, k], ORIGIN + k * DZ * normal, series_uid=f"1.2.{k if per_slice_series else 0}",
                    slope=1.0, intercept=0.0)
        _tag(path, TriggerTime=times[t], InstanceNumber=k * N_T + t + 1, StudyInstanceUID="9.9")
    return stack


def test_cine_grouped_by_position_and_trigger_time(tmp_path, dicom_slice, dicom_geometry):
    row, col, normal = dicom_geometry
    stack = _cine(tmp_path / "cine", dicom_slice, normal)
    cine = read_dicom_cine(tmp_path / "cine")
    assert cine.n_frames == N_T and cine.trigger_times_ms == pytest.approx(TIMES)
    for t in range(N_T):
        np.testing.assert_array_equal(cine.frames[t].array, stack[t].astype(np.float32))
        assert cine.frames[t].spacing == pytest.approx((DZ, 1.25, 1.5))
    i, j, k = 2, 3, 2
    lps = ORIGIN + k * DZ * normal + i * 1.5 * row + j * 1.25 * col
    np.testing.assert_allclose((cine.frames[0].affine @ [i, j, k, 1.0])[:3], lps * [-1, -1, 1], atol=1e-6)
    # a frame through the generic reader, and the single-phase reader's hint
    np.testing.assert_array_equal(read_image(tmp_path / "cine", frame=3).array, stack[2].astype(np.float32))
    with pytest.raises(DataError, match="a cine"):
        read_image(tmp_path / "cine")


def test_study_folder_with_one_series_per_slice(tmp_path, dicom_slice, dicom_geometry):
    stack = _cine(tmp_path / "study", dicom_slice, dicom_geometry[2], per_slice_series=True)
    cine = read_cine(tmp_path / "study")
    np.testing.assert_array_equal(np.stack([f.array for f in cine.frames]), stack.astype(np.float32))


def test_instance_number_orders_phases_without_trigger_time(tmp_path, dicom_slice, dicom_geometry):
    stack = _cine(tmp_path / "c", dicom_slice, dicom_geometry[2])
    for f in (tmp_path / "c").iterdir():
        ds = pydicom.dcmread(str(f))
        del ds.TriggerTime
        ds.save_as(str(f))
    cine = read_dicom_cine(tmp_path / "c")
    assert cine.trigger_times_ms is None
    np.testing.assert_array_equal(cine.frames[1].array, stack[1].astype(np.float32))


def test_localiser_is_skipped_and_listed(tmp_path, dicom_slice, dicom_geometry):
    row, col, normal = dicom_geometry
    _cine(tmp_path / "c", dicom_slice, normal)
    loc = tmp_path / "c" / "LOC.dcm"
    dicom_slice(loc, np.ones(SHAPE, np.int16), ORIGIN, iop=[1.0, 0, 0, 0, 1.0, 0])
    _tag(loc, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], StudyInstanceUID="9.9")
    cine = read_dicom_cine(tmp_path / "c")
    assert cine.n_frames == N_T and [(p.name, "LOCALIZER" in r) for p, r in cine.skipped] == [("LOC.dcm", True)]
    _tag(loc, ImageType=["ORIGINAL", "PRIMARY", "M"])  # not marked: its orientation gives it away
    with pytest.raises(DataError, match="ImageOrientationPatient differs"):
        read_dicom_cine(tmp_path / "c")


def test_missing_phase_repeated_series_and_mixed_studies(tmp_path, dicom_slice, dicom_geometry):
    normal = dicom_geometry[2]
    _cine(tmp_path / "miss", dicom_slice, normal, skip=(1, 2))
    with pytest.raises(DataError, match="slice 2 of 3 has 3 phases, the others 4"):
        read_dicom_cine(tmp_path / "miss")
    _cine(tmp_path / "rep", dicom_slice, normal)
    dicom_slice(tmp_path / "rep" / "AGAIN.dcm", np.ones(SHAPE, np.int16), ORIGIN)
    _tag(tmp_path / "rep" / "AGAIN.dcm", TriggerTime=35.0, StudyInstanceUID="9.9")
    with pytest.raises(DataError, match="same slice position and TriggerTime 35"):
        read_dicom_cine(tmp_path / "rep")
    _tag(tmp_path / "rep" / "AGAIN.dcm", StudyInstanceUID="7.7")
    with pytest.raises(DataError, match="mixes studies"):
        read_dicom_cine(tmp_path / "rep")


def _enhanced(path: Path, stack: np.ndarray, normal, row, col) -> None:
    """One enhanced MR file holding every (slice, phase) frame, geometry in the functional groups."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

    n_t, n_z = stack.shape[:2]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MR", "9.9", "1.2.3"
    ds.Rows, ds.Columns = SHAPE
    ds.NumberOfFrames = n_t * n_z
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    shared, meas, ori = Dataset(), Dataset(), Dataset()
    meas.PixelSpacing, meas.SliceThickness = [1.25, 1.5], 8.0
    ori.ImageOrientationPatient = [float(v) for v in np.concatenate([row, col])]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([meas]), Sequence([ori])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, per = [], []
    for k in range(n_z):  # slice-major, as scanners often store them
        for t in range(n_t):
            fg, pos, sync = Dataset(), Dataset(), Dataset()
            pos.ImagePositionPatient = [float(v) for v in ORIGIN + k * DZ * normal]
            sync.NominalCardiacTriggerDelayTime = TIMES[t]
            fg.PlanePositionSequence, fg.CardiacSynchronizationSequence = Sequence([pos]), Sequence([sync])
            per.append(fg)
            frames.append(stack[t, k])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = np.stack(frames).astype(np.int16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_enhanced_multiframe_file(tmp_path, dicom_geometry):
    row, col, normal = dicom_geometry
    stack = _stack()
    (tmp_path / "mf").mkdir()
    _enhanced(tmp_path / "mf" / "cine.dcm", stack, normal, row, col)
    cine = read_dicom_cine(tmp_path / "mf")
    np.testing.assert_array_equal(np.stack([f.array for f in cine.frames]), stack.astype(np.float32))
    assert cine.trigger_times_ms == pytest.approx(TIMES) and cine.frames[0].spacing == pytest.approx((DZ, 1.25, 1.5))


def test_manifest_cine_with_given_frames_loads_them(tmp_path, dicom_slice, dicom_geometry):
    stack = _cine(tmp_path / "cine", dicom_slice, dicom_geometry[2])
    (tmp_path / "m.csv").write_text("patient_id,label,cine,ed_frame,es_frame\np1,NOR,cine,1,3\n")
    rec = read_manifest(tmp_path / "m.csv").patients[0]
    assert rec.ed_image == rec.es_image == rec.cine == tmp_path / "cine"
    vols = load_patient(rec)
    np.testing.assert_array_equal(vols.ed.array, stack[0].astype(np.float32))
    np.testing.assert_array_equal(vols.es.array, stack[2].astype(np.float32))
    (tmp_path / "n.csv").write_text("patient_id,label,cine\np1,NOR,cine\n")
    with pytest.raises(DataError, match="no ED frame for the cine"):
        load_patient(read_manifest(tmp_path / "n.csv").patients[0])
