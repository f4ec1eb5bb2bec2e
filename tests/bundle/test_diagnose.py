"""`cmrprior diagnose` end to end on the user's path: a phantom study exports its Anatomy model, and the bundle,
applied to the study's --test cohort (images only), gives the held-out table's probabilities; a patient the
model cannot judge is refused with its reason while the others are diagnosed; outputs open in other tools."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrprior.anatomy.measures_csv import read_measures_csv
from cmrprior.bundle import load_bundle
from cmrprior.cli import main
from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.experiments.study import run_study
from cmrprior.runs import HOLDOUT, RunFolder

from experiments.cohort_copies import acdc_copy
from experiments.study_doubles import tiny_config

PHANTOM = PhantomConfig(image_size=(128, 144), pixel_spacing_mm=(1.5, 1.8), n_slices=(6, 8))
CLASSES = ("NOR", "DCM", "HCM")


@pytest.fixture(scope="module")
def study(tmp_path_factory, one_torch_thread):
    """A 12-patient phantom study (shipped segmenter, anatomy on, one split) with a 4-patient --test cohort,
    and `cmrprior diagnose` of that cohort plus a patient whose images are noise."""
    root = tmp_path_factory.mktemp("diagnose")
    src = generate_phantom(root / "src", n_patients=12, seed=5, classes=CLASSES, config=PHANTOM)
    hold_src = generate_phantom(root / "hold_src", n_patients=4, seed=6, classes=CLASSES, config=PHANTOM)
    blind, hold = acdc_copy(src, root / "blind"), acdc_copy(hold_src, root / "hold", rename="holdout")
    cfg = tiny_config(primary="anatomy", masks={"source": "segmenter"}, classifier={"inits": ["none"], "images": ["segmented"]},
                      protocol={"n_splits": 1, "test_fraction": 0.34, "cv_folds": 2, "val_fraction": 0.34},
                      anatomy={"workers": 1, "perturb": [], "hybrid": False})
    run_study(blind, root / "run", cfg, test_data=hold, report=False)
    new = root / "new"  # the --test cohort again, plus a patient the segmenter cannot find a heart in
    shutil.copytree(hold, new, symlinks=True)
    noise = new / "noise001"
    noise.mkdir()
    ref = nib.load(str(next((hold / "holdout001").glob("*frame01.nii.gz"))))
    rng = np.random.default_rng(0)
    for frame in ("01", "10"):
        img = nib.Nifti1Image(rng.uniform(0, 100, ref.shape).astype(np.float32), ref.affine, ref.header)
        nib.save(img, str(noise / f"noise001_frame{frame}.nii.gz"))
    (noise / "Info.cfg").write_text("ED: 1\nES: 10\nGroup: NOR\nHeight: 170\nWeight: 70\nNbFrame: 20\n")
    out = root / "diag"
    rc = main(["diagnose", "--model", str(root / "run" / "models" / "anatomy"), "--data", str(new), "--out", str(out),
               "--quiet"])
    assert rc == 0
    with open(out / "diagnoses.csv", newline="") as f:
        rows = {r["patient_id"]: r for r in csv.DictReader(f)}
    return {"root": root, "run": RunFolder(root / "run"), "hold": hold, "new": new, "out": out, "rows": rows}


def test_bundle_reproduces_the_held_out_table(study):
    held = study["run"].anatomy_results(holdout=True)[0]
    rows = study["rows"]
    judged = [p for p in held.test.patient_ids if rows[p]["status"] == "ok"]
    assert len(judged) >= 3, rows  # the comparison must cover most of the cohort
    for pid, probs in zip(held.test.patient_ids, held.test.probabilities):
        if pid in judged:
            got = [float(rows[pid][f"prob_{c}"]) for c in held.classes]
            np.testing.assert_allclose(got, probs, atol=1e-6)
            assert rows[pid]["predicted_label"] == held.classes[int(np.argmax(probs))]


def test_measures_are_the_study_measures(study):
    """The same segmenter and the same path: the diagnose measures equal the study's held-out measures."""
    study_rows = {r.patient_id: r.values for r in read_measures_csv(study["run"].anatomy_measures_csvs(HOLDOUT)[0])}
    diag_rows = {r.patient_id: r.values for r in read_measures_csv(study["out"] / "measures.csv")}
    assert set(study_rows) <= set(diag_rows)
    for pid, values in study_rows.items():
        for k, v in values.items():
            assert diag_rows[pid][k] == pytest.approx(v, rel=1e-12, nan_ok=True) if v is not None else diag_rows[pid][k] is None


