"""Info.cfg as editors and other sites leave it: a UTF-8 byte-order mark (Windows Notepad), a height in metres."""

from __future__ import annotations

import numpy as np
import pytest

from cmrprior.errors import DataError
from cmrprior.io.acdc import parse_info_cfg, read_acdc, write_acdc_patient


def _patient(root, pid="patient001", height_cm=172.0, weight_kg=70.0):
    rng = np.random.default_rng(0)
    ed, es = ((rng.random((3, 8, 7)) * 500).astype(np.int16) for _ in range(2))
    return write_acdc_patient(root, pid, ed=ed, es=es, ed_frame=1, es_frame=5, spacing_zyx=(10.0, 1.5, 1.5),
                              group="NOR", n_frames=10, height_cm=height_cm, weight_kg=weight_kg)


def test_info_cfg_with_utf8_bom_is_read(tmp_path):
    folder = _patient(tmp_path)
    cfg = folder / "Info.cfg"
    cfg.write_bytes(b"\xef\xbb\xbf" + cfg.read_bytes())
    assert parse_info_cfg(cfg)["ED"] == "1"
    rec = read_acdc(tmp_path).patients[0]
    assert (rec.ed_frame, rec.es_frame, rec.label, rec.height_cm) == (1, 5, "NOR", 172.0)


@pytest.mark.parametrize("height, weight, problem", [
    (1.72, 70.0, r"height 1.72 cm is outside the plausible 50-250 cm; height must be in centimetres \(a height in "
                 r"metres\? 1.72 m is 172 cm\)"),
    (172.0, 70000.0, "weight 70000 kg is outside the plausible 2-400 kg; weight must be in kilograms"),
])
def test_implausible_height_or_weight_in_info_cfg_names_patient_and_unit(tmp_path, height, weight, problem):
    folder = _patient(tmp_path, height_cm=height, weight_kg=weight)
    with pytest.raises(DataError, match="patient patient001: " + problem) as info:
        read_acdc(tmp_path)
    assert info.value.path == folder / "Info.cfg"
    _patient(tmp_path, pid="patient002")
    cohort = read_acdc(tmp_path, skip_bad=True)
    assert [r.patient_id for r in cohort.patients] == ["patient002"]
    assert cohort.skipped[0][0] == "patient001"


def test_plausible_range_limits_are_accepted(tmp_path):
    from cmrprior.io.checks import PLAUSIBLE_HEIGHT_CM, PLAUSIBLE_WEIGHT_KG

    assert (PLAUSIBLE_HEIGHT_CM, PLAUSIBLE_WEIGHT_KG) == ((50.0, 250.0), (2.0, 400.0))
    _patient(tmp_path, height_cm=50.0, weight_kg=400.0)
    rec = read_acdc(tmp_path).patients[0]
    assert (rec.height_cm, rec.weight_kg) == (50.0, 400.0)
    with pytest.raises(DataError, match="height 49.9 cm"):
        _patient(tmp_path, height_cm=49.9, weight_kg=400.0)
        read_acdc(tmp_path)
