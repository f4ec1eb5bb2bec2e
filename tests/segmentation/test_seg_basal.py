"""Basal-slice correction: myocardial cover by hand, open cavities removed, candidate features by hand (and
the same for an apex-first stack), the RV and LV decisions of hand-set models, the fit of both against
scikit-learn on the documented standardisation, save/load (and the earlier RV-only layout), and the
stale-file check."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cmrprior.errors import DataError, InputError
from cmrprior.segmentation import basal
from cmrprior.segmentation.basal import (
    FEATURES,
    BasalModel,
    SliceModel,
    basal_model_for,
    basal_path,
    candidate_slices,
    close_open_cavities,
    correct_basal,
    fit_basal_model,
    load_basal_model,
    myo_cover,
)
from seg_doubles import disc_heart


def test_myo_cover_by_hand():
    s = np.zeros((10, 10), np.uint8)
    s[3:7, 3:7] = 3  # 4x4 cavity: 12 border pixels
    assert np.isnan(myo_cover(np.zeros((10, 10), np.uint8)))
    assert myo_cover(s) == 0.0
    s[3:7, 2] = 2  # myocardium along the left side touches the 4 pixels of the cavity's left column
    assert myo_cover(s) == pytest.approx(4 / 12)
    s[2, 2:8] = 2  # and the top row: 4 + 3 more border pixels (the top row's other three)
    assert myo_cover(s) == pytest.approx(7 / 12)
    ring = disc_heart(40, (20, 20), 6, 3, 12)
    assert myo_cover(ring) == 1.0


def test_close_open_cavities_removes_only_cavities_open_to_the_atrium():
    closed = disc_heart(40, (20, 20), 6, 3, 12)
    open_ = closed.copy()
    open_[16:][open_[16:] == 2] = 0  # only the ring's top cap is left: most of the cavity's border is open
    assert 0 < myo_cover(open_) < 0.5
    stack = np.stack([open_, closed])
    out = close_open_cavities(stack)
    assert not (out[0] == 3).any() and (out[0] == 2).sum() == (open_ == 2).sum()
    np.testing.assert_array_equal(out[1], closed)
    np.testing.assert_array_equal(stack[0], open_)  # input untouched


def _patient() -> tuple[np.ndarray, np.ndarray]:
    """Base first; ED: 4 heart slices; ES: the same, its basal slice with a small RV, a basal slice without
    heart above both."""
    ed = np.zeros((5, 40, 40), np.uint8)
    es = np.zeros((5, 40, 40), np.uint8)
    for z, r in zip(range(1, 5), (8, 7, 6, 4)):
        ed[z] = disc_heart(40, (20, 22), r, 3, 12)
        es[z] = disc_heart(40, (20, 22), r * 0.7, 3.5, 12)
    es[1][(es[1] == 1)] = 0
    es[1][14:18, 8:12] = 1  # a 16-pixel RV on ES's basal heart slice
    return ed, es


def _areas(s: np.ndarray) -> dict[int, float]:
    return {v: float((s == v).sum()) for v in (1, 2, 3)}


def test_candidate_features_by_hand_and_for_an_apex_first_stack():
    ed, es = _patient()
    got = candidate_slices(ed, es)
    assert [(p, z) for p, z, _ in got] == [("ed", 1), ("es", 1), ("es", 2)]
    rv_ed = [(_areas(ed[z])[1]) for z in range(5)]
    rv_es = [(_areas(es[z])[1]) for z in range(5)]
    a_ed1, a_es1, a_es2, a_ed2 = _areas(ed[1]), _areas(es[1]), _areas(es[2]), _areas(ed[2])
    def sh(a, b):
        return a / (a + b)

    a_es3 = _areas(es[3])
    lv_ed = max(_areas(ed[z])[3] for z in range(5))
    lv_es = max(_areas(es[z])[3] for z in range(5))
    want = [  # every ring is closed: cover 1
        [0, 0, sh(a_ed1[1], a_es1[1]), sh(a_ed1[3], a_es1[3]), sh(a_ed1[2], a_es1[2]), a_ed1[1] / max(rv_ed),
         sh(a_ed1[1], a_ed1[3]), 1, sh(a_ed1[1], a_ed2[1]), sh(a_ed1[3], a_ed2[3]), sh(a_ed1[2], a_ed1[3]),
         a_ed1[3] / lv_ed],
        [1, 0, sh(16, a_ed1[1]), sh(a_es1[3], a_ed1[3]), sh(a_es1[2], a_ed1[2]), 16 / max(rv_es), sh(16, a_es1[3]),
         1, sh(16, a_es2[1]), sh(a_es1[3], a_es2[3]), sh(a_es1[2], a_es1[3]), a_es1[3] / lv_es],
        [1, 1, sh(a_es2[1], a_ed2[1]), sh(a_es2[3], a_ed2[3]), sh(a_es2[2], a_ed2[2]), a_es2[1] / max(rv_es),
         sh(a_es2[1], a_es2[3]), 1, sh(a_es2[1], a_es3[1]), sh(a_es2[3], a_es3[3]), sh(a_es2[2], a_es2[3]),
         a_es2[3] / lv_es],
    ]
    np.testing.assert_allclose(np.array([x for _, _, x in got]), np.array(want), rtol=1e-12)
    flipped = candidate_slices(ed[::-1].copy(), es[::-1].copy())
    assert [(p, z) for p, z, _ in flipped] == [("ed", 3), ("es", 3), ("es", 2)]
    np.testing.assert_allclose(np.array([x for _, _, x in flipped]), np.array(want), rtol=1e-12)
    with pytest.raises(InputError):
        candidate_slices(ed, es[:3])


def _share_model(feature: str) -> SliceModel:
    """P(keep) = sigmoid(20 * feature - 5): keep a structure of at least a third of the other phase's."""
    coef = [0.0] * len(FEATURES)
    coef[FEATURES.index(feature)] = 20.0
    return SliceModel((0.0,) * len(FEATURES), (1.0,) * len(FEATURES), tuple(coef), -5.0, 0)