def test_a_patient_that_cannot_be_judged_is_refused_with_its_reason(study):
    row = study["rows"]["noise001"]
    assert row["status"] == "refused" and row["predicted_label"] == "" and row["prob_NOR"] == ""
    assert "segmentation failed" in row["reason"] or "cannot be judged" in row["reason"]
    assert sum(r["status"] == "ok" for r in study["rows"].values()) >= 3


def test_outputs_open_in_other_tools(study):
    out, hold = study["out"], study["hold"]
    for pid in ("holdout001", "holdout002"):
        for phase, frame in (("ED", "01"), ("ES", None)):
            mask = nib.load(str(out / "masks" / pid / f"{pid}_{phase}_seg.nii.gz"))
            image_path = sorted((hold / pid).glob("*frame*.nii.gz"))[0 if phase == "ED" else 1]
            image = nib.load(str(image_path))
            assert mask.shape == image.shape
            np.testing.assert_allclose(mask.affine, image.affine)
            np.testing.assert_allclose(mask.header.get_zooms(), image.header.get_zooms())
            assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    run = json.loads((out / "run.json").read_text())
    bundle = load_bundle(study["run"].bundle_dir("anatomy"))
    assert run["bundle"]["sha256"] == bundle.sha256 and run["n_patients"] == 5 and run["n_refused"] >= 1
    assert set(next(iter(study["rows"].values()))) >= {"patient_id", "predicted_label", "status", "reason",
                                                       *(f"prob_{c}" for c in bundle.classes)}


def test_pages_are_self_contained(study):
    out = study["out"]
    index = (out / "index.html").read_text()
    assert "holdout001" in index and 'href="pages/holdout001.html"' in index
    page = (out / "pages" / "holdout001.html").read_text()
    assert "data:image/" in page and "Research use only" in page
    for html in (index, page):
        assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "Not judged" in (out / "pages" / "noise001.html").read_text()


def test_study_names_its_recommended_bundle(study):
    rec = json.loads(study["run"].recommended_json.read_text())
    assert rec["recommended"] == "anatomy" and (study["run"].root / rec["bundle"] / "manifest.json").exists()
    meta = json.loads(study["run"].study_json.read_text())
    assert meta["models"] == {"anatomy": "models/anatomy"}
    assert len(load_bundle(study["run"].bundle_dir("anatomy")).spec["training_fingerprints"]) == 2 * 12  # ED, ES
    assert not any("IN-SAMPLE" in r["reason"] for r in study["rows"].values())  # the --test patients are new


def test_output_inside_the_input_is_refused(study, capsys):
    rc = main(["diagnose", "--model", str(study["run"].bundle_dir("anatomy")), "--data", str(study["new"]),
               "--out", str(study["new"] / "out")])
    assert rc == 2 and not (study["new"] / "out").exists()
    assert "diagnose: error" in capsys.readouterr().err


def test_dicom_cines_are_diagnosed_end_to_end(study, tmp_path):
    """A DICOM cine (ED/ES not given) through `diagnose`: frames found by the bundle's segmenter, recorded."""
    data = generate_phantom(tmp_path / "dicom", n_patients=1, seed=7, classes=("DCM",), config=PHANTOM,
                            output_format="dicom")
    table = load_bundle(study["run"].bundle_dir("anatomy")).diagnose(data / "manifest.csv", tmp_path / "out",
                                                                      pages=False)
    (d,) = table.patients
    assert d.ed_frame is not None and d.es_frame is not None and d.ed_frame != d.es_frame
    with open(tmp_path / "out" / "qc" / "phases.csv", newline="") as f:
        (phase,) = list(csv.DictReader(f))
    assert int(phase["ed_frame"]) == d.ed_frame and int(phase["es_frame"]) == d.es_frame
    assert d.status == "ok", d.reason
    assert d.label == "DCM" and sum(d.probabilities.values()) == pytest.approx(1.0)
    mask = nib.load(str(d.masks[0]))  # DICOM geometry written as the NIfTI affine
    assert mask.header["sform_code"] == 1 and mask.shape[2] >= 6


def test_demo_applies_the_exported_bundle_to_new_patients(study, tmp_path):
    from types import SimpleNamespace

    from cmrprior.experiments.demo import DEMO_NEW_PATIENTS, diagnose_new_patients

    page = diagnose_new_patients(tmp_path, SimpleNamespace(run_dir=study["run"].root), seed=0)
    assert page == tmp_path / "diagnose" / "index.html" and page.exists()
    with open(tmp_path / "diagnose" / "diagnoses.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == DEMO_NEW_PATIENTS
