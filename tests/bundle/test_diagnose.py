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
from cmrprior.runs import HOLDOUT, CellKey, RunFolder

from experiments.cohort_copies import acdc_copy
from experiments.study_doubles import tiny_config

IMAGE, HYBRID = "tiny-none-segmented", "tiny-none-segmented+measures"  # an image cell of the study, its hybrid
FULL = "tiny-none-full"  # the cell on full images (the whole field of view, not the heart crop)
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
    cfg = tiny_config(primary="anatomy", masks={"source": "segmenter"}, classifier={"inits": ["none"], "images": ["full", "segmented"]},
                      protocol={"n_splits": 1, "test_fraction": 0.34, "cv_folds": 2, "val_fraction": 0.34},
                      anatomy={"workers": 1, "perturb": [], "hybrid": True})
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
    run = RunFolder(root / "run")
    others = {}  # the image cell's and the hybrid's bundles applied to the same cohort
    for name, pages in ((IMAGE, True), (HYBRID, False), (FULL, False)):
        table = load_bundle(run.bundle_dir(name)).diagnose(new, root / f"diag_{name}", pages=pages)
        others[name] = {d.patient_id: d for d in table.patients}
    return {"root": root, "run": run, "hold": hold, "new": new, "out": out, "rows": rows, "others": others}


def _refused_for_range(row: dict) -> bool:
    """Refused only because a measure lies far outside the training range: with 8 training patients the ranges
    of the 16 segments' thickening are narrow, and a phantom patient may fall outside one of them."""
    reason = row["reason"]
    return (row["status"] == "refused" and "far outside the training range" in reason
            and "segmentation failed" not in reason and "acquisition outside" not in reason)


def test_bundle_reproduces_the_held_out_table(study):
    held = study["run"].anatomy_results(holdout=True)[0]
    rows = study["rows"]
    judged = [p for p in held.test.patient_ids if rows[p]["status"] == "ok"]
    assert judged and all(p in judged or _refused_for_range(rows[p]) for p in held.test.patient_ids), rows
    # a patient refused for its range has no probabilities in diagnoses.csv: the bundle's own model applied to
    # the measures that diagnose wrote for it must still give the held-out table's
    bundle = load_bundle(study["run"].bundle_dir("anatomy"))
    measured = {r.patient_id: r.values for r in read_measures_csv(study["out"] / "measures.csv")}
    for pid, probs in zip(held.test.patient_ids, held.test.probabilities):
        if pid in judged:
            got = [float(rows[pid][f"prob_{c}"]) for c in held.classes]
            assert rows[pid]["predicted_label"] == held.classes[int(np.argmax(probs))]
        else:
            p = bundle.predict_proba([measured[pid]])[0]
            got = [float(p[bundle.classes.index(c)]) for c in held.classes]
        np.testing.assert_allclose(got, probs, atol=1e-6)


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
    others = [r for pid, r in study["rows"].items() if pid != "noise001"]
    assert any(r["status"] == "ok" for r in others)
    assert all(r["status"] == "ok" or _refused_for_range(r) for r in others), others


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
    assert meta["models"] == {"anatomy": "models/anatomy", **{n: f"models/{n}" for n in (IMAGE, HYBRID, FULL,
                                                                                      f"{FULL}+measures")}}
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


@pytest.mark.parametrize("name", [IMAGE, HYBRID, FULL])
def test_image_and_hybrid_bundles_reproduce_the_held_out_table(study, name):
    """The --test image cell and its hybrid, exported and applied by `diagnose` to the --test cohort (images only,
    prepared again from the raw files), give the held-out table's probabilities."""
    run = study["run"]
    held = run.read_cell(CellKey(HOLDOUT, *name.split("-")))
    diagnosed = study["others"][name]
    judged = [p for p in held.test.patient_ids if diagnosed[p].status == "ok"]
    # an image model is not refused on measures; a hybrid, like the anatomy bundle, may refuse a patient whose
    # measures lie far outside its 8 training patients' ranges, and for that reason only
    assert len(judged) >= (2 if name == HYBRID else 3), {p: d.reason for p, d in diagnosed.items()}
    for pid in set(held.test.patient_ids) - set(judged) - {"noise001"}:
        assert name == HYBRID and "far outside the training range" in diagnosed[pid].reason, diagnosed[pid].reason
    for pid, probs in zip(held.test.patient_ids, held.test.probabilities):
        if pid in judged:
            got = [diagnosed[pid].probabilities[c] for c in held.classes]
            np.testing.assert_allclose(got, probs, atol=1e-6, rtol=0)
    assert diagnosed["noise001"].status == "refused"
    bundle = load_bundle(run.bundle_dir(name))
    assert bundle.kind == ("hybrid" if name == HYBRID else "image")
    assert bundle.spec["image"]["preparation"]["input_size"] == 32
    assert bundle.image.preparation.spec.mode == ("full" if name == FULL else "mask")
    assert "Not for clinical decisions" in bundle.card and "image model reads pixel intensities" in bundle.card
    if name == HYBRID:  # the fusion the study chose, fitted again at export, of the two models' own probabilities
        assert bundle.spec["fusion"]["choice"] == held.mode and bundle.features
        tables = {"image model": run.read_cell(CellKey(HOLDOUT, *IMAGE.split("-"))),
                  "anatomy model": run.anatomy_results(holdout=True)[0]}
        for part, result in tables.items():
            for pid, probs in zip(result.test.patient_ids, result.test.probabilities):
                if pid in judged:
                    got = [diagnosed[pid].parts[part][c] for c in held.classes]
                    np.testing.assert_allclose(got, probs, atol=1e-6, rtol=0)
        for pid in judged:
            parts = [np.array([diagnosed[pid].parts[k][c] for c in held.classes])[None] for k in tables]
            fused = bundle.fusion.predict_proba(*parts, bundle.matrix([diagnosed[pid].measures]))[0]
            np.testing.assert_allclose([diagnosed[pid].probabilities[c] for c in held.classes], fused, atol=1e-12)


