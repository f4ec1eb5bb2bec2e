"""A study folder is tied to the whole content of every file its cohort points to, not only to the list.

The cohort is a real manifest of real NIfTI files written here; the study is stopped right after its input
checks (preparation raises), so only the binding of the run folder to its inputs is exercised.
"""

import shutil

import nibabel as nib
import numpy as np
import pytest

from cmrprior.errors import ConfigError
from cmrprior.experiments.study import run_study

from .study_doubles import tiny_config


class _Stop(Exception):
    pass


@pytest.fixture()
def stop_at_preparation(monkeypatch):
    import cmrprior.experiments.study as study

    monkeypatch.setattr(study, "load_cohort_data", lambda *a, **k: (_ for _ in ()).throw(_Stop()))


def _manifest(folder, seed=0, n=18):
    """n patients, 3 labels; images and masks as uncompressed .nii (16x16x8 float32 / uint8)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows = ["patient_id,label,ed_image,es_image,ed_mask,es_mask"]
    for i in range(n):
        names = []
        for kind, dtype in (("ed", np.float32), ("es", np.float32), ("ed_gt", np.uint8), ("es_gt", np.uint8)):
            arr = (rng.random((16, 16, 8)) * (3 if dtype == np.uint8 else 100)).astype(dtype)
            name = f"p{i:02d}_{kind}.nii"
            nib.save(nib.Nifti1Image(arr, np.diag([1.5, 1.5, 8.0, 1.0])), folder / name)
            names.append(name)
        rows.append(f"p{i:02d},{'ABC'[i % 3]}," + ",".join(names))
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def _run(data, out):
    with pytest.raises(_Stop):
        run_study(data, out, tiny_config(protocol={"n_splits": 1}), report=False)


def test_the_same_manifest_beside_other_images_is_refused(tmp_path, stop_at_preparation):
    a = _manifest(tmp_path / "a", seed=0)
    b = _manifest(tmp_path / "b", seed=1)
    assert a.read_text() == b.read_text()  # the same list, other images
    _run(a, tmp_path / "run")
    with pytest.raises(ConfigError, match="made from data .*a/m.csv, not .*b/m.csv"):
        run_study(b, tmp_path / "run", tiny_config(protocol={"n_splits": 1}), report=False)
    shutil.copytree(tmp_path / "a", tmp_path / "a2")  # the same data elsewhere is the same input
    _run(tmp_path / "a2" / "m.csv", tmp_path / "run")


def test_an_image_replaced_under_the_same_manifest_is_refused(tmp_path, stop_at_preparation):
    a = _manifest(tmp_path / "a")
    _run(a, tmp_path / "run")
    _run(a, tmp_path / "run")  # unchanged: resumes
    shutil.copyfile(tmp_path / "a" / "p01_ed.nii", tmp_path / "a" / "p00_ed.nii")
    with pytest.raises(ConfigError, match=r"files of data .*m.csv changed since this run folder was made"):
        run_study(a, tmp_path / "run", tiny_config(protocol={"n_splits": 1}), report=False)


def test_a_mask_edited_in_its_middle_is_noticed(tmp_path, stop_at_preparation):
    """An uncompressed mask corrected in a viewer: same size, same header, same first and last 64 KiB."""
    a = _manifest(tmp_path / "a")
    mask = tmp_path / "a" / "p03_ed_gt.nii"
    img = nib.load(mask)
    arr = np.zeros((160, 160, 12), np.uint8)  # large enough for its middle to lie far from both ends
    nib.save(nib.Nifti1Image(arr, img.affine), mask)
    _run(a, tmp_path / "run")
    size = mask.stat().st_size
    data = bytearray(mask.read_bytes())
    assert size > 4 * 64 * 1024
    data[size // 2] = 2  # one voxel relabelled in the middle slices
    mask.write_bytes(bytes(data))
    assert mask.stat().st_size == size
    with pytest.raises(ConfigError, match="changed since this run folder was made"):
        run_study(a, tmp_path / "run", tiny_config(protocol={"n_splits": 1}), report=False)
    assert (tmp_path / "run" / "input_hashes.json").is_file()  # the cache lives in the run folder
    assert not list((tmp_path / "a").glob("*.json"))  # the input folder is never written to


def test_a_folder_tied_by_an_older_cmrprior_is_refused_with_its_own_reason(tmp_path, stop_at_preparation):
    """Its fingerprint hashed only the ends of each file: it cannot vouch for the files, so it is not reused."""
    import json

    a = _manifest(tmp_path / "a")
    _run(a, tmp_path / "run")
    inputs = tmp_path / "run" / "inputs.json"
    bound = json.loads(inputs.read_text())
    bound["data"]["fingerprint"] = "0123456789abcdef"  # the older, partial kind
    inputs.write_text(json.dumps(bound))
    with pytest.raises(ConfigError, match=r"tied to data .*m.csv by an older cmrprior, which hashed only part"):
        run_study(a, tmp_path / "run", tiny_config(protocol={"n_splits": 1}), report=False)
