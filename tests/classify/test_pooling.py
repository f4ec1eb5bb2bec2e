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
from cmrprior.runs import CellKey, MasksOrigin, RunFolder
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
                  pretrained=(), classes=("a", "b", "c"), masks=MasksOrigin("ground_truth"), image_mode="full",
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


def test_a_motion_cell_with_parts_records_them_and_its_saved_model_reproduces_the_scores(tmp_path):
    import dataclasses

    data = toy_set(n_patients=15, slices=3, size=16)
    data = dataclasses.replace(data, positions=np.tile(np.array([0.0, 0.5, 1.0], np.float32), 15))
    ids = data.patient_ids
    job = CellJob(key=CellKey("0", "tiny", "none", "full"), split_seed=4, train_ids=ids[:12], test_ids=ids[12:],
                  pretrained=(), classes=("a", "b", "c"), masks=MasksOrigin("ground_truth"), image_mode="full",
                  cv_folds=2)
    c = ClassifierConfig(backbones=("tiny",), modes={"none": "linear"}, input_size=16, lrs=(3e-2,), max_epochs=3,
                         batch_size=8, pooling="patient", motion=True, position_bins=2)
    run = RunFolder(tmp_path)
    res = run_cell(run, job, data, c)
    assert res.ok and res.hyperparameters["motion"] is True and res.hyperparameters["position_bins"] == 2
    model, _ = load_classifier(run.model_path(job.key))
    assert model.motion and model.position_bins == 2
    for p, recorded in zip(job.test_ids, res.test.probabilities):
        one = data.subset_patients([p])
        with torch.no_grad():
            logits = model(torch.from_numpy(one.ed), torch.from_numpy(one.es), torch.from_numpy(one.positions))
            probs = torch.softmax(logits, dim=1)[0].numpy()
        np.testing.assert_allclose(probs, recorded, atol=1e-5)


def test_position_bins_against_a_hand_loop_and_empty_parts_take_the_mean():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(5, 4))
    pos = np.array([0.0, 0.2, 0.45, 0.9, 1.0])  # part 0 of 3: 0, 0.2; part 1: 0.45; part 2: 0.9, 1.0
    d = patient_descriptors(f, np.zeros(5, np.int64), 1, pos, bins=3)[0]
    assert d.shape == (5 * 4,)
    np.testing.assert_allclose(d[:4], f.mean(0), rtol=1e-6)
    np.testing.assert_allclose(d[8:12], f[:2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(d[12:16], f[2], rtol=1e-6)
    np.testing.assert_allclose(d[16:20], f[3:].mean(0), rtol=1e-6)
    two = patient_descriptors(f[[0, 4]], np.zeros(2, np.int64), 1, pos[[0, 4]], bins=3)[0]
    np.testing.assert_allclose(two[12:16], f[[0, 4]].mean(0), rtol=1e-6)  # no slice in the middle part
    with pytest.raises(InputError, match="one position per slice"):
        patient_descriptors(f, np.zeros(5, np.int64), 1, None, bins=2)


def test_positions_run_from_base_to_apex_whichever_way_the_stack_was_stored():
    from cmrprior.classify.pooling import base_to_apex

    stored = np.array([0, 0.25, 0.5, 0.75, 1, 0, 0.5, 1], np.float32)
    patient = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    area = np.array([90, 80, 60, 40, 20, 10, 30, 50])  # patient 0 stored base first, patient 1 apex first
    np.testing.assert_array_equal(base_to_apex(stored, patient, area), [0, 0.25, 0.5, 0.75, 1, 1, 0.5, 0])
    np.testing.assert_array_equal(base_to_apex(stored, patient, None), stored)
    # a pooled descriptor with parts is the same for the stack and its reverse
    f = np.random.default_rng(0).normal(size=(5, 3))
    a = patient_descriptors(f, np.zeros(5, np.int64), 1, base_to_apex(stored[:5], patient[:5], area[:5]), bins=2)
    b = patient_descriptors(f[::-1], np.zeros(5, np.int64), 1,
                            base_to_apex(stored[:5], patient[:5], area[:5][::-1]), bins=2)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_pooled_model_with_parts_and_its_one_slice_view(tmp_path):
    torch.manual_seed(2)
    model = build_model("tiny", "none", 3, pooling="patient", motion=True, position_bins=2).eval()
    assert model.head.in_features == 4 * model.num_features
    data = toy_set(n_patients=2, slices=4, size=16)
    one = data.subset_patients([data.patient_ids[1]])
    ed, es = torch.from_numpy(one.ed), torch.from_numpy(one.es)
    pos = torch.tensor([0.0, 0.3, 0.6, 1.0])
    with torch.no_grad():
        d = patient_descriptors(extract_features(model, one), one.patient_index, 1, pos.numpy(), 2)
        torch.testing.assert_close(model(ed, es, pos), model.head(torch.from_numpy(d)), atol=1e-5, rtol=1e-5)
        # a one-slice patient: every statistic but the SD is the slice's features
        single = model.one_slice_model()
        for i in range(4):
            torch.testing.assert_close(single(ed[i:i + 1], es[i:i + 1]), model(ed[i:i + 1], es[i:i + 1], pos[i:i + 1]),
                                       atol=1e-5, rtol=1e-5)
    save_classifier(model, tmp_path / "m.pt", classes=["a", "b", "c"], meta={})
    again, _ = load_classifier(tmp_path / "m.pt")
    assert again.position_bins == 2
    with torch.no_grad():
        torch.testing.assert_close(again(ed, es, pos), model(ed, es, pos))
    with pytest.raises(InputError, match="one position per slice"):
        model(ed, es)
    with pytest.raises(ConfigError, match="position_bins"):
        ClassifierConfig(position_bins=2)  # the default pooling scores slices