def test_image_bundle_page_shows_saliency(study):
    page = (study["root"] / f"diag_{IMAGE}" / "pages" / "holdout001.html").read_text()
    assert "Where the image model looked" in page and page.count("data:image/") >= 2  # masks and saliency
    d = study["others"][IMAGE]["holdout001"]
    assert d.saliency is not None and (d.saliency_in_heart is None or 0.0 <= d.saliency_in_heart <= 1.0)
    assert d.drivers == ()  # an image model has no measures that pushed its call


def test_recommended_bundle_can_be_an_image_cell(study, tmp_path):
    """With `primary:` an image cell, the export names that cell's bundle as recommended."""
    from cmrprior.experiments.export_stage import _recommend

    cfg = tiny_config(primary="tiny/none/segmented", masks={"source": "segmenter"},
                      classifier={"inits": ["none"], "images": ["segmented"]})
    run = RunFolder(tmp_path / "run")
    _recommend(run, {IMAGE: run.bundle_dir(IMAGE)}, cfg)
    rec = json.loads(run.recommended_json.read_text())
    assert rec["recommended"] == IMAGE and rec["bundle"] == f"models/{IMAGE}"


def test_a_patient_with_a_missing_or_unreadable_file_is_refused_alone(study, tmp_path):
    """One patient without its ES file, one whose ED file is not an image: each gets a refused row whose reason
    names its file; the cohort still opens and the others are diagnosed as before."""
    data = tmp_path / "data"
    shutil.copytree(study["hold"], data, symlinks=True)
    missing = sorted((data / "holdout001").glob("*frame*.nii.gz"))[1]
    missing.unlink()
    broken = sorted((data / "holdout002").glob("*frame*.nii.gz"))[0]
    broken.unlink()
    broken.write_bytes(b"not an image")
    table = load_bundle(study["run"].bundle_dir("anatomy")).diagnose(data, tmp_path / "out", pages=False)
    got = {d.patient_id: d for d in table.patients}
    assert set(got) == {"holdout001", "holdout002", "holdout003", "holdout004"}
    for pid, path in (("holdout001", missing), ("holdout002", broken)):
        assert got[pid].status == "refused" and not got[pid].probabilities
        assert path.name in got[pid].reason, got[pid].reason
    for pid in ("holdout003", "holdout004"):
        assert got[pid].status == study["rows"][pid]["status"]
        if got[pid].status == "ok":
            assert got[pid].probabilities["NOR"] == pytest.approx(float(study["rows"][pid]["prob_NOR"]), abs=1e-6)
    with open(tmp_path / "out" / "diagnoses.csv", newline="") as f:
        rows = {r["patient_id"]: r for r in csv.DictReader(f)}
    assert rows["holdout001"]["status"] == "refused" and missing.name in rows["holdout001"]["reason"]


def test_cines_reuse_the_loaded_segmenter(study, tmp_path, monkeypatch):
    """Two DICOM cines: the ED/ES search of both and the masks of both run on one loaded segmenter."""
    import cmrprior.segmentation.phases as phases
    import cmrprior.segmentation.volumes as volumes

    loads = []
    real = volumes.load_for_inference

    def counting(path, *args, **kwargs):
        loads.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(volumes, "load_for_inference", counting)
    monkeypatch.setattr(phases, "load_for_inference", counting)
    data = generate_phantom(tmp_path / "dicom", n_patients=2, seed=8, classes=("DCM", "NOR"), config=PHANTOM,
                            output_format="dicom")
    table = load_bundle(study["run"].bundle_dir("anatomy")).diagnose(data / "manifest.csv", None, pages=False)
    assert all(d.ed_frame is not None and d.es_frame is not None for d in table.patients)
    assert len(loads) == 1, loads
