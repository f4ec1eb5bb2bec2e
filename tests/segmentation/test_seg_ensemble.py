"""Segmenter ensembles: the combined file loads as one segmenter whose probabilities are the mean of its
members' (each member loaded on its own), cross-validation runs are combined only fold by matching fold, and
the result feeds a segmenter set like any fold model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cmrprior.cli import main
from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation.ensemble import combine_cv, combine_weights
from cmrprior.segmentation.network import (LOG_FLOOR, SegmenterEnsemble, UNetArgs, build_unet, load_segmenter,
                                           save_segmenter)
from cmrprior.segmentation.predict import file_sha256, predict_probabilities

from seg_doubles import TINY

WIDER = UNetArgs(channels=(6, 12, 24), strides=(2, 2), num_res_units=1)  # divisor 4, TINY's is 2


def _member(path: Path, args: UNetArgs, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_segmenter(build_unet(args), args, path, {"config": {"seed": seed}})


def test_ensemble_probabilities_are_the_mean_of_its_members(tmp_path):
    a = _member(tmp_path / "a.safetensors", TINY, 0)
    b = _member(tmp_path / "b.safetensors", dataclasses.replace(TINY, channels=(6, 10)), 1)
    out = combine_weights([a, b], tmp_path / "ens.safetensors")

    model, args, meta = load_segmenter(out)
    assert isinstance(model, SegmenterEnsemble) and len(model.members) == 2
    assert args == TINY
    assert [m["sha256"] for m in meta["members"]] == [file_sha256(a), file_sha256(b)]
    assert meta["members"][1]["training"] == {"config": {"seed": 1}}

    images = np.random.default_rng(0).random((5, 20, 28)).astype(np.float32)  # padded to the divisor inside
    pa = predict_probabilities(load_segmenter(a)[0], images, divisor=args.divisor)
    pb = predict_probabilities(load_segmenter(b)[0], images, divisor=args.divisor)
    pe = predict_probabilities(model, images, divisor=args.divisor)
    np.testing.assert_allclose(pe, (pa + pb) / 2, rtol=0, atol=1e-6)
    assert not np.allclose(pa, pb, atol=1e-3)  # the members differ, so the mean is not one of them


def test_log_floor_keeps_the_output_finite_where_a_mean_probability_underflows():
    class Certain(torch.nn.Module):
        def forward(self, x):
            logits = torch.full((x.shape[0], 4, *x.shape[2:]), -1e4)
            logits[:, 2] = 1e4
            return logits

    out = SegmenterEnsemble([Certain(), Certain()])(torch.zeros(1, 1, 4, 4))
    assert torch.isfinite(out).all()
    assert out[0, 2].abs().max() == 0 and (out[0, [0, 1, 3]] == LOG_FLOOR).all()
    torch.testing.assert_close(torch.softmax(out, dim=1)[0, 2], torch.ones(4, 4))


def test_members_that_do_not_fit_together_are_refused_naming_the_file(tmp_path):
    a = _member(tmp_path / "a.safetensors", TINY, 0)
    two_slices = _member(tmp_path / "c.safetensors", dataclasses.replace(TINY, in_channels=3), 2)
    deeper = _member(tmp_path / "d.safetensors", WIDER, 3)
    with pytest.raises(DataError, match="c.safetensors.*input slices, classes or divisor"):
        combine_weights([a, two_slices], tmp_path / "x.safetensors")
    with pytest.raises(DataError, match="d.safetensors"):
        combine_weights([a, deeper], tmp_path / "x.safetensors")
    ens = combine_weights([a, _member(tmp_path / "b.safetensors", TINY, 1)], tmp_path / "e.safetensors")
    with pytest.raises(DataError, match="e.safetensors.*already an ensemble"):
        combine_weights([a, ens], tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="at least 2"):
        combine_weights([a], tmp_path / "x.safetensors")
    with pytest.raises(DataError, match="missing.safetensors"):
        combine_weights([a, tmp_path / "missing.safetensors"], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def _cv_run(root: Path, splits: list[dict], seed: int) -> Path:
    for k, split in enumerate(splits):
        d = root / "cv" / f"fold_{k}"
        d.mkdir(parents=True)
        _member(d / "model.safetensors", TINY, seed + k)
        (d / "test_patients.json").write_text(json.dumps(split))
    return root / "cv"


SPLITS = [{"train": ["p2", "p3"], "test": ["p0", "p1"]}, {"train": ["p0", "p1"], "test": ["p2", "p3"]}]


def test_cv_runs_are_combined_fold_by_fold(tmp_path):
    runs = [_cv_run(tmp_path / "r1", SPLITS, 0), _cv_run(tmp_path / "r2", SPLITS, 10)]
    assert main(["segment", "combine", *map(str, runs), "--out", str(tmp_path / "ens")]) == 0
    for k in range(2):
        fold = tmp_path / "ens" / f"fold_{k}"
        assert json.loads((fold / "test_patients.json").read_text()) == SPLITS[k]
        _, _, meta = load_segmenter(fold / "model.safetensors")
        assert [m["sha256"] for m in meta["members"]] == [file_sha256(r / f"fold_{k}" / "model.safetensors")
                                                          for r in runs]


def test_cv_runs_with_other_folds_are_refused(tmp_path):
    swapped = [SPLITS[0], {"train": ["p0", "p2"], "test": ["p1", "p3"]}]
    runs = [_cv_run(tmp_path / "r1", SPLITS, 0), _cv_run(tmp_path / "r2", swapped, 10)]
    with pytest.raises(DataError, match=r"r2/cv/fold_1/test_patients.json.*own test patients"):
        combine_cv(runs, tmp_path / "ens")
    (tmp_path / "r2" / "cv" / "fold_1" / "model.safetensors").unlink()  # fold 1 unfinished in one run
    with pytest.raises(DataError, match="finished folds"):
        combine_cv(runs, tmp_path / "ens2")


def test_combine_refuses_files_and_folders_together(tmp_path, capsys):
    run = _cv_run(tmp_path / "r1", SPLITS, 0)
    assert main(["segment", "combine", str(run), str(run / "fold_0" / "model.safetensors"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_heart_finding_pass_runs_the_first_member_only(monkeypatch):
    from cmrprior.segmentation import volumes

    a, b = build_unet(TINY).eval(), build_unet(TINY).eval()
    ens = SegmenterEnsemble([a, b])
    seen = []
    monkeypatch.setattr(volumes, "predict_probabilities",
                        lambda model, grid, divisor: seen.append(model) or np.zeros((2, 4, 8, 8), np.float32))
    volumes.find_centre(ens, np.zeros((2, 8, 8), np.float32), divisor=2)
    volumes.find_centre(a, np.zeros((2, 8, 8), np.float32), divisor=2)
    assert seen[0] is a and seen[1] is a


def test_an_ensemble_runs_under_onnx_runtime_with_the_mean_probabilities(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cmrprior.segmentation.inference import SegInference, load_for_inference

    a = _member(tmp_path / "a.safetensors", TINY, 0)
    b = _member(tmp_path / "b.safetensors", TINY, 1)
    ens = combine_weights([a, b], tmp_path / "ens.safetensors")
    runner, args, _, choice = load_for_inference(ens, SegInference(backend="onnx", threads=1))
    assert choice.backend == "onnx"
    images = np.random.default_rng(1).random((3, 22, 30)).astype(np.float32)
    pa = predict_probabilities(load_segmenter(a)[0], images, divisor=args.divisor)
    pb = predict_probabilities(load_segmenter(b)[0], images, divisor=args.divisor)
    np.testing.assert_allclose(predict_probabilities(runner, images, divisor=args.divisor), (pa + pb) / 2, atol=1e-5)


def test_an_ensemble_never_overwrites_its_inputs(tmp_path):
    a = _member(tmp_path / "a.safetensors", TINY, 0)
    b = _member(tmp_path / "b.safetensors", TINY, 1)
    before = a.read_bytes()
    with pytest.raises(ConfigError, match="overwrite its member"):
        combine_weights([a, b], a)
    assert a.read_bytes() == before
    runs = [_cv_run(tmp_path / "r1", SPLITS, 0), _cv_run(tmp_path / "r2", SPLITS, 10)]
    weights = (runs[0] / "fold_0" / "model.safetensors").read_bytes()
    for out in (runs[0], runs[1] / "ens"):
        with pytest.raises(ConfigError, match="into the cross-validation run"):
            combine_cv(runs, out)
    assert (runs[0] / "fold_0" / "model.safetensors").read_bytes() == weights
    assert not (runs[1] / "ens").exists()
