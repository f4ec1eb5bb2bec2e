"""The segmenter in ONNX: export (`export_onnx`, `cmrprior segment export-onnx`) and an ONNX Runtime session
behind the `nn.Module` call interface (`OnnxSegmenter`), so `predict_probabilities` and every caller of it run
either backend unchanged.

Optional: needs the `onnx` extra (`pip install cmrprior[onnx]`: onnx, onnxruntime). The graph is made by
torch's TorchScript-based exporter (`dynamo=False`): the dynamo exporter of recent torch needs onnxscript,
which the extra does not pull in. Batch, height and width are dynamic axes, so one file serves the
localisation pass (whole field of view) and the crop pass.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from cmrprior.errors import ConfigError
from cmrprior.segmentation.network import UNetArgs, load_segmenter
from cmrprior.utils import atomic

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
OPSET = 17
INSTALL_HINT = "install the optional extra: pip install 'cmrprior[onnx]' (onnx, onnxruntime)"


def onnx_bytes(model: nn.Module, args: UNetArgs) -> bytes:
    """The ONNX graph of `model` (eval mode): input `image` float32 `(B, in_channels, H, W)`, output
    `logits` float32 `(B, out_channels, H, W)`; B, H, W dynamic (H, W multiples of `args.divisor`)."""
    model.eval()
    example = torch.zeros(1, args.in_channels, 8 * args.divisor, 8 * args.divisor)
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and its instance-norm training-mode note (eval here)
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def export_onnx(model_path: str | Path, out_path: str | Path) -> Path:
    """Export a segmenter written by `save_segmenter` to `out_path` (.onnx, atomically); the model's
    `UNetArgs` and the source weights' sha256 go into the file's metadata (`unet_args`, `source_sha256`).

    Raises:
        DataError: unreadable segmenter. ConfigError: the `onnx` package is not installed.
    """
    from cmrprior.segmentation.predict import file_sha256

    try:
        import onnx
    except ImportError as exc:
        raise ConfigError(f"export to ONNX needs the onnx package: {INSTALL_HINT}") from exc
    model, args, _ = load_segmenter(model_path)
    graph = onnx.load_from_string(onnx_bytes(model, args))
    onnx.helper.set_model_props(graph, {"unet_args": json.dumps(args.to_json()),
                                        "source_sha256": file_sha256(model_path)})
    return atomic.write_bytes(out_path, graph.SerializeToString())


class OnnxSegmenter(nn.Module):
    """An ONNX Runtime session (CPU execution provider) called like the U-Net: float `(B, C_in, H, W)` ->
    float32 logits `(B, C_out, H, W)`, on CPU, without autograd. `threads` is the intra-op thread count."""

    def __init__(self, model: bytes | str | Path, *, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.threads = threads
        self.input_slices = int(self.session.get_inputs()[0].shape[1])  # the graph's fixed channel axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])
