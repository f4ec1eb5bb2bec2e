"""Manifest rows as spreadsheets and hand edits leave them: extra cells, blank lines, ED = ES."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.manifest import read_manifest
from cmrprior.io.nifti import write_nifti

HEADER = "patient_id,label,ed_image,es_image\n"


def _nii(path: Path, shape=(3, 8, 7)) -> Path:
    arr = np.random.default_rng(0).uniform(0, 100, shape).astype(np.float32)
    write_nifti(arr, np.diag([1.4, 1.4, 8.0, 1.0]), path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for pid in ("a", "b"):
        _nii(tmp_path / f"{pid}_ed.nii.gz")
        _nii(tmp_path / f"{pid}_es.nii.gz")
    return tmp_path


def _csv(folder: Path, text: str) -> Path:
    p = folder / "cohort.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize("row", ["b,NOR,b_ed.nii.gz,b_es.nii.gz,\n",  # trailing comma
                                 "b,NOR,b_ed.nii.gz,b_es.nii.gz,site 1, Paris\n"])  # unquoted comma
def test_row_with_more_cells_than_header_names_file_and_line(images, row):
    p = _csv(images, HEADER + "a,NOR,a_ed.nii.gz,a_es.nii.gz\n" + row)
    with pytest.raises(DataError, match=r"line 3: [56] cells but the header has 4 columns.*quote") as info:
        read_manifest(p)
    assert info.value.path == p


def test_row_with_extra_cells_is_skipped_with_skip_bad_and_a_quoted_comma_is_kept(images):
    p = _csv(images, HEADER + "a,NOR,a_ed.nii.gz,a_es.nii.gz\nb,NOR,b_ed.nii.gz,b_es.nii.gz,\n")
    cohort = read_manifest(p, skip_bad=True)
    assert [r.patient_id for r in cohort.patients] == ["a"]
    assert cohort.skipped[0][0] == "b" and "line 3" in cohort.skipped[0][1]
    p = _csv(images, "patient_id,label,ed_image,es_image,meta_site\n"
                     'a,NOR,a_ed.nii.gz,a_es.nii.gz,"site 1, Paris"\n')
    assert read_manifest(p).patients[0].extra == {"meta_site": "site 1, Paris"}


def test_line_numbers_count_blank_lines(images):
    text = HEADER + "\n" + "a,NOR,a_ed.nii.gz,a_es.nii.gz\n" + "\n\n" + "b,NOR,b_ed.nii.gz,missing.nii.gz\n"
    with pytest.raises(DataError, match=r"line 6 \(patient 'b'\)"):
        read_manifest(_csv(images, text))
    text = HEADER + "\n\na,NOR,a_ed.nii.gz,a_es.nii.gz\n\na,NOR,b_ed.nii.gz,b_es.nii.gz\n"
    with pytest.raises(DataError, match="line 6: duplicate patient id 'a' \\(first on line 4\\)"):
        read_manifest(_csv(images, text))


def test_line_number_after_a_quoted_cell_spanning_lines(images):
    text = ("patient_id,label,ed_image,es_image,meta_note\n"
            'a,NOR,a_ed.nii.gz,a_es.nii.gz,"two\nlines"\n'
            "b,NOR,b_ed.nii.gz,nothere.nii.gz,\n")
    with pytest.raises(DataError, match=r"line 4 \(patient 'b'\)"):
        read_manifest(_csv(images, text))


def test_ed_equal_es_is_refused_like_info_cfg(images):
    with pytest.raises(DataError, match="line 2.*ED and ES are the same image") as info:
        read_manifest(_csv(images, HEADER + "a,NOR,a_ed.nii.gz,a_ed.nii.gz\n"))
    assert info.value.path == images / "cohort.csv"


def test_ed_equal_es_frame_of_one_cine_is_refused(images):
    cine = images / "cine.nii.gz"
    write_nifti(np.random.default_rng(1).uniform(0, 9, (3, 8, 7, 5)).astype(np.float32),
                np.diag([1.4, 1.4, 8.0, 1.0]), cine)
    header = "patient_id,label,cine,ed_frame,es_frame\n"
    with pytest.raises(DataError, match="ED and ES are the same image \\(frame 2 of"):
        read_manifest(_csv(images, header + "a,NOR,cine.nii.gz,2,2\n"))
    rec = read_manifest(_csv(images, header + "a,NOR,cine.nii.gz,1,3\n")).patients[0]
    assert (rec.ed_frame, rec.es_frame) == (1, 3)
    rec = read_manifest(_csv(images, header + "a,NOR,cine.nii.gz,,\n")).patients[0]  # found later
    assert rec.ed_image == rec.es_image == cine and rec.ed_frame is None


@pytest.mark.parametrize("cells, problem", [("1.72,70", r"height 1.72 cm .* centimetres \(a height in metres"),
                                            ("172,0.5", "weight 0.5 kg .* kilograms")])
def test_implausible_height_or_weight_in_manifest(images, cells, problem):
    header = "patient_id,label,ed_image,es_image,height_cm,weight_kg\n"
    p = _csv(images, header + f"a,NOR,a_ed.nii.gz,a_es.nii.gz,{cells}\n")
    with pytest.raises(DataError, match=r"line 2 \(patient 'a'\): " + problem) as info:
        read_manifest(p)
    assert info.value.path == p
    p = _csv(images, header + "a,NOR,a_ed.nii.gz,a_es.nii.gz,172,154\n")  # heavy, not implausible
    assert read_manifest(p).patients[0].weight_kg == 154.0
