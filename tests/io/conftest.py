"""Helpers for the io tests: a tiny DICOM series writer (pydicom), exposed as fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROW = np.array([np.cos(0.3), np.sin(0.3), 0.0])
COL = np.array([-np.sin(0.3) * np.cos(0.5), np.cos(0.3) * np.cos(0.5), np.sin(0.5)])
NORMAL = np.cross(ROW, COL)


def _slice(path: Path, pixels: np.ndarray, ipp, *, iop=None, spacing=(1.25, 1.5), series_uid="1.2.3",
           slope=2.0, intercept=-10.0) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ImageOrientationPatient = [float(v) for v in (np.concatenate([ROW, COL]) if iop is None else iop)]
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = 8.0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.int16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _series(folder: Path, n: int = 4, dz: float = 8.0, shape=(6, 5), origin=(10.0, -20.0, 30.0)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 1000, size=(n,) + shape).astype(np.int16)
    origin = np.array(origin)
    order = [int(k) for k in np.random.default_rng(1).permutation(n)]
    for name_idx, k in enumerate(order):  # file names do not follow slice order
        _slice(folder / f"IM{name_idx:04d}.dcm", stack[k], origin + k * dz * NORMAL)
    return stack, origin


@pytest.fixture
def dicom_slice():
    """Write one DICOM slice: dicom_slice(path, pixels (H, W), ipp, *, iop, spacing, series_uid, ...)."""
    return _slice


@pytest.fixture
def dicom_series():
    """Write a shuffled series: dicom_series(folder, n=4, dz=8.0) -> (stored int16 stack (n, H, W), origin)."""
    return _series


@pytest.fixture
def dicom_geometry():
    """(row cosine, column cosine, normal) used by the writers."""
    return ROW, COL, NORMAL
