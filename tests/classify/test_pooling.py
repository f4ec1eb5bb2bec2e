"""Patient-level pooling (`classifier.pooling: patient`): the descriptor against a per-patient loop, the pooled
model's forward against the descriptor, save/load, and one linear cell scoring patients end to end."""

import numpy as np
import pytest
import torch
from test_train import toy_set

from cmrprior.classify.config import ClassifierConfig
from cmrprior.classify.model import PooledDiagnosisModel, build_model, load_classifier, save_classifier
from cmrprior.classify.pooling import patient_descriptors
from cmrprior.classify.train import extract_features
from cmrprior.errors import ConfigError, InputError
from cmrprior.experiments.cell import CellJob, run_cell
from cmrprior.runs import CellKey, RunFolder
from cmrprior.saliency.run import _scorable_cells


def test_descriptors_against_a_per_patient_loop():
    rng = np.random.default_rng(0)
    index = rng.permutation(np.repeat(np.arange(5), [1, 3, 4, 2, 6]))  # patients' slices interleaved
    f = rng.normal(3.0, 2.0, (index.size, 7)).astype(np.float32)
    d = patient_descriptors(f, index, 5)
    assert d.shape == (5, 14) and d.dtype == np.float32
    for p in range(5):
        mine = f[index == p].astype(np.float64)
        np.testing.assert_allclose(d[p, :7], mine.mean(0), rtol=1e-6)
        np.testing.assert_allclose(d[p, 7:], mine.std(0), rtol=1e-5, atol=1e-6)
    assert np.all(d[0, 7:] == 0)  # one slice: no spread
    with pytest.raises(InputError, match=r"patients without slices \[2\]"):
        patient_descriptors(f[index != 2], index[index != 2], 5)


def test_pooled_model_scores_one_patient_from_its_descriptor(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", "none", 3, pooling="patient").eval()
    assert isinstance(model, PooledDiagnosisModel) and model.head.in_features == 2 * model.num_features
    data = toy_set(n_patients=3, slices=4, size=16)
    one = data.subset_patients([data.patient_ids[1]])
    with torch.no_grad():
        logits = model(torch.from_numpy(one.ed), torch.from_numpy(one.es))
        d = patient_descriptors(extract_features(model, one), one.patient_index, 1)
        expected = model.head(torch.from_numpy(d))
    assert logits.shape == (1, 3)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    save_classifier(model, tmp_path / "m.pt", classes=["a", "b", "c"], meta={})
    again, _ = load_classifier(tmp_path / "m.pt")
    assert isinstance(again, PooledDiagnosisModel)
    with torch.no_grad():
        torch.testing.assert_close(again(torch.from_numpy(one.ed), torch.from_numpy(one.es)), logits)
    # saliency's slice-level view: each slice pair scored as a one-slice patient (mean = its features, SD 0)
    single = model.one_slice_model()
    assert single.ed_encoder is model.ed_encoder and float(single.input_std) == float(model.input_std)
    with torch.no_grad():
        f = model.features(torch.from_numpy(one.ed), torch.from_numpy(one.es))
        alone = model.head(torch.cat([f, torch.zeros_like(f)], dim=1))
        torch.testing.assert_close(single(torch.from_numpy(one.ed), torch.from_numpy(one.es)), alone)
    with pytest.raises(ConfigError, match="pooling"):
        build_model("tiny", "none", 3, pooling="max")
    with pytest.raises(ConfigError, match="classifier.pooling"):
        ClassifierConfig(pooling="slice")


def test_a_pooled_linear_cell_scores_each_patient_once(tmp_path):
    data = toy_set(n_patients=15, slices=3, size=16)
    ids = data.patient_ids
    job = CellJob(key=CellKey("0", "tiny", "none", "full"), split_seed=4, train_ids=ids[:12], test_ids=ids[12:],
                  pretrained=(), classes=("a", "b", "c"), masks_source="ground_truth", masks_note="", image_mode="full",
                  cv_folds=2)
    c = ClassifierConfig(backbones=("tiny",), modes={"none": "linear"}, input_size=16, lrs=(1e-3, 3e-2), max_epochs=4,
                         batch_size=8, pooling="patient")
    run = RunFolder(tmp_path)
    res = run_cell(run, job, data, c)
    assert res.ok and res.mode == "linear" and res.hyperparameters["pooling"] == "patient"
    assert res.search["n_folds"] == 2 and sorted(res.train_oof.patient_ids) == sorted(job.train_ids)
    # the saved model gives the recorded test probabilities, patient by patient
    model, _ = load_classifier(run.model_path(job.key))
    for p, recorded in zip(job.test_ids, res.test.probabilities):
        one = data.subset_patients([p])
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(one.ed), torch.from_numpy(one.es)), dim=1)[0].numpy()
        np.testing.assert_allclose(probs, recorded, atol=1e-5)
    unavailable = []
    assert [r.key for r in _scorable_cells(run, unavailable)] == [job.key] and unavailable == []