def _rv_ratio_model() -> BasalModel:
    """The RV decision only: keep an RV of at least a third of the other phase's on the same slice."""
    return BasalModel(_share_model("rv_share_vs_other_phase"), None, 0)


def test_correct_basal_removes_the_rv_the_model_rejects_and_then_open_cavities():
    ed, es = _patient()
    new_ed, new_es = correct_basal(ed, es, _rv_ratio_model())
    assert not (new_es[1] == 1).any()  # 16 px against ED's whole RV: rejected
    np.testing.assert_array_equal(new_es[[0, 2, 3, 4]], es[[0, 2, 3, 4]])
    np.testing.assert_array_equal(new_es[1][es[1] != 1], es[1][es[1] != 1])
    np.testing.assert_array_equal(new_ed, ed)  # ED's RV is larger than ES's: kept
    only_rule_1 = correct_basal(ed, es, None)
    np.testing.assert_array_equal(only_rule_1[1], es)


def test_the_lv_decision_removes_cavity_and_myocardium_of_a_rejected_basal_slice():
    """ES's basal heart slice draws a closed ring around a cavity much smaller than ED's there (outflow tract
    at end-systole): the hand-set LV model rejects it, and with an RV decision that keeps every RV, exactly that
    slice's cavity and myocardium go."""
    ed, es = _patient()
    ring = disc_heart(40, (20, 22), 1.5, 2, 0)  # no RV: its disc lies inside the ring
    es[1] = np.where(ring > 0, ring, np.where(np.isin(es[1], (2, 3)), 0, es[1]))
    assert 0 < (es[1] == 3).sum() < (ed[1] == 3).sum() / 3 and (es[1] == 1).any()
    n = len(FEATURES)
    keep_every_rv = SliceModel((0.0,) * n, (1.0,) * n, (0.0,) * n, 10.0, 0)
    lv_rule = BasalModel(keep_every_rv, _share_model("lv_share_vs_other_phase"), 0)
    assert [(p, z) for p, z, _ in candidate_slices(ed, es, holding=3)] == [("ed", 1), ("es", 1), ("es", 2)]
    new_ed, new_es = correct_basal(ed, es, lv_rule)
    want = es.copy()
    want[1][np.isin(want[1], (2, 3))] = 0  # ES's second slice (0.7 of ED's radius) is kept
    np.testing.assert_array_equal(new_es, want)
    np.testing.assert_array_equal(new_ed, ed)
    rv_only = correct_basal(ed, es, BasalModel(keep_every_rv, None, 0))
    np.testing.assert_array_equal(rv_only[1], es)  # without the LV decision the ring stays
    np.testing.assert_array_equal(rv_only[0], ed)


