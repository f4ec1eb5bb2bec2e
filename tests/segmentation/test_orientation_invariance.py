"""Issue 33: one phantom patient stored in the 8 in-plane orders (rows or columns reversed, rows and columns
swapped, the affine adjusted so that every voxel keeps its world position) gives the same measures through
the user's path (`cmrprior measure`: the shipped segmenter, then `cmrprior.anatomy.measure`) and the same
masks in world space from `cmrprior segment predict`, each written in its input's own order and header."""

from __future__ import annotations

import csv
import shutil
from itertools import product
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff

from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.segmentation.cohort_predict import predict_cohort
from cmrprior.segmentation.measures import measure_data
from cmrprior.segmentation.predict import SHIPPED_MODEL

pytestmark = pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="no shipped segmenter")

# nibabel orientation transforms of the (X, Y, Z) voxel axes: the 8 in-plane orders, Z untouched; 0 = as written
STORAGE = [np.array([[a, s], [1 - a, t], [2, 1]], dtype=float) for a, s, t in product((0, 1), (1, -1), (1, -1))]
# a smaller field of view and fewer slices than the default phantom, for speed; the heart is the same size
CONFIG = PhantomConfig(image_size=(128, 144), n_slices=(7, 7))


def _store(src: Path, dst: Path, ornt: np.ndarray) -> None:
    img = nib.load(str(src))
    data = np.asanyarray(img.dataobj)
    new = nib.Nifti1Image(np.ascontiguousarray(apply_orientation(data, ornt)),
                          img.affine @ inv_ornt_aff(ornt, data.shape), header=img.header)
    nib.save(new, str(dst))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("orientation")
    phantom = generate_phantom(root / "phantom", n_patients=1, seed=3, classes=("NOR",), config=CONFIG)
    cohort = root / "cohort"
    for k, ornt in enumerate(STORAGE):
        pid = f"patient{k + 1:03d}"
        (cohort / pid).mkdir(parents=True)
        shutil.copy(phantom / "patient001" / "Info.cfg", cohort / pid / "Info.cfg")
        for f in (phantom / "patient001").glob("*.nii.gz"):
            _store(f, cohort / pid / f.name.replace("patient001", pid), ornt)
    measures = measure_data(cohort, root / "measure")
    predict_cohort(cohort, root / "predict", overlays=0)
    with open(measures, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return cohort, rows, root / "predict"


def test_measures_do_not_depend_on_the_storage_order(runs):
    _, rows, _ = runs
    assert len(rows) == 8
    first = {k: v for k, v in rows[0].items() if k != "patient_id"}
    assert 30 < float(first["lvef_percent"]) < 90 and 50 < float(first["myo_mass_g"]) < 300  # a real segmentation
    for row in rows[1:]:
        assert {k: v for k, v in row.items() if k != "patient_id"} == first, row["patient_id"]


def test_written_masks_are_the_same_in_world_space_and_keep_each_inputs_header(runs):
    cohort, _, predicted = runs
    for phase, frame in (("ED", "frame01"), ("ES", None)):
        ref = None
        for k, ornt in enumerate(STORAGE):
            pid = f"patient{k + 1:03d}"
            image_file = (cohort / pid / f"{pid}_frame01.nii.gz" if frame else
                          next(f for f in (cohort / pid).glob(f"{pid}_frame*.nii.gz")
                               if "_gt" not in f.name and "frame01" not in f.name))
            image, mask = nib.load(str(image_file)), nib.load(str(predicted / pid / f"{pid}_{phase}_seg.nii.gz"))
            labels = np.asanyarray(mask.dataobj)
            if ref is None:
                ref = labels  # variant 0 is the phantom as written
                assert (ref == 3).sum() > 100
            # the variant's storage order applied to the first mask: the same label at every world position
            np.testing.assert_array_equal(labels, apply_orientation(ref, ornt), err_msg=f"{pid} {phase}")
            np.testing.assert_array_equal(mask.affine, image.affine)
            np.testing.assert_array_equal(mask.header.get_zooms(), image.header.get_zooms())
            assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (
                int(image.header["qform_code"]), int(image.header["sform_code"]))
