"""Out-of-sample segmenter choice: patients are recognised by their pixels, never segmented by a model
that saw them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cmrprior.errors import DataError, LeakageError
from cmrprior.io.acdc import read_acdc
from cmrprior.io.fingerprint import patient_fingerprints
from cmrprior.io.nifti import write_nifti
from cmrprior.segmentation.folds import load_segmenter_set, verify, write_segmenter_set


def _patient(root, pid, seed):
    folder = root / pid
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for frame in (1, 5):
        arr = rng.random((4, 20, 24)).astype(np.float32)  # (Z, H, W)
        write_nifti(arr, np.diag([1.5, 1.5, 8.0, 1.0]), folder / f"{pid}_frame{frame:02d}.nii.gz")
    (folder / "Info.cfg").write_text("ED: 1\nES: 5\nGroup: NOR\nHeight: 170\nWeight: 70\nNbFrame: 10\n")


@pytest.fixture()
def trained(tmp_path):
    """A cohort of 4 patients, a 'full' model trained on all, fold models trained on halves."""
    cohort_dir = tmp_path / "cohort"
    for i in range(4):
        _patient(cohort_dir, f"patient{i:03d}", i)
    cv = tmp_path / "cv"
    for k, train in enumerate((["patient000", "patient001"], ["patient002", "patient003"])):
        d = cv / f"fold_{k}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(bytes([k]) * 64)
        (d / "model.json").write_text("{}")
        (d / "test_patients.json").write_text(json.dumps({"train": train, "test": []}))
    full = tmp_path / "weights" / "segmenter.safetensors"
    full.parent.mkdir()
    full.write_bytes(b"full" * 16)
    full.with_suffix(".json").write_text("{}")
    out = tmp_path / "weights" / "folds"
    write_segmenter_set(out, read_acdc(cohort_dir), full_weights=full, cv_dir=cv, copy_full=False)
    return cohort_dir, out


def test_each_patient_gets_a_model_that_never_saw_it(trained, tmp_path):
    cohort_dir, out = trained
    seg = load_segmenter_set(out)
    verify(seg)
    assert seg.full.weights.resolve() == (tmp_path / "weights" / "segmenter.safetensors").resolve()
    for rec in read_acdc(cohort_dir).patients:
        fp = patient_fingerprints(rec)
        choice = seg.choose(rec.patient_id, fp)
        assert choice.model.name != "full" and rec.patient_id not in choice.model.patients
        assert not choice.model.saw(fp) and choice.out_of_sample
    # a new patient goes to the full model
    _patient(tmp_path / "new", "patient099", 99)
    new = read_acdc(tmp_path / "new").patients[0]
    assert seg.choose(new.patient_id, patient_fingerprints(new)).model.name == "full"


def test_a_renamed_copy_is_recognised_by_its_pixels(trained, tmp_path):
    cohort_dir, out = trained
    copy = tmp_path / "renamed" / "case7"
    copy.mkdir(parents=True)
    for f in (cohort_dir / "patient002").iterdir():
        shutil.copyfile(f, copy / f.name.replace("patient002", "case7"))
    rec = read_acdc(tmp_path / "renamed").patients[0]
    choice = load_segmenter_set(out).choose(rec.patient_id, patient_fingerprints(rec))
    assert choice.model.name == "fold_0"  # fold_1 and the full model saw patient002's images


def test_a_patient_every_model_saw_is_refused(trained):
    cohort_dir, out = trained
    index = json.loads((out / "folds.json").read_text())
    for f in index["folds"]:
        f["fingerprints"] = index["full"]["fingerprints"]
    (out / "folds.json").write_text(json.dumps(index))
    rec = read_acdc(cohort_dir).patients[0]
    with pytest.raises(LeakageError, match="every segmenter"):
        load_segmenter_set(out).choose(rec.patient_id, patient_fingerprints(rec))
    lenient = load_segmenter_set(out).choose(rec.patient_id, patient_fingerprints(rec), strict=False)
    assert lenient.model.name == "full" and not lenient.out_of_sample and "IN-SAMPLE" in lenient.reason


def test_changed_weights_and_bad_index_are_clear_errors(trained):
    _, out = trained
    (out / "fold_1.safetensors").write_bytes(b"tampered")
    with pytest.raises(DataError, match="sha256"):
        verify(load_segmenter_set(out))
    (out / "folds.json").write_text("{}")
    with pytest.raises(DataError, match="not a segmenter-set index"):
        load_segmenter_set(out)


def test_a_weights_file_of_an_indexed_set_is_mapped_to_its_training_patients(tmp_path):
    """`masks.model` naming one weights file: where an index lists the file (by sha256), its training patients
    are known, so a patient it saw is in-sample (the out-of-sample check is not skipped)."""
    import json as _json

    from cmrprior.segmentation.folds import SHIPPED_SET, choose_segmenters

    index = _json.loads((SHIPPED_SET / "folds.json").read_text())
    full = (SHIPPED_SET / index["full"]["weights"]).resolve()  # the shipped full model, one folder up
    fold = SHIPPED_SET / index["folds"][2]["weights"]
    seen_by_fold = index["folds"][2]["fingerprints"][0]
    left_out = sorted(set(index["full"]["fingerprints"]) - set(index["folds"][2]["fingerprints"]))[0]
    new = ("0" * 32, "1" * 32)
    got = choose_segmenters({"seen": (seen_by_fold, "x"), "left_out": (left_out, "y"), "new": new}, fold)
    assert (got["seen"].out_of_sample, got["left_out"].out_of_sample, got["new"].out_of_sample) == (False, True, True)
    assert got["seen"].model.name == "fold_2" and got["seen"].model.weights == fold
    assert choose_segmenters({"a": (left_out, "y")}, full)["a"].out_of_sample is False
    copy = tmp_path / "elsewhere.safetensors"  # a copy away from any index: not known
    shutil.copyfile(fold, copy)
    assert choose_segmenters({"seen": (seen_by_fold, "x")}, copy)["seen"].out_of_sample is False  # shipped set knows it
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not a segmenter of any set")
    assert choose_segmenters({"seen": (seen_by_fold, "x")}, other)["seen"].out_of_sample is None


def test_ed_es_search_of_a_cine_uses_a_model_that_never_saw_the_patient(trained, tmp_path, monkeypatch):
    """A cine-only record of patient002 (its ED and ES frames in a 4D NIfTI, under a new id): the set's full model
    and fold_1 were trained on patient002, so its frames are searched with fold_0, recognised by the pixels of
    the cine's frames."""
    import nibabel as nib

    import cmrprior.segmentation.phases as phases
    from cmrprior.io.manifest import read_manifest

    cohort_dir, out = trained
    frames = [nib.load(cohort_dir / "patient002" / f"patient002_frame{f:02d}.nii.gz") for f in (1, 5)]
    cine = tmp_path / "cines" / "case7_4d.nii.gz"
    cine.parent.mkdir()
    nib.save(nib.Nifti1Image(np.stack([np.asanyarray(f.dataobj) for f in frames], axis=-1), frames[0].affine), cine)
    manifest = tmp_path / "cines" / "manifest.csv"
    manifest.write_text(f"patient_id,label,cine\ncase7,NOR,{cine}\n")
    loaded = []

    def segmenter_of(weights, inference=None):  # records which model was loaded; an LV that shrinks over time
        loaded.append(Path(weights).name)

        def segment(frame, index):
            labels = np.zeros(frame.array.shape, np.uint8)
            labels[:, 4:14 - 4 * index, 4:14] = 3
            return labels

        return lambda: segment

    monkeypatch.setattr(phases, "shipped_segmenter", segmenter_of)
    cohort, (det,) = phases.resolve_cohort_phases(read_manifest(manifest), model_path=out)
    assert loaded == ["fold_0.safetensors"]
    assert (det.segmenter, det.segmenter_out_of_sample) == ("fold_0", True)
    assert (cohort.patients[0].ed_frame, cohort.patients[0].es_frame) == (1, 2)
    assert det.as_row()["segmenter"] == "fold_0"
