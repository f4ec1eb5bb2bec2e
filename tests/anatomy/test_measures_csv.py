"""Measures CSV: units in the header, unknown values as empty cells, a lossless round trip."""

from __future__ import annotations

import numpy as np

from cmrprior.anatomy.measure import measure_patient
from cmrprior.anatomy.measure import column_name
from cmrprior.anatomy.measures_csv import MeasuresRow, has_current_measures, read_measures_csv, write_measures_csv

SPACING = (8.0, 1.5, 1.5)


def _heart() -> np.ndarray:
    m = np.zeros((3, 20, 20), np.uint8)
    m[:, 5:15, 5:15] = 2
    m[:, 7:13, 7:13] = 3
    m[:, 6:12, 16:19] = 1
    return m


def test_round_trip_with_units_and_unknown_values(tmp_path):
    m = measure_patient(_heart(), _heart(), SPACING, height_cm=170, weight_kg=70).as_dict()
    n = measure_patient(_heart() * 0, _heart(), SPACING).as_dict()  # ED empty: EF is NaN; no BSA
    rows = [MeasuresRow("p1", "NOR", m), MeasuresRow("p2", None, n, "dilate", 2)]
    path = write_measures_csv(rows, tmp_path / "m.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:4] == ["patient_id", "label", "perturbation", "size"]
    assert "lvef_percent" in header and "lv_edv_ml" in header and "max_wall_thickness_mm" in header
    assert column_name("lv_edv_ml_m2") == "lv_edv_ml_m2" and column_name("rvef") == "rvef_percent"
    back = read_measures_csv(path)
    assert back[0] == rows[0]
    assert back[1].label is None and back[1].perturbation == "dilate" and back[1].size == 2
    assert back[1].values["bsa_m2"] is None and back[1].values["lvef"] is None
    assert back[1].values["lv_esv_ml"] == n["lv_esv_ml"]


def test_a_csv_of_other_measures_is_not_current(tmp_path):
    m = measure_patient(_heart(), _heart(), SPACING).as_dict()
    current = write_measures_csv([MeasuresRow("p1", "NOR", m)], tmp_path / "now.csv")
    assert has_current_measures(current)
    older = {k: v for k, v in m.items() if k != "rv_lv_esv_ratio"}  # written before a measure was added
    assert not has_current_measures(write_measures_csv([MeasuresRow("p1", "NOR", older)], tmp_path / "old.csv"))
    extra = {**m, "retired_measure_mm": 1.0}
    assert not has_current_measures(write_measures_csv([MeasuresRow("p1", "NOR", extra)], tmp_path / "extra.csv"))
    assert not has_current_measures(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    assert not has_current_measures(tmp_path / "empty.csv")
