"""bench/acdc_split.py: the blind study and held-out folders, on an ACDC-layout folder written by the test (classes
in Info.cfg that do not follow the patient numbers, expert masks present in the input)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "acdc_split.py"


def _bench():
    spec = importlib.util.spec_from_file_location("acdc_split", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["acdc_split"] = module
    spec.loader.exec_module(module)
    return module


def _acdc(root: Path, groups: list[str]) -> Path:
    for i, group in enumerate(groups, start=1):
        d = root / f"patient{i:03d}"
        d.mkdir(parents=True)
        (d / "Info.cfg").write_text(f"ED: 1\nES: 9\nGroup: {group}\nNbFrame: 20\n")
        for name in ("frame01", "frame01_gt", "frame09", "frame09_gt"):
            (d / f"patient{i:03d}_{name}.nii.gz").write_bytes(b"not read")
        (d / "MANDATORY_CITATION.md").write_text("cite\n")
    return root


def test_last_patients_of_each_class_held_out_without_masks(tmp_path):
    # classes interleaved, so that a split by patient number would be wrong
    groups = ["NOR", "DCM", "NOR", "DCM", "NOR", "DCM", "NOR", "DCM"]
    data = _acdc(tmp_path / "acdc", groups)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    cohorts = _bench().split(data, tmp_path / "out", per_class=2)
    assert cohorts == {"study": {"DCM": ["patient002", "patient004"], "NOR": ["patient001", "patient003"]},
                       "test": {"DCM": ["patient006", "patient008"], "NOR": ["patient005", "patient007"]}}
    assert sorted(p.name for p in (tmp_path / "out/test").iterdir()) == ["patient005", "patient006", "patient007",
                                                                         "patient008"]
    linked = sorted(p.name for p in (tmp_path / "out/study/patient002").iterdir())
    assert linked == ["Info.cfg", "patient002_frame01.nii.gz", "patient002_frame09.nii.gz"]
    target = (tmp_path / "out/study/patient002/Info.cfg").resolve()
    assert target == (data / "patient002/Info.cfg").resolve()
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # the input is only read


def test_refuses_an_existing_output_and_a_class_too_small(tmp_path):
    bench = _bench()
    data = _acdc(tmp_path / "acdc", ["NOR", "NOR", "NOR", "DCM", "DCM", "DCM"])
    (tmp_path / "out/test").mkdir(parents=True)
    with pytest.raises(Exception, match="exists already"):
        bench.split(data, tmp_path / "out", per_class=1)
    assert not (tmp_path / "out/study").exists()
    with pytest.raises(Exception, match="class DCM has 3 patients"):
        bench.split(data, tmp_path / "out2", per_class=3)
    assert bench.main(["--data", str(data), "--out", str(tmp_path / "out")]) == 1
