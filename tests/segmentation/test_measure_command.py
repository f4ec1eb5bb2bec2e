"""`cmrprior measure` on a small phantom cohort: given masks reproduce the phantom's measured truth; segmenter
masks come from the fold model that never saw the patient and are flagged when implausible."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from cmrprior.anatomy.measure import CSV_COLUMNS
from cmrprior.cli import main
from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.errors import DataError
from cmrprior.io.acdc import read_acdc
from cmrprior.segmentation.folds import write_segmenter_set
from cmrprior.segmentation.measures import COLUMNS, given_masks, implausible
from cmrprior.segmentation.network import UNetArgs, build_unet, save_segmenter

SMALL = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
TINY_UNET = UNetArgs(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """4 phantom patients; a set whose full model is indexed as trained on all and whose two (untrained,
    tiny) fold models each left out half."""
    root = tmp_path_factory.mktemp("measure")
    cohort_dir = generate_phantom(root / "cohort", n_patients=4, seed=5, classes=("NOR", "DCM"), config=SMALL)
    cohort = read_acdc(cohort_dir, allowed_labels=("NOR", "DCM"))
    ids = [r.patient_id for r in cohort.patients]
    torch.manual_seed(0)
    full = save_segmenter(build_unet(TINY_UNET), TINY_UNET, root / "w" / "full.safetensors")
    for k, train in enumerate((ids[:2], ids[2:])):
        d = root / "cv" / f"fold_{k}"
        d.mkdir(parents=True)
        torch.manual_seed(k + 1)
        save_segmenter(build_unet(TINY_UNET), TINY_UNET, d / "model.safetensors")
        (d / "test_patients.json").write_text(json.dumps({"train": train, "test": []}))
    write_segmenter_set(root / "set", cohort, full_weights=full, cv_dir=root / "cv")
    return {"cohort": cohort_dir, "set": root / "set", "ids": ids}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_given_masks_reproduce_the_phantom_truth(setup, tmp_path):
    assert main(["measure", "--data", str(setup["cohort"]), "--out", str(tmp_path / "run"), "--masks", "given"]) == 0
    rows = _rows(tmp_path / "run" / "measures.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [r["patient_id"] for r in rows] == setup["ids"]
    for row in rows:
        doc = json.loads((setup["cohort"] / row["patient_id"] / "phantom_truth.json").read_text())
        truth = doc["measured"]
        for field, column in CSV_COLUMNS.items():
            want = truth[field]
            if want is None:
                assert row[column] == ""
            elif math.isnan(want):
                assert math.isnan(float(row[column]))
            else:
                assert float(row[column]) == pytest.approx(want, abs=1e-4), column
        assert row["masks_source"] == "given" and row["segmenter"] == "" and row["out_of_sample"] == ""
        assert row["bsa_note"] == ""  # the phantom gives height and weight
        assert row["empty_structures"] == "" and row["missing_slices"] == ""
        assert [float(row[f"spacing_{a}_mm"]) for a in "zyx"] == pytest.approx(doc["spacing_zyx_mm"], rel=1e-6)


def test_segmenter_masks_come_from_the_fold_model_that_left_the_patient_out(setup, tmp_path):
    assert main(["measure", "--data", str(setup["cohort"]), "--out", str(tmp_path / "run"),
                 "--model", str(setup["set"]), "--threads", "1"]) == 0
    rows = {r["patient_id"]: r for r in _rows(tmp_path / "run" / "measures.csv")}
    ids = setup["ids"]
    for pid in ids[:2]:  # fold_0 trained on the first half
        assert rows[pid]["segmenter"] == "fold_1" and rows[pid]["out_of_sample"] == "True"
    for pid in ids[2:]:
        assert rows[pid]["segmenter"] == "fold_0" and rows[pid]["out_of_sample"] == "True"
    assert {r["masks_source"] for r in rows.values()} == {"segmenter"}
    # untrained networks: their masks must be flagged, never passed as clean
    assert all(r["qc_ok"] == "False" and (r["empty_structures"] or r["implausible"]) for r in rows.values())


def test_refusals(setup, tmp_path, capsys):
    cohort = str(setup["cohort"])
    assert main(["measure", "--data", cohort, "--out", str(setup["cohort"] / "run"), "--masks", "given"]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert main(["measure", "--data", cohort, "--out", str(tmp_path / "a"), "--masks", "given",
                 "--model", str(setup["set"])]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["measure", "--data", cohort, "--out", str(tmp_path / "b"), "--masks", "expert"]) == 2
    assert "--masks" in capsys.readouterr().err
    no_masks = read_acdc(setup["cohort"], allowed_labels=("NOR", "DCM"))
    no_masks = dataclasses.replace(no_masks, patients=tuple(dataclasses.replace(r, es_mask=None)
                                                            for r in no_masks.patients))
    with pytest.raises(DataError, match=setup["ids"][0]):
        given_masks(no_masks)


def test_implausible_values_are_named():
    from cmrprior.anatomy.measure import AnatomyMeasures

    m = AnatomyMeasures(lv_edv_ml=10.0, lv_esv_ml=12.0, lv_sv_ml=-2.0, lvef=-20.0, rv_edv_ml=100.0, rv_esv_ml=50.0,
                        rv_sv_ml=50.0, rvef=50.0, myo_mass_g=100.0, max_wall_thickness_mm=45.0)
    text = implausible(m)
    assert "lvef_percent -20.0 outside 5-90" in text and "lv_edv_ml 10.0 outside 20-600" in text
    assert "max_wall_thickness_mm 45.0 outside 2-40" in text and "lv_esv_ml above lv_edv_ml" in text
    assert "rv" not in text


def test_a_rerun_reuses_the_rows_and_a_killed_run_resumes(setup, tmp_path, monkeypatch):
    from cmrprior.segmentation import measures
    from cmrprior.segmentation.measures import PlausibleRanges, measure_data

    cohort, ids = setup["cohort"], setup["ids"]
    fresh = measure_data(cohort, tmp_path / "fresh", masks="given").read_bytes()
    real, measured = measures.measure_row, []

    def counting(p, ranges=PlausibleRanges()):
        if len(measured) == 3 and kill:
            raise KeyboardInterrupt("killed")
        measured.append(p.record.patient_id)
        return real(p, ranges)

    monkeypatch.setattr(measures, "measure_row", counting)
    monkeypatch.setattr(measures, "RESUME_CHUNK", 2, raising=False)
    kill = True
    with pytest.raises(KeyboardInterrupt):
        measure_data(cohort, tmp_path / "run", masks="given")
    assert not (tmp_path / "run" / "measures.csv").exists()  # the CSV is written whole or not at all
    kill, measured[:] = False, []
    out = measure_data(cohort, tmp_path / "run", masks="given")
    assert measured == ids[3:]  # killed while measuring the fourth patient: the three finished rows were kept
    assert out.read_bytes() == fresh
    measured[:] = []
    assert measure_data(cohort, tmp_path / "run", masks="given").read_bytes() == fresh and measured == []
    # the rows are what the CSV is made of (not recomputed): an edited row shows
    kept = tmp_path / "run" / "measure_rows" / f"{ids[0]}.json"
    doc = json.loads(kept.read_text())
    doc["row"]["bsa_note"] = "kept row"
    kept.write_text(json.dumps(doc))
    assert _rows(measure_data(cohort, tmp_path / "run", masks="given"))[0]["bsa_note"] == "kept row"
    # other inputs: every row measured again
    measure_data(cohort, tmp_path / "run", masks="given", ranges=PlausibleRanges(lvef=(1.0, 99.0)))
    assert measured == ids


def test_a_segmenter_rerun_segments_nothing_again(setup, tmp_path, monkeypatch):
    from cmrprior.segmentation import measures

    args = ["measure", "--data", str(setup["cohort"]), "--out", str(tmp_path / "run"), "--model", str(setup["set"]),
            "--threads", "1"]
    assert main(args) == 0
    first = (tmp_path / "run" / "measures.csv").read_bytes()
    monkeypatch.setattr(measures, "segmenter_masks", lambda *a, **k: pytest.fail("segmented again"))
    assert main(args) == 0
    assert (tmp_path / "run" / "measures.csv").read_bytes() == first
