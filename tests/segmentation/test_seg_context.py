"""2.5D input: each slice with its neighbours of the same stack, the ends repeated; the same predictions
whether a cohort's slices are predicted together or one volume at a time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cmrprior.errors import ConfigError
from cmrprior.segmentation.context import context_index, volume_context
from cmrprior.segmentation.network import build_unet, save_segmenter
from cmrprior.segmentation.predict import input_slices, predict_probabilities, segment_prepared
from cmrprior.segmentation.train import SegTrainConfig, stack_samples, train_segmenter
from seg_doubles import TINY, make_cohort

TINY3 = dataclasses.replace(TINY, in_channels=3)


def _reference(patient_index, slice_index, k):
    """Slow reference: for each slice, sort its own patient's slices by position and step left/right."""
    out = []
    for i in range(len(patient_index)):
        same = [j for j in range(len(patient_index)) if patient_index[j] == patient_index[i]]
        same.sort(key=lambda j: slice_index[j])
        pos = same.index(i)
        out.append([same[min(max(pos + o, 0), len(same) - 1)] for o in range(-(k // 2), k // 2 + 1)])
    return np.array(out)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_context_index_matches_reference_on_shuffled_cohort(k):
    rng = np.random.default_rng(0)
    patient_index = np.repeat([0, 1, 2, 3], [5, 1, 2, 7])
    slice_index = np.concatenate([rng.permutation(5) * 2, [4], [0, 1], rng.permutation(7) + 3])
    order = rng.permutation(len(patient_index))  # stored in any order
    got = context_index(patient_index[order], slice_index[order], k)
    np.testing.assert_array_equal(got, _reference(patient_index[order], slice_index[order], k))


def test_volume_context_by_hand():
    np.testing.assert_array_equal(volume_context(4, 3), [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    np.testing.assert_array_equal(volume_context(1, 3), [[0, 0, 0]])


def test_even_or_zero_context_is_refused():
    for k in (0, 2, 4):
        with pytest.raises(ConfigError, match="odd"):
            context_index(np.zeros(3, int), np.arange(3), k)


def test_training_samples_take_their_neighbours_from_their_own_phase_and_patient():
    cohort = make_cohort()
    images, masks, ctx = stack_samples(cohort, 3)
    n = len(cohort.ed)
    assert ctx.shape == (2 * n, 3)
    owner = np.concatenate([cohort.patient_index, cohort.patient_index])
    phase = np.repeat([0, 1], n)
    assert (owner[ctx] == owner[:, None]).all() and (phase[ctx] == phase[:, None]).all()
    np.testing.assert_array_equal(ctx[:, 1], np.arange(2 * n))  # the centre channel is the sample itself


def test_cohort_prediction_equals_per_volume_prediction(tmp_path):
    torch.manual_seed(0)
    model = build_unet(TINY3).eval()
    assert input_slices(model) == 3
    cohort = make_cohort()
    path = save_segmenter(model, TINY3, tmp_path / "m.safetensors")
    out = segment_prepared(cohort, path, postprocess=False)
    for p in range(len(cohort.patients)):
        idx = np.flatnonzero(cohort.patient_index == p)
        idx = idx[np.argsort(cohort.slice_index[idx])]
        alone = predict_probabilities(model, cohort.ed[idx], divisor=TINY3.divisor).argmax(axis=1)
        np.testing.assert_array_equal(out.ed_mask[idx], alone)


def test_a_slice_s_prediction_depends_on_its_neighbours():
    torch.manual_seed(0)
    model = build_unet(TINY3).eval()
    vol = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    changed = vol.copy()
    changed[2] = np.random.default_rng(2).random((32, 32))
    a = predict_probabilities(model, vol, divisor=TINY3.divisor)
    b = predict_probabilities(model, changed, divisor=TINY3.divisor)
    assert not np.allclose(a[1], b[1])  # slice 1's input holds slice 2
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)  # slice 0's input is (0, 0, 1): unchanged


def test_train_with_three_slices_end_to_end(tmp_path):
    cfg = SegTrainConfig(unet=TINY3, max_epochs=1, batch_size=4, train_crop=24, warmup_steps=2,
                         val_fraction=0.34, num_threads=1)
    model = train_segmenter(make_cohort(), cfg, tmp_path)
    assert model.name == "model.safetensors"
    out = segment_prepared(make_cohort(), model)
    assert out.ed_mask.shape == make_cohort().ed.shape
