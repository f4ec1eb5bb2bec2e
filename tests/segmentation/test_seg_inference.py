"""Segmenter inference engines: ONNX export against eager PyTorch, and the torch | onnx | auto choice."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch

from cmrprior.cli import main
from cmrprior.errors import ConfigError, DataError
from cmrprior.experiments.config import StudyConfig
from cmrprior.io.records import Volume
from cmrprior.segmentation import inference
from cmrprior.segmentation.inference import SegInference, choose_backend, load_for_inference, max_prob_diff
from cmrprior.segmentation.network import build_unet, save_segmenter
from cmrprior.segmentation.predict import predict_probabilities
from cmrprior.segmentation.volumes import predict_volume
from seg_doubles import TINY, disc_heart


def _tiny(seed: int = 1):
    torch.manual_seed(seed)
    return build_unet(TINY).eval()


def _without(monkeypatch, name: str) -> None:
    """Make `import name` fail as it does when the package is not installed."""
    monkeypatch.setitem(sys.modules, name, None)


def _reference_probs(model, images: np.ndarray) -> np.ndarray:
    """Slow reference: one slice at a time, padding and normalisation written out here."""
    from cmrprior.segmentation.augment import normalise_slices

    out = []
    for img in images:
        h, w = img.shape
        ph, pw = (-h) % TINY.divisor, (-w) % TINY.divisor
        x = normalise_slices(torch.from_numpy(img.astype(np.float32))[None, None])
        x = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        with torch.no_grad():
            p = torch.softmax(model(x), dim=1)[0, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        out.append(p.numpy())
    return np.stack(out)


def test_onnx_probabilities_equal_eager_pytorch():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cmrprior.segmentation.onnx_runtime import OnnxSegmenter, onnx_bytes

    model = _tiny()
    runner = OnnxSegmenter(onnx_bytes(model, TINY), threads=1)
    images = np.random.default_rng(0).random((5, 37, 50)).astype(np.float32)  # odd sizes: dynamic H, W, padding
    got = predict_probabilities(runner, images, divisor=TINY.divisor, batch_size=3)  # batches of 3 and 2
    ref = _reference_probs(model, images)
    assert got.shape == (5, 4, 37, 50)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_volume_labels_equal_eager_pytorch():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cmrprior.segmentation.onnx_runtime import OnnxSegmenter, onnx_bytes

    model = _tiny(3)
    masks = np.stack([disc_heart(80, (40, 44), 10 - z, 4, 18) for z in range(3)])
    noise = np.random.default_rng(1).normal(0, 0.05, masks.shape)
    vol = Volume((np.array([0.1, 0.6, 0.3, 0.9])[masks] + noise).astype(np.float32), (8.0, 1.25, 1.25), np.eye(4))
    runner = OnnxSegmenter(onnx_bytes(model, TINY), threads=1)
    a = predict_volume(model, vol, divisor=TINY.divisor, crop=64)
    b = predict_volume(runner, vol, divisor=TINY.divisor, crop=64)
    np.testing.assert_allclose(b.centre, a.centre, atol=1e-6)
    assert (a.labels != b.labels).mean() < 1e-3  # argmax ties aside, the same labels


def test_export_onnx_file_runs_and_names_its_source(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cmrprior.segmentation.onnx_runtime import OnnxSegmenter
    from cmrprior.segmentation.predict import file_sha256

    weights = save_segmenter(_tiny(), TINY, tmp_path / "m.safetensors")
    out = tmp_path / "onnx" / "m.onnx"
    assert main(["segment", "export-onnx", str(weights), str(out)]) == 0
    meta = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["unet_args"])["channels"] == [4, 8]
    assert meta["source_sha256"] == file_sha256(weights)
    x = torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    assert max_prob_diff(_tiny(), OnnxSegmenter(out, threads=1), [x]) < 1e-5


def test_auto_falls_back_to_torch_with_a_logged_reason_without_onnxruntime(monkeypatch, caplog):
    _without(monkeypatch, "onnxruntime")
    model = _tiny()
    with caplog.at_level(logging.INFO, logger=inference.__name__):
        runner, choice = choose_backend(model, TINY, SegInference(backend="auto"))
    assert runner is model and choice.backend == "torch" and choice.max_prob_diff is None
    assert "onnxruntime is not installed" in choice.reason
    assert "onnxruntime is not installed" in caplog.text


def test_onnx_backend_without_onnxruntime_is_a_config_error(monkeypatch, tmp_path):
    _without(monkeypatch, "onnxruntime")
    weights = save_segmenter(_tiny(), TINY, tmp_path / "m.safetensors")
    with pytest.raises(ConfigError, match=r"cmrprior\[onnx\]"):
        load_for_inference(weights, SegInference(backend="onnx"))


def test_torch_backend_returns_the_eager_model(tmp_path):
    weights = save_segmenter(_tiny(), TINY, tmp_path / "m.safetensors")
    runner, args, _, choice = load_for_inference(weights)
    assert isinstance(runner, torch.nn.Module) and type(runner).__name__ == "UNet" and args == TINY
    assert choice.backend == "torch"


def test_auto_picks_onnx_when_it_matches():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cmrprior.segmentation.onnx_runtime import OnnxSegmenter

    runner, choice = choose_backend(_tiny(), TINY, SegInference(backend="auto", threads=1))
    assert isinstance(runner, OnnxSegmenter) and runner.threads == 1
    assert choice.backend == "onnx" and choice.max_prob_diff < inference.MAX_PROB_DIFF


def test_auto_refuses_an_export_that_does_not_match(monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cmrprior.segmentation import onnx_runtime

    real = onnx_runtime.onnx_bytes
    monkeypatch.setattr(onnx_runtime, "onnx_bytes", lambda model, args: real(_tiny(seed=7), args))  # other weights
    model = _tiny()
    with caplog.at_level(logging.WARNING, logger=inference.__name__):
        runner, choice = choose_backend(model, TINY, SegInference(backend="auto", threads=1))
    assert runner is model and choice.backend == "torch" and choice.max_prob_diff >= inference.MAX_PROB_DIFF
    assert "differ from eager PyTorch" in caplog.text
    with pytest.raises(DataError, match="differ from eager PyTorch"):
        choose_backend(model, TINY, SegInference(backend="onnx", threads=1))


def test_backend_is_a_study_setting_with_one_default():
    assert StudyConfig().masks.inference == SegInference()
    cfg = StudyConfig.from_dict({"masks": {"inference": {"backend": "auto", "threads": 2}}})
    assert cfg.masks.inference == SegInference(backend="auto", threads=2)
    assert StudyConfig.from_dict(cfg.to_dict()).masks == cfg.masks  # survives config.yaml
    with pytest.raises(ConfigError, match="backend"):
        StudyConfig.from_dict({"masks": {"inference": {"backend": "tensorrt"}}})


def test_onnx_runs_a_three_slice_network_like_eager_pytorch():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import dataclasses

    from cmrprior.segmentation.onnx_runtime import OnnxSegmenter, onnx_bytes

    args = dataclasses.replace(TINY, in_channels=3)
    torch.manual_seed(2)
    model = build_unet(args).eval()
    runner = OnnxSegmenter(onnx_bytes(model, args), threads=1)
    images = np.random.default_rng(3).random((4, 32, 40)).astype(np.float32)
    got = predict_probabilities(runner, images, divisor=args.divisor)
    np.testing.assert_allclose(got, predict_probabilities(model, images, divisor=args.divisor), atol=1e-5, rtol=0)
