"""`cmrprior prepare` on the study's path: the heart found by a segmenter, so a cohort prepared with and without
its `_gt` files gives the same arrays; expert masks only behind `--oracle-masks`, which the outputs name."""

from __future__ import annotations

import json

import pytest
import torch

from cmrprior.cli import main
from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.data.prepare import load_prepared
from cmrprior.segmentation.network import UNetArgs, build_unet, save_segmenter

from .cohort_copies import acdc_copy, array_digests

SMALL = PhantomConfig(image_size=(64, 80), pixel_spacing_mm=(2.6, 3.0), n_slices=(3, 4))
TINY_UNET = UNetArgs(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A phantom with `_gt` files (the generator writes them), its copy without them, a seeded tiny segmenter."""
    root = tmp_path_factory.mktemp("cohorts")
    full = generate_phantom(root / "with_gt", n_patients=6, seed=3, classes=("NOR", "DCM", "HCM"), config=SMALL)
    torch.manual_seed(0)
    model = save_segmenter(build_unet(TINY_UNET), TINY_UNET, root / "seg" / "tiny.safetensors")
    return {"with_gt": full, "blind": acdc_copy(full, root / "blind"), "model": model}


def _prepare(data, out, *extra) -> int:
    return main(["prepare", "--data", str(data), "--out", str(out), "--size", "48", "--spacing", "3.0", *extra])


def test_prepare_gives_the_same_arrays_with_and_without_gt_files(cohorts, tmp_path, capsys):
    assert any(p.name.endswith("_gt.nii.gz") for p in cohorts["with_gt"].rglob("*"))
    for name in ("with_gt", "blind"):
        assert _prepare(cohorts[name], tmp_path / name, "--segmenter", str(cohorts["model"])) == 0
    with_gt, blind = load_prepared(tmp_path / "with_gt"), load_prepared(tmp_path / "blind")
    assert array_digests(with_gt) == array_digests(blind)  # ED/ES slices, positions, crops and masks
    assert with_gt.ed_mask is not None and set(with_gt.masks_models.values()) == set(blind.masks_models.values())
    assert None not in set(with_gt.masks_models.values())  # every patient's masks from the segmenter
    pointer = json.loads((tmp_path / "with_gt" / "prepared.json").read_text())
    assert pointer["masks"]["source"] == "segmenter" and pointer["masks"]["oracle"] is False
    assert "not known" in pointer["masks"]["note"] and pointer["masks"]["out_of_sample"] is None
    assert (tmp_path / "with_gt" / "qc" / "segmenters.csv").is_file()
    assert "heart:      segmenter;" in (tmp_path / "with_gt" / "summary.txt").read_text()


def test_expert_masks_only_behind_the_oracle_flag(cohorts, tmp_path, capsys):
    assert _prepare(cohorts["with_gt"], tmp_path / "oracle", "--oracle-masks") == 0
    pointer = json.loads((tmp_path / "oracle" / "prepared.json").read_text())
    assert pointer["masks"] == {"source": "ground_truth", "oracle": True, "out_of_sample": None,
                                "note": "oracle masks: expert masks locate the heart and make the segmented images"}
    assert set(load_prepared(tmp_path / "oracle").masks_models.values()) == {None}  # expert masks
    assert "ORACLE" in (tmp_path / "oracle" / "summary.txt").read_text()
    capsys.readouterr()
    assert _prepare(cohorts["blind"], tmp_path / "blind_oracle", "--oracle-masks") == 3  # bad data
    assert "have no expert masks" in capsys.readouterr().err


def test_prepare_reads_cine_only_rows_of_a_dicom_manifest(tmp_path, capsys):
    """The phantom's own DICOM manifest names cines only: prepare finds ED/ES with the (shipped) segmenter."""
    data = generate_phantom(tmp_path / "dicom", n_patients=1, seed=4, classes=("NOR",),
                            config=PhantomConfig(image_size=(128, 144), pixel_spacing_mm=(1.5, 1.8), n_slices=(6, 7)),
                            output_format="dicom")
    assert "ed_frame" not in (data / "manifest.csv").read_text().splitlines()[0]
    assert _prepare(data / "manifest.csv", tmp_path / "out") == 0, capsys.readouterr().err
    prepared = load_prepared(tmp_path / "out")
    assert prepared.patient_ids == ["patient001"] and len(prepared) > 0
    assert (tmp_path / "out" / "qc" / "phases.csv").exists()  # the frames it chose, recorded
