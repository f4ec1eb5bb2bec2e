"""DICOM folders as exported from scanners and archives: stray files beside the images, a cine whose
description holds "loc", a damaged header, compressed pixel data without a decoder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1

from cmrprior.errors import DataError
from cmrprior.io.dicom import read_dicom_series
from cmrprior.io.dicom_cine import read_dicom_cine

N_Z, N_T, SHAPE, DZ = 2, 3, (6, 5), 8.0


def _cine(folder: Path, dicom_slice, normal, description: str = "cine_retro_SA") -> np.ndarray:
    """Every (slice, phase) as one file IM_<slice>_<phase>.dcm; returns stored (T, Z, H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    stack = np.random.default_rng(3).integers(1, 1000, size=(N_T, N_Z) + SHAPE).astype(np.int16)
    for k in range(N_Z):
        for t in range(N_T):
            path = folder / f"IM_{k}_{t}.dcm"
            dicom_slice(path, stack[t, k], np.array([10.0, -20.0, 30.0]) + k * DZ * normal, slope=1.0, intercept=0.0)
            ds = pydicom.dcmread(str(path))
            ds.TriggerTime, ds.InstanceNumber, ds.StudyInstanceUID = 40.0 * t, k * N_T + t + 1, "9.9"
            ds.SeriesDescription = description
            ds.save_as(str(path))
    return stack


def _stray_files(folder: Path) -> None:
    (folder / "README.txt").write_text("Exported by PACS viewer 3.1\n")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))  # an OLE file


def test_readme_and_thumbs_db_beside_a_series_are_ignored_and_logged(tmp_path, dicom_series, caplog):
    stack, _ = dicom_series(tmp_path / "ser")
    _stray_files(tmp_path / "ser")
    with caplog.at_level(logging.INFO, logger="cmrprior.io.dicom"):
        vol = read_dicom_series(tmp_path / "ser")
    assert vol.shape == (4, 6, 5)
    assert "README.txt" in caplog.text and "Thumbs.db" in caplog.text and "not DICOM" in caplog.text


def test_readme_and_thumbs_db_beside_a_cine_are_ignored_and_listed(tmp_path, dicom_slice, dicom_geometry):
    stack = _cine(tmp_path / "c", dicom_slice, dicom_geometry[2])
    _stray_files(tmp_path / "c")
    cine = read_dicom_cine(tmp_path / "c")
    assert cine.n_frames == N_T
    np.testing.assert_array_equal(cine.frames[2].array, stack[2].astype(np.float32))
    assert sorted((p.name, r) for p, r in cine.skipped) == [("README.txt", "not a DICOM file"),
                                                            ("Thumbs.db", "not a DICOM file")]
    (tmp_path / "only").mkdir()
    _stray_files(tmp_path / "only")
    with pytest.raises(DataError, match="no DICOM files.*not DICOM: README.txt"):
        read_dicom_cine(tmp_path / "only")


def test_localiser_descriptions_match_whole_words(tmp_path, dicom_slice, dicom_geometry):
    for n, description in enumerate(("SA cine block", "sa_cine_clock")):  # "loc" inside a word
        cine = read_dicom_cine(_folder_cine(tmp_path / f"kept{n}", dicom_slice, dicom_geometry, description))
        assert cine.n_frames == N_T and cine.skipped == ()
    for n, description in enumerate(("Localizer", "LOC_3-plane", "tri-pilot", "AAHead_Scout")):
        with pytest.raises(DataError, match="no cine images left .* localiser/scout series"):
            read_dicom_cine(_folder_cine(tmp_path / f"loc{n}", dicom_slice, dicom_geometry, description))


def _folder_cine(folder: Path, dicom_slice, dicom_geometry, description: str) -> Path:
    _cine(folder, dicom_slice, dicom_geometry[2], description=description)
    return folder


def test_cine_file_with_a_damaged_header_is_named(tmp_path, dicom_slice, dicom_geometry):
    _cine(tmp_path / "c", dicom_slice, dicom_geometry[2])
    bad = tmp_path / "c" / "IM_1_2.dcm"
    bad.write_bytes(bad.read_bytes()[:300])  # pydicom reads the meta header and stops: no pixel data
    with pytest.raises(DataError, match="damaged or truncated DICOM file") as info:
        read_dicom_cine(tmp_path / "c")
    assert info.value.path == bad


def test_series_file_cut_inside_its_last_element_is_named(tmp_path, dicom_series):
    dicom_series(tmp_path / "ser")
    bad = tmp_path / "ser" / "IM0001.dcm"
    raw = bad.read_bytes()
    bad.write_bytes(raw[:raw.rfind(b"\xe0\x7f\x10\x00") + 10])  # inside the length of the Pixel Data element
    with pytest.raises(DataError, match="corrupt DICOM file") as info:
        read_dicom_series(tmp_path / "ser")
    assert info.value.path == bad


def _compressed(path: Path, syntax) -> Path:
    ds = pydicom.dcmread(str(path))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not a real JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, JPEGLosslessSV1])
def test_compressed_pixel_data_that_cannot_be_decoded_names_the_extra(tmp_path, dicom_series, syntax):
    from pydicom.pixels import get_decoder

    dicom_series(tmp_path / "ser")
    bad = _compressed(tmp_path / "ser" / "IM0002.dcm", syntax)
    assert pydicom.dcmread(str(bad)).file_meta.TransferSyntaxUID == syntax
    with pytest.raises(DataError, match=r"cannot decode compressed pixel data \(JPEG") as info:
        read_dicom_series(tmp_path / "ser")
    assert info.value.path == bad and "cmrprior[dicom-compressed]" in str(info.value)
    if not get_decoder(syntax).is_available:  # JPEG lossless: no decoder without the extra
        assert "no decoder for it is installed: pip install 'cmrprior[dicom-compressed]'" in str(info.value)
