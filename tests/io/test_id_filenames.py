"""Patient ids that become one file name (`a b` / `a_b`, `müller` / `m_ller`, `P1` / `p1`) are refused by the
readers: their masks and figures would overwrite each other in a run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.acdc import read_acdc
from cmrprior.io.manifest import read_manifest
from cmrprior.io.nifti import write_nifti
from cmrprior.utils.filenames import patient_filename


def _manifest(tmp_path: Path, ids: tuple[str, str]) -> Path:
    rows = []
    for k, pid in enumerate(ids):
        for phase in ("ed", "es"):
            arr = np.random.default_rng(k).uniform(0, 100, (3, 8, 7)).astype(np.float32)
            write_nifti(arr, np.diag([1.4, 1.4, 8.0, 1.0]), tmp_path / f"{k}_{phase}.nii.gz")
        rows.append(f"{pid},NOR,{k}_ed.nii.gz,{k}_es.nii.gz\n")
    path = tmp_path / "m.csv"
    path.write_text("patient_id,label,ed_image,es_image\n" + "".join(rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("ids", [("a b", "a_b"), ("müller", "m_ller"), ("P1", "p1")])
def test_manifest_ids_giving_one_file_name_are_refused(tmp_path, ids):
    assert patient_filename(ids[0]).casefold() == patient_filename(ids[1]).casefold()
    path = _manifest(tmp_path, ids)
    with pytest.raises(DataError, match=f"patient ids {ids[0]!r} and {ids[1]!r} give the same file name") as info:
        read_manifest(path)
    assert info.value.path == path


def test_manifest_ids_with_distinct_file_names_pass(tmp_path):
    cohort = read_manifest(_manifest(tmp_path, ("a b", "a-b")))
    assert [r.patient_id for r in cohort.patients] == ["a b", "a-b"]
    with pytest.raises(DataError, match="'a b' and 'a_b'"):  # and the colliding pair is found among others
        read_manifest(_manifest(tmp_path, ("a b", "a_b")))


def test_acdc_folders_giving_one_file_name_are_refused(tmp_path):
    for k, pid in enumerate(("patient 1", "patient_1")):  # folder names are the ids; write_acdc_patient would
        folder = tmp_path / pid                            # already map the first to the second
        folder.mkdir()
        (folder / "Info.cfg").write_text("ED: 1\nES: 5\nGroup: NOR\nNbFrame: 10\n")
        for frame in (1, 5):
            arr = np.random.default_rng(k + frame).uniform(0, 100, (3, 8, 7)).astype(np.float32)
            write_nifti(arr, np.diag([1.5, 1.5, 10.0, 1.0]), folder / f"{pid}_frame{frame:02d}.nii.gz")
    with pytest.raises(DataError, match="patient ids 'patient 1' and 'patient_1' give the same file name"):
        read_acdc(tmp_path)
