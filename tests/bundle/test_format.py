"""A bundle is checked before it is used: every kind of change is refused with a message naming the file."""

import json
import shutil

import numpy as np
import pytest

from cmrprior.bundle import BundleError, load_bundle
from cmrprior.bundle.format import MANIFEST, bundle_sha256, write_bundle_files
from cmrprior.bundle.model import SHIPPED_DIR
from cmrprior.bundle.segmenter import segmenter_digest, shipped_set
from cmrprior.segmentation.predict import file_sha256


@pytest.fixture
def bundle(small_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(small_bundle[0], path)
    return path


def _remanifest(path):
    """What a careless editor does: rewrite the manifest so that the hashes match the edited files."""
    m = json.loads((path / MANIFEST).read_text())
    m["files"] = {rel: file_sha256(path / rel) for rel in m["files"]}
    (path / MANIFEST).write_text(json.dumps(m))


def test_loads_and_predicts_as_the_fitted_model(small_bundle):
    path, model, values = small_bundle
    b = load_bundle(path)
    np.testing.assert_allclose(b.predict_proba(values), model.predict_proba(values), atol=1e-12)
    assert b.classes == ("NOR", "DCM", "HCM") and b.sha256 == bundle_sha256(path)
    assert b.segmenter_model() == shipped_set()
    assert "Not for clinical decisions" in b.card and "0.9" in b.card


def test_no_pickle_anywhere(small_bundle):
    for f in small_bundle[0].rglob("*"):
        if f.is_file():
            assert not f.read_bytes().startswith(b"\x80"), f"{f} looks like a pickle"
            assert f.suffix in (".json", ".safetensors", ".md")


def test_changed_byte_is_refused(bundle):
    w = bundle / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.safetensors.*changed"):
        load_bundle(bundle)


def test_changed_description_is_refused(bundle):
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["classes"] = ["A", "B", "C"]
    (bundle / "bundle.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="bundle.json.*changed"):
        load_bundle(bundle)


def test_missing_file_is_refused(bundle):
    (bundle / "MODEL_CARD.md").unlink()
    with pytest.raises(BundleError, match="MODEL_CARD.md.*missing"):
        load_bundle(bundle)


def test_missing_manifest_is_refused(bundle):
    (bundle / MANIFEST).unlink()
    with pytest.raises(BundleError, match="manifest.json.*missing"):
        load_bundle(bundle)


def test_unlisted_file_is_refused(bundle):
    (bundle / "extra.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="extra.py.*not in its manifest"):
        load_bundle(bundle)


def test_unknown_format_version_is_refused(bundle):
    m = json.loads((bundle / MANIFEST).read_text())
    m["format_version"] = 99
    (bundle / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest.json.*version 99"):
        load_bundle(bundle)


def test_other_segmenter_is_refused(bundle):
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["segmenter"]["sha256"] = "0" * 64
    (bundle / "bundle.json").write_text(json.dumps(spec))
    _remanifest(bundle)
    b = load_bundle(bundle)  # the files are consistent ...
    with pytest.raises(BundleError, match="segmenter sha256 .* differs"):
        b.segmenter_model()  # ... but the segmenter is not the one it was trained with


def test_segmenter_digest_sees_a_changed_basal_file(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(shipped_set().parent, copy)
    before = segmenter_digest(copy / "set")
    basal = copy / "set" / "fold_0.basal.json"
    basal.write_text(basal.read_text().replace("0", "1", 1))
    assert segmenter_digest(copy / "set") != before


def test_unknown_kind_is_refused(bundle):
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["kind"] = "crystal-ball"
    (bundle / "bundle.json").write_text(json.dumps(spec))
    _remanifest(bundle)
    with pytest.raises(BundleError, match="unknown bundle kind 'crystal-ball'"):
        load_bundle(bundle)


def test_unknown_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(BundleError, match="shipped: acdc"):
        load_bundle(tmp_path / "nope")


def test_rewriting_a_bundle_replaces_it_whole(tmp_path):
    target = tmp_path / "b"
    write_bundle_files(target, spec={"format_version": 1, "kind": "x"}, arrays={"a": np.zeros(2)}, card="one")
    (target / "stale.txt").write_text("left from before")
    write_bundle_files(target, spec={"format_version": 1, "kind": "x"}, arrays={"a": np.ones(2)}, card="two")
    assert not (target / "stale.txt").exists() and (target / "MODEL_CARD.md").read_text() == "two"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_a_training_scan_is_recognised(small_bundle, tmp_path):
    path, model, values = small_bundle
    assert not load_bundle(path).trained_on(("a", "b"))
    copy = tmp_path / "b"
    shutil.copytree(path, copy)
    spec = json.loads((copy / "bundle.json").read_text())
    spec["training_fingerprints"] = ["a", "z"]
    (copy / "bundle.json").write_text(json.dumps(spec))
    _remanifest(copy)
    assert load_bundle(copy).trained_on(("a", "b")) and not load_bundle(copy).trained_on(("b", "c"))
