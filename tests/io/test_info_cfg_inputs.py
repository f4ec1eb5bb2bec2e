"""Info.cfg as editors leave it: a UTF-8 byte-order mark (Windows Notepad, Excel exports)."""

from __future__ import annotations

import numpy as np

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