def test_motion_features_are_ed_es_and_their_difference_and_reach_the_pooled_descriptor(tmp_path):
    torch.manual_seed(1)
    model = build_model("tiny", "none", 3, pooling="patient", motion=True).eval()
    f_enc = model.ed_encoder.num_features
    assert model.num_features == 3 * f_enc and model.head.in_features == 6 * f_enc
    data = toy_set(n_patients=2, slices=4, size=16)
    one = data.subset_patients([data.patient_ids[0]])
    ed, es = torch.from_numpy(one.ed), torch.from_numpy(one.es)
    with torch.no_grad():
        f_ed = model.ed_encoder.forward_features(ed[:, None])
        f_es = model.es_encoder.forward_features(es[:, None])
        torch.testing.assert_close(model.features(ed, es), torch.cat([f_ed, f_es, f_ed - f_es], 1))
        # the SD over slices of the difference is not a function of the SDs of ED and ES features
        diff_sd = (f_ed - f_es).std(0, unbiased=False)
        expected = model.head(torch.cat([f_ed.mean(0), f_es.mean(0), (f_ed - f_es).mean(0),
                                         f_ed.std(0, unbiased=False), f_es.std(0, unbiased=False), diff_sd])[None])
        torch.testing.assert_close(model(ed, es), expected, atol=1e-5, rtol=1e-5)
    save_classifier(model, tmp_path / "m.pt", classes=["a", "b", "c"], meta={})
    again, _ = load_classifier(tmp_path / "m.pt")
    assert again.motion and again.one_slice_model().motion
    with torch.no_grad():
        torch.testing.assert_close(again(ed, es), model(ed, es))
    # saliency's one-slice view keeps the motion features
    single = model.one_slice_model()
    with torch.no_grad():
        f = model.features(ed, es)
        torch.testing.assert_close(single(ed, es), model.head(torch.cat([f, torch.zeros_like(f)], dim=1)))


def test_a_motion_cell_records_it_and_its_saved_model_reproduces_the_scores(tmp_path):
    data = toy_set(n_patients=15, slices=3, size=16)
    ids = data.patient_ids
    job = CellJob(key=CellKey("0", "tiny", "none", "full"), split_seed=4, train_ids=ids[:12], test_ids=ids[12:],
                  pretrained=(), classes=("a", "b", "c"), masks_source="ground_truth", masks_note="", image_mode="full",
                  cv_folds=2)
    c = ClassifierConfig(backbones=("tiny",), modes={"none": "linear"}, input_size=16, lrs=(3e-2,), max_epochs=3,
                         batch_size=8, pooling="patient", motion=True)
    run = RunFolder(tmp_path)
    res = run_cell(run, job, data, c)
    assert res.ok and res.hyperparameters["motion"] is True
    model, _ = load_classifier(run.model_path(job.key))
    assert model.motion
    for p, recorded in zip(job.test_ids, res.test.probabilities):
        one = data.subset_patients([p])
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(one.ed), torch.from_numpy(one.es)), dim=1)[0].numpy()
        np.testing.assert_allclose(probs, recorded, atol=1e-5)
