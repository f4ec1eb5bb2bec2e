"""Image and hybrid bundles: what is written is what the study's model computes (weights as safetensors, the
fusion as arrays), and every change to their files is refused with a message naming the file."""

import json
import shutil

import numpy as np
import pytest
import torch

from cmrprior.bundle import BundleError, load_bundle
from cmrprior.bundle.export import export_image_bundle
from cmrprior.bundle.format import MANIFEST
from cmrprior.bundle.image import Preparation, image_spec
from cmrprior.bundle.spec import Acquisition
from cmrprior.classify.anatomy import signed_log
from cmrprior.classify.data import SliceSet
from cmrprior.classify.hybrid import Fusion
from cmrprior.classify.model import build_model, save_classifier
from cmrprior.classify.scoring import score_patients
from cmrprior.data.prepare_config import PrepareConfig
from cmrprior.segmentation.predict import file_sha256
from cmrprior.vocab import ImageSpec

from bundle.conftest import CLASSES, synthetic_measures

PREP = Preparation(PrepareConfig(size=64), ImageSpec("segmented", "mask", 3.0), 32)


def _slices(n_patients: int = 3, per: int = 2, seed: int = 0) -> SliceSet:
    rng = np.random.default_rng(seed)
    n = n_patients * per
    return SliceSet(ed=rng.random((n, 32, 32), dtype=np.float32), es=rng.random((n, 32, 32), dtype=np.float32),
                    labels=np.zeros(n, np.int64), patient_index=np.repeat(np.arange(n_patients), per),
                    patient_ids=tuple(f"p{i}" for i in range(n_patients)),
                    positions=np.tile(np.linspace(0, 1, per), n_patients).astype(np.float32))


@pytest.fixture(scope="module", params=["slices", "patient"])
def image_bundle(request, tmp_path_factory, one_torch_thread):
    """An image bundle of a tiny ED/ES model (slice-averaged, or patient-pooled with motion features and
    position bins), and the model itself."""
    root = tmp_path_factory.mktemp("image")
    pooled = request.param == "patient"
    model = build_model("tiny", "none", len(CLASSES), seed=3, pooling=request.param, motion=pooled,
                        position_bins=2 if pooled else 0)
    with torch.no_grad():  # a head that is not the seeded start, as after training
        model.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    save_classifier(model, root / "model.pt", classes=list(CLASSES), meta={"init": "none", "hyperparameters": {}})
    payload = torch.load(root / "model.pt", weights_only=True)
    values, labels = synthetic_measures()
    export_image_bundle(root / "b", image_spec(payload, init="none", mode="linear", preparation=PREP, batch_size=4),
                        name="img", classes=CLASSES, train_values=values, train_labels=labels,
                        acquisitions=[Acquisition(1.4, 8.0, 300.0)] * len(values), segmenter=None,
                        estimate={"macro_auc": 0.8}, made_by="test")
    return root / "b", model.eval()


@pytest.fixture
def copy(image_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(image_bundle[0], path)
    return path


def test_image_bundle_scores_as_the_model(image_bundle):
    path, model = image_bundle
    b = load_bundle(path)
    assert b.kind == "image" and b.features == () and b.predictor is None
    assert b.image.preparation == PREP and b.image.mode == "linear"
    data = _slices()
    want = score_patients(model, data, linear=True, batch_size=4)
    got = b.image.predict_proba(data)
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=0)
    np.testing.assert_allclose(b.predict_proba(image=got), want, atol=1e-7, rtol=0)
    assert set(b.domain.features) == {"lv_edv_ml", "lvef", "max_wall_thickness_mm"}  # shown, not checked
    assert b.outside_measures({"lv_edv_ml": 1e6}) == []
    manifest = json.loads((path / MANIFEST).read_text())
    assert (manifest["kind"], manifest["kind_version"]) == ("image", 1)


def test_no_pickle_in_an_image_bundle(image_bundle):
    for f in image_bundle[0].rglob("*"):
        if f.is_file():
            assert not f.read_bytes().startswith(b"\x80"), f"{f} looks like a pickle"
            assert f.suffix in (".json", ".safetensors", ".md")


def test_changed_weight_byte_is_refused(copy):
    w = copy / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.safetensors.*changed"):
        load_bundle(copy)


def _edit_spec(path, edit) -> None:
    spec = json.loads((path / "bundle.json").read_text())
    edit(spec)
    (path / "bundle.json").write_text(json.dumps(spec))
    m = json.loads((path / MANIFEST).read_text())
    m["files"] = {rel: file_sha256(path / rel) for rel in m["files"]}
    (path / MANIFEST).write_text(json.dumps(m))


def test_unknown_kind_version_is_refused(copy):
    _edit_spec(copy, lambda s: s.update(kind_version=2))
    with pytest.raises(BundleError, match="bundle.json.*image bundle description version 2"):
        load_bundle(copy)


def test_manifest_kind_must_agree(copy):
    _edit_spec(copy, lambda s: s.update(kind="anatomy"))
    with pytest.raises(BundleError, match="manifest.json.*kind 'image'"):
        load_bundle(copy)


def test_weights_of_another_architecture_are_refused(copy):
    _edit_spec(copy, lambda s: s["image"]["model_args"].update(backbone="resnet18"))
    with pytest.raises(BundleError, match="weights.safetensors.*do not fit"):
        load_bundle(copy)


@pytest.mark.parametrize("fusion", ["late", "stacking"])
def test_hybrid_bundle_fuses_as_the_study(image_bundle, tmp_path, fusion):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cmrprior.classify.anatomy import fit_anatomy
    from cmrprior.classify.config import AnatomyConfig
    from cmrprior.classify.hybrid import stack_features

    path, model = image_bundle
    values, labels = synthetic_measures()
    y = np.array([CLASSES.index(x) for x in labels])
    anatomy = fit_anatomy(values, y.tolist(), n_classes=3, config=AnatomyConfig(cs=(1.0,), n_trees=10, depths=(3,)),
                          cv_folds=3, seed=0, train_ids=[f"t{i}" for i in range(len(values))])
    rng = np.random.default_rng(0)
    p_image = rng.dirichlet(np.ones(3), size=len(values))
    measures = signed_log(anatomy.matrix(values))
    fitted = (Fusion(image_weight=0.25) if fusion == "late" else
              Fusion(stacker=make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
                     .fit(stack_features(p_image, measures), y)))
    spec = json.loads((path / "bundle.json").read_text())["image"]
    from safetensors.numpy import load_file

    arrays = load_file(str(path / "weights.safetensors"))
    export_image_bundle(tmp_path / "h", (spec, arrays), name="hyb", classes=CLASSES, train_values=values,
                        train_labels=labels, acquisitions=[Acquisition(1.4, 8.0, 300.0)] * len(values),
                        segmenter=None, anatomy=anatomy, fusion=fitted, fusion_choice=fusion)
    b = load_bundle(tmp_path / "h")
    assert b.kind == "hybrid" and b.features == anatomy.features
    want = fitted.predict_proba(p_image, anatomy.predict_proba(values), measures)
    got = np.concatenate([b.predict_proba([v], image=p[None]) for v, p in zip(values, p_image)])
    np.testing.assert_allclose(got, want, atol=1e-10, rtol=0)
    drivers = b.drivers(values[0], image=p_image[0])
    assert len(drivers) == 3 and drivers[0].effect >= drivers[-1].effect
    assert b.outside_measures({"lv_edv_ml": 1e6})  # the hybrid's measures are checked