def test_fit_matches_scikit_learn_on_the_documented_rows_and_round_trips(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    predicted, expert = [], []
    for i in range(12):
        ed, es = _patient()
        gt_es = es.copy()
        size = int(rng.integers(2, 9))
        es[1][14:18, 8:12] = 0
        es[1][14:14 + size, 8:8 + size] = 1
        gt_es[1] = np.where(gt_es[1] == 1, 0, gt_es[1])
        if size >= 6:  # the expert keeps a large basal RV only
            gt_es[1][14:14 + size, 8:8 + size] = 1
        predicted.append((ed, es))
        expert.append((ed, gt_es))
    model = fit_basal_model(predicted, expert, segmenter_sha256="ab" * 32)
    rows = np.array([x for ed, es in predicted for _, _, x in candidate_slices(ed, es)])
    y = np.array([int((ex[1 if p == "es" else 0][z] == 1).any()) for (ed, es), ex in zip(predicted, expert)
                  for p, z, _ in candidate_slices(ed, es)])
    scale = rows.std(0)
    scale[scale == 0] = 1.0
    ref = LogisticRegression(C=1.0, max_iter=5000).fit((rows - rows.mean(0)) / scale, y)
    np.testing.assert_allclose(model.rv.keep_probability(rows), ref.predict_proba((rows - rows.mean(0)) / scale)[:, 1],
                               atol=1e-9)
    assert (model.rv.n_slices, model.n_patients) == (len(y), 12)
    assert model.lv is None  # the expert keeps every basal LV here: one class, no LV decision
    weights = tmp_path / "fold_0.safetensors"
    weights.write_bytes(b"x")
    assert basal_path(weights) == tmp_path / "fold_0.basal.json"
    assert basal_model_for(weights, "ab" * 32) is None
    model.save(basal_path(weights))
    again = basal_model_for(weights, "ab" * 32)
    assert again == model
    with pytest.raises(DataError, match="refit"):
        basal_model_for(weights, "cd" * 32)
    bad = json.loads(basal_path(weights).read_text())
    bad["features"] = ["other"]
    basal_path(weights).write_text(json.dumps(bad))
    with pytest.raises(DataError, match="basal-slice model"):
        load_basal_model(basal_path(weights))
    with pytest.raises(InputError, match="one class"):
        fit_basal_model(predicted[:1], predicted[:1])
    assert basal.MIN_MYO_COVER == 0.5


def test_the_lv_decision_is_fitted_like_the_rv_one_and_the_earlier_layout_loads_without_it(tmp_path):
    """Predicted ES basal rings of random size; the expert labels LV there only when the ring is large. The LV
    model equals scikit-learn's fit on the candidate rows holding LV cavity; a file of the earlier layout (the RV
    model's fields at the top level) loads as the same RV decision and no LV decision."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    predicted, expert = [], []
    for i in range(16):
        ed, es = _patient()
        r = float(rng.uniform(1.5, 5.5))
        es[1] = np.where(np.isin(es[1], (2, 3)), 0, es[1])
        ring = disc_heart(40, (20, 22), r, 2, 0)
        es[1] = np.where(ring > 1, ring, es[1])
        gt_es = es.copy()
        if r < 3.5:  # the expert sees outflow tract
            gt_es[1][np.isin(gt_es[1], (2, 3))] = 0
        gt_es[1][gt_es[1] == 1] = 0 if i % 2 else 1  # both classes for the RV decision
        predicted.append((ed, es))
        expert.append((ed, gt_es))
    model = fit_basal_model(predicted, expert)
    rows = np.array([x for ed, es in predicted for _, _, x in candidate_slices(ed, es, holding=3)])
    y = np.array([int((ex[1 if p == "es" else 0][z] == 3).any()) for (ed, es), ex in zip(predicted, expert)
                  for p, z, _ in candidate_slices(ed, es, holding=3)])
    assert 0 < y.sum() < len(y)
    scale = rows.std(0)
    scale[scale == 0] = 1.0
    ref = LogisticRegression(C=1.0, max_iter=5000).fit((rows - rows.mean(0)) / scale, y)
    np.testing.assert_allclose(model.lv.keep_probability(rows), ref.predict_proba((rows - rows.mean(0)) / scale)[:, 1],
                               atol=1e-9)
    assert model.lv.n_slices == len(y)
    fixed = [correct_basal(ed, es, model)[1] for ed, es in predicted]
    small = [(ex[1][1] == 3).any() for _, ex in zip(predicted, expert)]
    assert sum((f[1] == 3).any() == keep for f, keep in zip(fixed, small)) >= 14  # the rings it learned to judge
    old = {"features": list(FEATURES), **{k: list(v) if isinstance(v, tuple) else v
                                          for k, v in dataclasses.asdict(model.rv).items()},
           "n_patients": 16, "segmenter_sha256": ""}
    (tmp_path / "old.basal.json").write_text(json.dumps(old))
    again = load_basal_model(tmp_path / "old.basal.json")
    assert again == BasalModel(model.rv, None, 16)


def test_locate_heart_returns_the_corrected_pair(monkeypatch):
    """Reference: the network's labels (a stand-in `predict_volume` returns the drawn stacks) put through
    `correct_basal`; the ES basal RV the hand-set model rejects is gone from the location the study crops and
    measures with, and `correct=False` leaves the network's labels."""
    from pathlib import Path

    from cmrprior.io.records import PatientRecord, PatientVolumes, Volume
    from cmrprior.segmentation import volumes

    ed, es = _patient()
    drawn = {}
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    vol_ed, vol_es = (Volume(np.full(ed.shape, float(k), np.float32), (8.0, 1.5, 1.5), affine) for k in (0, 1))
    drawn[id(vol_ed)], drawn[id(vol_es)] = ed, es
    monkeypatch.setattr(volumes, "predict_volume", lambda model, vol, **kw: volumes.VolumePrediction(
        drawn[id(vol)].copy(), (20.0, 20.0), False))
    vols = PatientVolumes(PatientRecord("p1", None, Path("ed.nii.gz"), Path("es.nii.gz")), vol_ed, vol_es)
    raw = volumes.locate_heart(None, vols, basal=_rv_ratio_model(), correct=False)
    np.testing.assert_array_equal(raw.es_labels, es)
    fixed = volumes.locate_heart(None, vols, basal=_rv_ratio_model())
    want_ed, want_es = correct_basal(ed, es, _rv_ratio_model())
    np.testing.assert_array_equal(fixed.ed_labels, want_ed)
    np.testing.assert_array_equal(fixed.es_labels, want_es)
    assert (es[1] == 1).any() and not (fixed.es_labels[1] == 1).any()


def test_segment_predict_writes_the_corrected_ed_es_pair_with_the_models_basal_file(tmp_path, monkeypatch):
    from cmrprior.io.load import read_image
    from cmrprior.segmentation import cohort_predict
    from cmrprior.segmentation.predict import file_sha256
    from test_seg_volumes import _cohort

    src, _, weights = _cohort(tmp_path)
    model = _rv_ratio_model()
    import dataclasses

    dataclasses.replace(model, segmenter_sha256=file_sha256(weights)).save(basal_path(weights))
    calls = []
    real = cohort_predict.correct_basal
    monkeypatch.setattr(cohort_predict, "correct_basal",
                        lambda ed, es, m: calls.append((m, real(ed, es, m))) or calls[-1][1])
    cohort_predict.predict_cohort(src / "manifest.csv", tmp_path / "run", model_path=weights, overlays=0)
    assert len(calls) == 1 and calls[0][0].rv == model.rv
    for k, phase in enumerate(("ED", "ES")):
        # the mask file is in the input's voxel order; read as every input is, it is the corrected pair
        np.testing.assert_array_equal(read_image(tmp_path / "run" / "p1" / f"p1_{phase}_seg.nii.gz").array, calls[0][1][k])
