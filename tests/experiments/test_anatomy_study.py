"""The "Anatomy" model in the study: measures written from the study's masks, one result per split trained
on that split's training patients only, Table 4 with its row and intervals, robustness, the report section;
the image tables do not move; a switch turns it off."""

from __future__ import annotations

from collections import Counter
import csv
import json

import numpy as np
import pytest

import cmrprior.experiments.anatomy_stage as stage
from cmrprior.anatomy.measure import measure_cohort
from cmrprior.anatomy.measures_csv import read_measures_csv
from cmrprior.data.phantom import generate_phantom
from cmrprior.experiments.cohort_data import prepare_data
from cmrprior.experiments.study import run_study
from cmrprior.io.cohort import open_cohort
from cmrprior.io.load import load_patient
from cmrprior.report import build_report
from cmrprior.runs import RunFolder

from .study_doubles import RecordingPretrain, install_cohort, tiny_cohort, tiny_config


@pytest.fixture
def fake_pretrain(monkeypatch):
    rec = RecordingPretrain()
    rec.install(monkeypatch)
    return rec


def test_study_writes_measures_anatomy_results_table4_and_report(tmp_path, monkeypatch, fake_pretrain):
    install_cohort(monkeypatch, {"COHORT": tiny_cohort(n_patients=18)})
    fits = []
    real_fit = stage.fit_anatomy
    monkeypatch.setattr(stage, "fit_anatomy", lambda values, y, **kw: fits.append((kw["train_ids"], values))
                        or real_fit(values, y, **kw))
    cfg = tiny_config(classifier={"inits": ["none"], "images": ["segmented"]})
    run_study("COHORT", tmp_path / "run", cfg, report=False)
    run = RunFolder(tmp_path / "run")
    plain, perturbed = (read_measures_csv(p) for p in run.anatomy_measures_csvs())
    assert len(plain) == 18 and {r.perturbation for r in perturbed} == {"dilate"}
    by_id = {r.patient_id: r for r in plain}
    assert all(r.values["lv_edv_ml"] > by_id[r.patient_id].values["lv_edv_ml"] for r in perturbed)
    results = run.anatomy_results()
    assert [r.key.split for r in results] == ["0", "1"] and all(r.ok for r in results)
    for split, r, (train_ids, values) in zip(run.splits(), results, fits):
        assert tuple(train_ids) == split.train and not set(train_ids) & set(split.test)
        assert values == [by_id[p].values for p in split.train]  # training measures only
        assert r.test.patient_ids == list(split.test) and r.seen_patient_ids["train"] == list(split.train)
    table = json.loads((run.tables / "table4.json").read_text())
    row = table["rows"][0]
    assert row["model"] == "Anatomy" and row["t_low"] <= row["macro_auc"] <= row["t_high"]
    assert row["macro_auc"] == pytest.approx(np.mean([r.test.metrics.macro_auc for r in results]))
    assert table["rows"][1]["model"] == "Hybrid: tiny None, segmented images + measures"
    assert table["rows"][2]["model"].startswith("Best image model")
    assert [(c["a_label"], c["b_label"]) for c in table["comparisons"]] == [
        ("Anatomy", "Best image model by inner CV, segmented images"), (table["rows"][1]["model"], "Anatomy"),
        (table["rows"][1]["model"], "tiny None, segmented images")]
    hybrids = run.hybrid_results()
    cells = {r.key.split: r for r in run.cells()}
    assert [h.key.split for h in hybrids] == ["0", "1"] and all(h.ok for h in hybrids)
    for h, a in zip(hybrids, results):
        img = cells[h.key.split]
        assert h.key.images == "segmented+measures" and h.test.patient_ids == img.test.patient_ids
        assert sorted(h.seen_patient_ids["hybrid"]) == sorted(img.train_oof.patient_ids)
        assert not set(h.seen_patient_ids["hybrid"]) & set(h.test.patient_ids)
        if h.mode.startswith("late fusion"):  # reference: the weighted mean of the two models' test probabilities
            w = float(h.mode.split("image weight ")[1].rstrip(")"))
            pos = {p: i for i, p in enumerate(a.test.patient_ids)}
            anat = np.array([a.test.probabilities[pos[p]] for p in img.test.patient_ids])
            np.testing.assert_allclose(h.test.probabilities, w * np.array(img.test.probabilities) + (1 - w) * anat,
                                       atol=1e-9)
    assert "oracle masks" in " ".join(table["notes"])  # tiny_config is the oracle setting
    chosen = Counter(h.hyperparameters["fusion"] for h in hybrids)
    assert "Chosen (splits): " + "; ".join(f"{c} ({n})" for c, n in sorted(chosen.items(), key=lambda kv: (-kv[1], kv[0]))) \
        in " ".join(table["notes"])
    with open(run.tables / "anatomy_robustness.csv") as f:
        rob = list(csv.DictReader(f))
    assert {(r["split"], r["perturbation"]) for r in rob} >= {("0", "dilate"), ("mean", "none"), ("mean", "dilate")}
    page = build_report(run.root).read_text()
    assert "Table 4: anatomy model" in page and "Feature importance of the anatomy model" in page
    assert "Macro AUC against perturbation size" in page and "Anatomy model (cardiac measures, tabular" in page


