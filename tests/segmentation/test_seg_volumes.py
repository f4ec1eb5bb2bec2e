"""Whole-volume prediction in the input geometry, bad input, and `predict_cohort` run folders."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from cmrprior.errors import ConfigError, DataError
from cmrprior.io.nifti import read_nifti, write_nifti
from cmrprior.io.records import Volume
from cmrprior.segmentation.network import build_unet, save_segmenter
from cmrprior.segmentation.qc import dice
from cmrprior.segmentation.cohort_predict import predict_cohort
from cmrprior.segmentation.postprocess import postprocess_labels
from cmrprior.segmentation.volumes import _back_to_input, crop_probabilities, labels_in_input, predict_volume
from seg_doubles import TINY, disc_heart

LEVELS = torch.tensor([0.0, 0.625, 0.25, 1.0])  # BG, RV, MYO, LV after per-slice percentile scaling


class Oracle(nn.Module):
    """A 'network' that reads the label back from the intensity coding of `_volume`."""

    def forward(self, x):
        return -((x - LEVELS.view(1, 4, 1, 1)) ** 2) * 200


def _volume(shape=(4, 96, 88), spacing=(8.0, 1.5, 1.5), centre=(50, 40)):
    lut = np.array([0.1, 0.6, 0.3, 0.9], np.float32)
    masks = np.stack([disc_heart(shape[1] if shape[1] == shape[2] else max(shape[1:]), centre, 12 - z, 4, 20)
                      [: shape[1], : shape[2]] for z in range(shape[0])])
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = [-20.0, 5.0, 3.0]
    return Volume(lut[masks], spacing, affine), masks


def test_oracle_labels_come_back_exactly_at_net_spacing():
    vol, masks = _volume()
    pred = predict_volume(Oracle(), vol, divisor=1)
    assert pred.labels.shape == masks.shape and pred.labels.dtype == np.uint8
    np.testing.assert_array_equal(pred.labels, masks)
    from scipy import ndimage

    expected = ndimage.center_of_mass(masks > 0)[1:]  # heart centroid (LV, MYO and RV)
    assert np.allclose(pred.centre, expected, atol=1.0)  # localisation found the heart


def test_localisation_prefers_the_heart_to_a_larger_false_cavity():
    """A bright organ read as 'LV cavity' that is larger than the true cavity (but smaller than the whole
    heart) must not move the crop window off the heart (seen on ACDC: stomach / liver at the FOV edge)."""
    vol, masks = _volume(shape=(4, 200, 200), centre=(140, 140))
    blob = np.zeros(masks.shape[1:], bool)
    yy, xx = np.mgrid[:200, :200]
    blob[np.hypot(yy - 40, xx - 50) < 16] = True  # area ~800 px > LV cavity (<= 450 px), < heart
    img = vol.array.copy()
    img[:, blob] = 0.9  # LV intensity
    truth = masks.copy()
    assert (blob.sum() > (truth == 3)[0].sum()) and (blob.sum() < (truth > 0)[0].sum())
    pred = predict_volume(Oracle(), Volume(img, vol.spacing, vol.affine), divisor=1, crop=96)
    from scipy import ndimage

    assert np.allclose(pred.centre, ndimage.center_of_mass(masks > 0)[1:], atol=1.5)
    assert dice(pred.labels == 3, truth == 3) > 0.95


def test_other_spacing_keeps_the_input_grid():
    vol, masks = _volume(shape=(3, 110, 100), spacing=(10.0, 1.25, 1.3), centre=(60, 45))
    pred = predict_volume(Oracle(), vol, divisor=1)
    assert pred.labels.shape == masks.shape
    assert dice(pred.labels == 3, masks == 3) > 0.9
    assert dice(pred.labels > 0, masks > 0) > 0.9


def test_back_to_input_inverts_the_resampling_mapping():
    # a linear ramp on the 1.5 mm grid maps to the ramp at the input pixel centres
    h, w = 20, 30
    grid_rows = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    prob = grid_rows[None, None]
    back = _back_to_input(prob, (24, 36), (1.25, 1.25))
    expected = np.clip((np.arange(24) + 0.5) * 1.25 / 1.5 - 0.5, 0, h - 1)
    np.testing.assert_allclose(back[0, 0, :, 0], expected, atol=1e-5)


@pytest.mark.parametrize("spacing", [(1.25, 1.25), (1.5, 1.5), (1.9, 1.1), (0.7, 2.3)])
@pytest.mark.parametrize("centre", [(30.0, 41.0), (3.0, 70.0), (55.5, 2.0)])
def test_labels_in_input_equal_resampling_the_whole_grid(spacing, centre):
    # the reference: every input pixel resampled from the whole grid, then argmax and post-processing
    z, h, w, crop = 3, 60, 75, 32
    in_hw = (int(round(h * 1.5 / spacing[0])), int(round(w * 1.5 / spacing[1])))
    rng = np.random.default_rng(7)
    window = rng.normal(size=(z, crop, crop)).astype(np.float32)

    class Noise(nn.Module):
        def forward(self, x):  # smooth random logits: labels with edges everywhere in the window
            k = torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1)
            return torch.sin(x * 3 + k) * 4 + torch.cos(k * x * 5)

    prob = crop_probabilities(Noise(), window if crop == h else np.pad(window, ((0, 0), (0, h - crop), (0, w - crop))),
                              centre, divisor=1, crop=crop)
    reference = postprocess_labels(_back_to_input(prob, in_hw, spacing).argmax(axis=1).astype(np.uint8))
    assert (reference > 0).any() and (reference == 0).any()
    np.testing.assert_array_equal(labels_in_input(prob, in_hw, spacing), reference)


def test_labels_in_input_without_window_is_background():
    prob = np.zeros((2, 4, 10, 12), np.float32)
    prob[:, 0] = 1.0
    labels = labels_in_input(prob, (14, 16), (1.1, 1.1))
    assert labels.shape == (2, 14, 16) and labels.dtype == np.uint8 and not labels.any()


def test_bad_input():
    vol, _ = _volume()
    with pytest.raises(DataError, match="field of view"):
        predict_volume(Oracle(), Volume(vol.array[:, :20, :20], (8.0, 1.5, 1.5), vol.affine, None))
    with pytest.raises(DataError, match="3D"):
        predict_volume(Oracle(), Volume(vol.array[0], (8.0, 1.5, 1.5), vol.affine, None))
    blank = predict_volume(Oracle(), Volume(np.zeros((2, 64, 64), np.float32), (8.0, 1.5, 1.5), vol.affine))
    assert blank.blank and not blank.labels.any()


def _cohort(tmp_path):
    src = tmp_path / "input"
    vol, masks = _volume(shape=(3, 64, 64), spacing=(8.0, 1.4, 1.4), centre=(32, 36))
    es_vol, es_masks = _volume(shape=(3, 64, 64), spacing=(8.0, 1.4, 1.4), centre=(32, 35))
    write_nifti(vol.array, vol.affine, src / "ed.nii.gz")
    write_nifti(es_vol.array, vol.affine, src / "es.nii.gz")
    write_nifti(masks, vol.affine, src / "ed_gt.nii.gz")
    write_nifti(es_masks, vol.affine, src / "es_gt.nii.gz")
    write_nifti(np.stack([vol.array, es_vol.array, vol.array], axis=-1), vol.affine, src / "cine.nii.gz")
    rows = [["patient_id", "label", "ed_image", "es_image", "ed_mask", "es_mask", "cine"],
            ["p1", "NOR", "ed.nii.gz", "es.nii.gz", "ed_gt.nii.gz", "es_gt.nii.gz", "cine.nii.gz"]]
    with open(src / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    torch.manual_seed(0)
    model = save_segmenter(build_unet(TINY), TINY, tmp_path / "model" / "m.safetensors")
    return src, vol, model


def test_predict_cohort_writes_masks_in_input_geometry(tmp_path):
    src, vol, model = _cohort(tmp_path)
    before = sorted(p.name for p in src.iterdir())
    rows = predict_cohort(src / "manifest.csv", tmp_path / "run", model_path=model, overlays=2)
    assert sorted(p.name for p in src.iterdir()) == before  # nothing written into the input folder
    for phase in ("ED", "ES"):
        out = read_nifti(tmp_path / "run" / "p1" / f"p1_{phase}_seg.nii.gz")
        assert out.shape == vol.shape
        np.testing.assert_allclose(out.affine, vol.affine)
        assert set(np.unique(out.array)) <= {0, 1, 2, 3}
    import nibabel as nib

    cine = nib.load(str(tmp_path / "run" / "p1" / "p1_cine_seg.nii.gz"))
    assert cine.shape == (64, 64, 3, 3)
    np.testing.assert_allclose(cine.affine, vol.affine)
    assert {r["phase"] for r in rows} == {"ED", "ES"} and "dice_LV" in rows[0]
    assert (tmp_path / "run" / "qc.csv").exists() and (tmp_path / "run" / "overlays" / "p1.png").exists()


def test_predict_cohort_refuses_output_inside_input(tmp_path):
    src, _, model = _cohort(tmp_path)
    with pytest.raises(ConfigError, match="inside the input"):
        predict_cohort(src / "manifest.csv", src / "run", model_path=model)


def test_heart_is_the_component_with_the_left_ventricle_not_the_largest_blob():
    """Whole-field false positives are mostly 'RV'-like blobs: a larger one far from the heart must not win."""
    lut = np.array([0.1, 0.6, 0.3, 0.9], np.float32)
    heart = disc_heart(200, (45, 60), 12, 4, 20)
    masks = np.stack([heart] * 4)
    decoy = np.zeros_like(masks)
    decoy[:, 130:190, 130:190] = 1  # 3,600 px of 'RV' per slice, far outside a 128 px window at the heart
    assert (decoy == 1).sum() > (masks > 0).sum()  # the decoy is the largest component
    vol = Volume(lut[np.maximum(masks, decoy)], (8.0, 1.5, 1.5), np.diag([1.5, 1.5, 8.0, 1.0]))
    pred = predict_volume(Oracle(), vol, divisor=1)
    assert abs(pred.centre[0] - 45) < 3 and abs(pred.centre[1] - 55) < 8  # the heart (LV, ring, RV to its left)
    assert dice(pred.labels == 3, masks == 3) > 0.95


def test_predict_cohort_segments_es_around_the_ed_heart_as_the_study_does(tmp_path, monkeypatch):
    # ES's heart lies 90 px from ED's, so ES's labels depend on which centre its window is cut around
    from types import SimpleNamespace

    from cmrprior.io.records import PatientRecord, PatientVolumes
    from cmrprior.segmentation import cohort_predict
    from cmrprior.segmentation.volumes import locate_heart

    src = tmp_path / "input"
    ed, _ = _volume(shape=(3, 200, 200), centre=(50, 50))
    es, es_masks = _volume(shape=(3, 200, 200), centre=(140, 140))
    write_nifti(ed.array, ed.affine, src / "ed.nii.gz")
    write_nifti(es.array, ed.affine, src / "es.nii.gz")
    with open(src / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["patient_id", "label", "ed_image", "es_image"], ["p1", "NOR", "ed.nii.gz", "es.nii.gz"]])
    torch.manual_seed(0)
    weights = save_segmenter(build_unet(TINY), TINY, tmp_path / "model" / "m.safetensors")
    monkeypatch.setattr(cohort_predict, "load_for_inference",
                        lambda path, inference=None: (Oracle(), SimpleNamespace(divisor=1), {}, None))
    predict_cohort(src / "manifest.csv", tmp_path / "run", model_path=weights, overlays=0)
    ed_in, es_in = read_nifti(src / "ed.nii.gz"), read_nifti(src / "es.nii.gz")
    record = PatientRecord("p1", "NOR", src / "ed.nii.gz", src / "es.nii.gz")
    study = locate_heart(Oracle(), PatientVolumes(record, ed_in, es_in), divisor=1)
    written = read_nifti(tmp_path / "run" / "p1" / "p1_ES_seg.nii.gz").array
    np.testing.assert_array_equal(written, study.es_labels)
    alone = predict_volume(Oracle(), es_in, divisor=1).labels  # ES finding its own heart
    assert dice(alone > 0, es_masks > 0) > 0.9 and dice(written > 0, es_masks > 0) < 0.5


def test_a_prediction_folder_records_which_model_made_which_mask_and_refuses_mixing(tmp_path):
    """`segment predict` into a used folder: the same model and inputs resume; another model, a replaced
    input or masks of unknown origin are refused before anything is overwritten."""
    import hashlib
    import json

    src, _, model = _cohort(tmp_path)
    run = tmp_path / "run"
    predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0)
    index = json.loads((run / "masks_index.json").read_text())["patients"]
    assert index["p1"]["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert index["p1"]["files"] == ["p1/p1_ED_seg.nii.gz", "p1/p1_ES_seg.nii.gz", "p1/p1_cine_seg.nii.gz"]
    masks = {p: p.read_bytes() for p in run.glob("p1/*.nii.gz")}

    predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0)  # the same run: resumes
    torch.manual_seed(1)
    other = save_segmenter(build_unet(TINY), TINY, tmp_path / "model" / "other.safetensors")
    with pytest.raises(ConfigError, match=r"run: this folder holds masks made by another model .*p1 \(other model\)"):
        predict_cohort(src / "manifest.csv", run, model_path=other, overlays=0)
    with pytest.raises(ConfigError, match=r"p1 \(other settings\)"):
        predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0, include_cine=False)
    es = src / "es.nii.gz"
    es.write_bytes((src / "ed.nii.gz").read_bytes())  # an input replaced under the same manifest
    with pytest.raises(ConfigError, match=r"p1 \(other inputs\)"):
        predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0)
    assert {p: p.read_bytes() for p in run.glob("p1/*.nii.gz")} == masks  # nothing overwritten

    (run / "masks_index.json").unlink()  # masks from before the index (or copied in by hand)
    with pytest.raises(ConfigError, match=r"p1/ \(masks of unknown origin\)"):
        predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0)


def test_a_run_killed_after_recording_a_patient_resumes(tmp_path, monkeypatch):
    """The entry is written before the masks: a kill in between leaves an entry its rerun accepts."""
    import cmrprior.segmentation.cohort_predict as cp

    src, _, model = _cohort(tmp_path)
    real = cp.write_nifti

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cp, "write_nifti", killed)
    with pytest.raises(KeyboardInterrupt):
        predict_cohort(src / "manifest.csv", tmp_path / "run", model_path=model, overlays=0)
    assert (tmp_path / "run" / "masks_index.json").is_file() and not list((tmp_path / "run").glob("p1/*.nii.gz"))
    monkeypatch.setattr(cp, "write_nifti", real)
    predict_cohort(src / "manifest.csv", tmp_path / "run", model_path=model, overlays=0)
    assert len(list((tmp_path / "run").glob("p1/*.nii.gz"))) == 3


def test_a_folder_with_masks_of_the_older_names_is_taken_over_by_its_rerun(tmp_path):
    """Masks written before they were named `_seg` (`p1_ED.nii.gz`, listed so in the index): the same model and
    inputs rewrite them under the new names, remove the old files, and a further rerun resumes as usual."""
    import json

    src, _, model = _cohort(tmp_path)
    run = tmp_path / "run"
    predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0)
    new = {p.name: p.read_bytes() for p in run.glob("p1/*.nii.gz")}
    index_path = run / "masks_index.json"
    index = json.loads(index_path.read_text())
    for name in sorted(new):  # the folder as an older cmrprior left it
        (run / "p1" / name).rename(run / "p1" / name.replace("_seg.nii.gz", ".nii.gz"))
    index["patients"]["p1"]["files"] = [f.replace("_seg.nii.gz", ".nii.gz") for f in index["patients"]["p1"]["files"]]
    index_path.write_text(json.dumps(index))

    predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0)
    assert {p.name: p.read_bytes() for p in run.glob("p1/*.nii.gz")} == new
    assert sorted(new) == ["p1_ED_seg.nii.gz", "p1_ES_seg.nii.gz", "p1_cine_seg.nii.gz"]
    predict_cohort(src / "manifest.csv", run, model_path=model, overlays=0)  # no "masks of unknown origin"


@pytest.fixture(scope="module")
def phantom_and_model(tmp_path_factory):
    from cmrprior.data.phantom import PhantomConfig, generate_phantom

    root = tmp_path_factory.mktemp("locate")
    cohort = generate_phantom(root / "cohort", n_patients=4, seed=5, classes=("NOR", "DCM"),
                              config=PhantomConfig(image_size=(96, 112), n_slices=(6, 7)))
    return cohort, save_segmenter(build_unet(TINY), TINY, root / "model" / "m.safetensors")


@pytest.fixture()
def workers_for_few_patients(monkeypatch):
    """Worker processes even for the 4 patients of the phantom (a real cohort needs 32 before they pay)."""
    import cmrprior.segmentation.volumes as volumes

    monkeypatch.setattr(volumes, "MIN_PATIENTS_FOR_WORKERS", 2)


@pytest.mark.usefixtures("workers_for_few_patients")
def test_locating_in_two_processes_gives_the_locations_of_one(phantom_and_model):
    from dataclasses import fields

    from cmrprior.io.cohort import open_cohort
    from cmrprior.segmentation.volumes import locate_cohort

    cohort_dir, model = phantom_and_model
    cohort = open_cohort(cohort_dir)
    models = {r.patient_id: model for r in cohort.patients}
    one = locate_cohort(cohort, models=models)
    two = locate_cohort(cohort, models=models, workers=2)
    assert list(two) == list(one) == [r.patient_id for r in cohort.patients]
    for pid in one:
        for f in fields(one[pid]):
            a, b = getattr(one[pid], f.name), getattr(two[pid], f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f"{pid} {f.name}")
            else:
                assert a == b, (pid, f.name)


@pytest.mark.usefixtures("workers_for_few_patients")
def test_a_bad_image_located_in_a_worker_process_names_its_file(phantom_and_model, tmp_path):
    import shutil

    from cmrprior.io.cohort import open_cohort
    from cmrprior.segmentation.volumes import locate_cohort

    cohort_dir, model = phantom_and_model
    copy = shutil.copytree(cohort_dir, tmp_path / "cohort")
    cohort = open_cohort(copy)
    bad = cohort.patients[2].es_image
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        locate_cohort(cohort, models={r.patient_id: model for r in cohort.patients}, workers=2)
    assert err.value.path == bad and str(bad) in str(err.value)
