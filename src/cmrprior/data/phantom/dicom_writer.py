"""Write a phantom patient as a short-axis cine DICOM series, as a scanner would (`--format dicom`).

Layout::

    OUT/manifest.csv                         patient_id,label,cine,height_cm,weight_kg (no ED/ES frames:
                                             they are found from the cine)
    OUT/patientNNN/cine/IM00001.dcm ...      one MR image per slice and phase (classic MR Image Storage)
    OUT/patientNNN/phantom_truth.json        as for NIfTI, plus the true ED/ES frames, trigger times and
                                             LV volume curve

Tags: patient/study/series identification (UIDs derived deterministically from the seed and patient),
an oblique short-axis `ImageOrientationPatient`, `ImagePositionPatient` stepping along the slice normal,
`PixelSpacing`, `SliceThickness`, `SpacingBetweenSlices`, `SliceLocation`, cardiac `TriggerTime` (ms,
frame 1 at 0 = ED at the R wave), `CardiacNumberOfImages`, `NominalInterval`, `InstanceNumber`, SSFP-like
acquisition parameters, and 16-bit unsigned pixels with identity rescale. Reading the series back with
`cmrprior.io.dicom_cine.read_dicom_cine` gives the rendered arrays `(Z, H, W)` and spacing exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cmrprior.data.phantom.render import RenderedPatient

CINE_FOLDER = "cine"
_ORIENTATION_DEG = (35.0, 50.0)  # rotations about z then x that make an oblique short-axis plane


def sa_orientation() -> tuple[np.ndarray, np.ndarray]:
    """(row cosine, column cosine) in LPS of the oblique short-axis plane used for every phantom."""
    a, b = (math.radians(d) for d in _ORIENTATION_DEG)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    r = rz @ rx
    return r[:, 0], r[:, 1]


def trigger_times_ms(n_frames: int, heart_rate_bpm: float) -> np.ndarray:
    """Trigger time of each frame (ms): the R-R interval divided evenly, frame 1 at 0 ms."""
    return np.arange(n_frames) * (60000.0 / heart_rate_bpm) / n_frames


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _base_dataset(patient_id: str, p: RenderedPatient, seed_key: str, heart_rate: float):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "MR"
    ds.Manufacturer = "cmrprior phantom"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientSex = "O"
    ds.PatientSize = round(p.height_cm / 100.0, 2)
    ds.PatientWeight = round(p.weight_kg, 1)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = "090000"
    ds.StudyInstanceUID = _uid(seed_key, patient_id, "study")
    ds.SeriesInstanceUID = _uid(seed_key, patient_id, "series")
    ds.FrameOfReferenceUID = _uid(seed_key, patient_id, "frame-of-reference")
    ds.StudyID = "1"
    ds.SeriesNumber = 7
    ds.SeriesDescription = "SA cine bSSFP"
    ds.ProtocolName = "sa_cine_retro"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "GR", "SS", "2D"
    ds.MagneticFieldStrength = 1.5
    ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = 3.1, 1.3, 60
    ds.HeartRate = int(round(heart_rate))
    ds.NominalInterval = int(round(60000.0 / heart_rate))
    ds.CardiacNumberOfImages = p.n_frames
    ds.BodyPartExamined = "HEART"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    return ds


def write_cine_dicom(folder: Path, patient_id: str, p: RenderedPatient, *, seed_key: str,
                     heart_rate_bpm: float = 70.0) -> np.ndarray:
    """Write `p.cine_images` `(T, Z, H, W)` as one DICOM file per slice and phase under `folder`.

    Returns the trigger times (ms) per frame. Raises ValueError when `p` was rendered without a cine.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    if p.cine_images is None:
        raise ValueError(f"{patient_id}: rendered without a cine (render_patient(..., cine=True))")
    folder.mkdir(parents=True, exist_ok=True)
    n_t, n_z, rows, cols = p.cine_images.shape
    dz, dy, dx = (float(s) for s in p.spacing)
    row, col = sa_orientation()
    normal = np.cross(row, col)
    # centre of the stack near the scanner's isocentre, like a planned short-axis stack
    origin = np.array([30.0, 20.0, 10.0]) - row * dx * (cols - 1) / 2 - col * dy * (rows - 1) / 2 \
        - normal * dz * (n_z - 1) / 2
    times = trigger_times_ms(n_t, heart_rate_bpm)
    base = _base_dataset(patient_id, p, seed_key, heart_rate_bpm)
    base.Rows, base.Columns = rows, cols
    base.PixelSpacing = [round(dy, 6), round(dx, 6)]
    base.SliceThickness = round(min(dz, 8.0), 3)
    base.SpacingBetweenSlices = round(dz, 3)
    base.ImageOrientationPatient = [round(float(v), 8) for v in np.concatenate([row, col])]
    instance = 0
    for k in range(n_z):
        ipp = origin + k * dz * normal
        for t in range(n_t):
            instance += 1
            ds = base.copy()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = _uid(seed_key, patient_id, k, t)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.InstanceNumber = instance
            ds.AcquisitionNumber = k + 1
            ds.ImagePositionPatient = [round(float(v), 6) for v in ipp]
            ds.SliceLocation = round(float(ipp @ normal), 6)
            ds.TriggerTime = round(float(times[t]), 3)
            ds.PixelData = p.cine_images[t, k].astype(np.uint16).tobytes()
            ds.save_as(str(folder / f"IM{instance:05d}.dcm"), enforce_file_format=True)
    return times