@pytest.mark.slow  # the golden tables (test_refactor_equivalence) pin the image rows in the default suite
def test_switching_anatomy_off_leaves_the_image_tables_unchanged(tmp_path, monkeypatch, fake_pretrain):
    install_cohort(monkeypatch, {"COHORT": tiny_cohort(n_patients=18)})
    cfg = dict(classifier={"inits": ["none"], "images": ["full"]}, protocol={"n_splits": 1})
    run_study("COHORT", tmp_path / "on", tiny_config(**cfg), report=False)
    run_study("COHORT", tmp_path / "off", tiny_config(**cfg, anatomy={"enabled": False}), report=False)
    for name in ("table1.json", "metrics.json", "comparisons.json"):
        assert (tmp_path / "on" / "tables" / name).read_bytes() == (tmp_path / "off" / "tables" / name).read_bytes()
    assert (tmp_path / "on" / "tables" / "table4.md").exists()
    assert not (tmp_path / "off" / "tables" / "table4.md").exists()
    assert not RunFolder(tmp_path / "off").anatomy_measures_csvs()[0].exists()


def test_oracle_measures_are_those_of_the_expert_masks(tmp_path):
    from cmrprior.data.phantom.config import PhantomConfig

    small = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
    data = generate_phantom(tmp_path / "ph", n_patients=4, seed=1, classes=("NOR", "DCM"), config=small)
    cfg = tiny_config(prepare={"size": 48, "pixel_spacing_mm": 3.0}, anatomy={"perturb": [1]})
    to = (tmp_path / "m.csv", tmp_path / "p.csv")
    prepared, origin = prepare_data(data, cfg, cache_dir=tmp_path / "c", measures_to=to)
    assert origin.masks.note.startswith("oracle masks")
    written = {r.patient_id: r.values for r in read_measures_csv(to[0])}
    reference = measure_cohort(load_patient(r) for r in open_cohort(data).patients)
    assert set(written) == set(prepared.patient_ids) == {r["patient_id"] for r in reference}
    for ref in reference:
        for k, v in written[ref["patient_id"]].items():
            assert v == pytest.approx(ref[k], nan_ok=True) if v is not None else ref[k] is None or np.isnan(ref[k])
    assert len(read_measures_csv(to[1])) == 4 * 4  # four perturbations of size 1 per patient


def test_measuring_in_worker_processes_gives_the_same_rows(tmp_path):
    from cmrprior.data.phantom.config import PhantomConfig
    from cmrprior.experiments.anatomy_data import expert_masks, measure_cohort_masks

    small = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
    data = generate_phantom(tmp_path / "ph", n_patients=8, seed=3, classes=("NOR", "DCM"), config=small)
    cohort = open_cohort(data)
    ids = [r.patient_id for r in cohort.patients]
    serial = measure_cohort_masks(cohort, ids, expert_masks, (1,), workers=1)
    parallel = measure_cohort_masks(cohort, ids, expert_masks, (1,), workers=2)
    assert serial == parallel and len(serial[0]) == 8 and len(serial[1]) == 8 * 4
