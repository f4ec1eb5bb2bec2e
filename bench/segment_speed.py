"""Segmenter inference speed per ACDC frame, end to end, for each inference engine in one run.

    PYTHONPATH=src .venv/bin/python bench/segment_speed.py [--frames 20] [--threads 2] [--data ACDC]
        [--model M.safetensors] [--engines fp32,bf16,onnx]

For N frames of the ACDC training folder (ED and ES frames spread over the patients; `ACDC_ROOT` or
--data), each step of `cmrprior.segmentation.volumes.predict_volume` is timed per frame, as a user meets it
(`cmrprior segment predict`): read the NIfTI, resample to the 1.5 mm grid, localise (network on the whole
field of view), crop pass (network on the 128 px window), back-resample + argmax + post-process, write the
mask NIfTI (into a temporary folder, never into --data). Every slice of a volume goes through the network
in one batch. Engines, interleaved frame by frame so that a change of machine load hits them alike:

    fp32  eager PyTorch, float32 (the default backend)
    bf16  eager PyTorch under bfloat16 autocast (only on a CPU with native bf16: amx_bf16 / avx512_bf16)
    onnx  the same weights exported to ONNX and run by ONNX Runtime (CPU execution provider, --threads
          intra-op threads; `backend: onnx`; needs the onnx extra)

With `--rotations 15,-15`, each engine is also timed with test-time rotation averaging (`ENGINE+rot`,
`cmrprior.segmentation.tta`).

Prints median, p90 and mean seconds per frame for each step and the total, the labels' agreement with
fp32, versions, thread counts, the CPU, and the load average at start and end (a warning when the 1-min
load average is over 1.5 before starting: the figures are then not figures). The issue's target is
<= 0.5 s per frame end to end on 2 cores. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from acdc_cohort import ACDC, angles

STEPS = ("read", "resample", "localise", "crop_pass", "back+post", "write")
TARGET_S = 0.5
BUSY_LOAD = 1.5


class Bf16Autocast(nn.Module):
    """The U-Net under CPU bfloat16 autocast; float32 logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x).float()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def native_bf16() -> tuple[bool, str]:
    """(has native bf16, the flags found) from `lscpu`."""
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return False, f"lscpu unavailable ({exc})"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags.split()]
    return bool(found), ", ".join(found) or "neither amx_bf16 nor avx512_bf16"


def pick_frames(data: Path, n: int) -> list[Path]:
    """N image frames (no `_gt`, no `_4d`) spread evenly over the sorted patients' ED/ES frames."""
    frames = sorted(p for p in data.glob("patient*/patient*_frame[0-9][0-9].nii.gz"))
    if not frames:
        return []
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
    return [frames[i] for i in idx]


@contextmanager
def timed(times: dict[str, float], step: str):
    t0 = time.perf_counter()
    yield
    times[step] = time.perf_counter() - t0


def run_frame(model: nn.Module, path: Path, out: Path, divisor: int) -> tuple[dict[str, float], np.ndarray]:
    """One frame through the steps of `predict_volume`, each timed; (seconds per step, labels)."""
    from cmrprior.io.nifti import read_nifti, write_nifti
    from cmrprior.segmentation.volumes import crop_probabilities, find_centre, labels_in_input, net_grid

    t: dict[str, float] = {}
    with torch.no_grad():
        with timed(t, "read"):
            vol = read_nifti(path)
        with timed(t, "resample"):
            grid, spacing = net_grid(vol)
        with timed(t, "localise"):
            centre = find_centre(model, grid, divisor=divisor)
        with timed(t, "crop_pass"):
            prob = crop_probabilities(model, grid, centre, divisor=divisor)
        with timed(t, "back+post"):
            labels = labels_in_input(prob, vol.shape[1:], spacing)
        with timed(t, "write"):
            write_nifti(labels, None, out / path.name.replace(".nii.gz", "_seg.nii.gz"), like=vol)
    return t, labels


def make_engines(model: nn.Module, margs, names: list[str], threads: int) -> dict[str, nn.Module]:
    from cmrprior.segmentation.inference import SegInference, choose_backend

    engines: dict[str, nn.Module] = {}
    for name in names:
        if name == "fp32":
            engines[name] = model
        elif name == "bf16":
            ok, flags = native_bf16()
            if ok:
                engines[name] = Bf16Autocast(model).eval()
            else:
                print(f"bf16: skipped, this CPU has no native bf16 ({flags}); autocast would emulate it, "
                      "far slower than float32")
        elif name == "onnx":
            try:
                t0 = time.perf_counter()
                runner, choice = choose_backend(model, margs, SegInference(backend="onnx", threads=threads))
                print(f"onnx: export + session + check {time.perf_counter() - t0:.2f} s once per model; "
                      f"{choice.reason}")
                engines[name] = runner
            except Exception as exc:  # noqa: BLE001 - report and go on with the other engines
                print(f"onnx: skipped ({exc})")
        else:
            sys.exit(f"unknown engine {name!r} (fp32, bf16, onnx)")
    return engines


def summarise(name: str, rows: list[dict[str, float]]) -> float:
    """Print median / p90 / mean per step and total; returns the median total."""
    totals = np.array([sum(r.values()) for r in rows])
    parts = []
    for step in STEPS:
        v = np.array([r[step] for r in rows])
        parts.append(f"{step} {np.median(v):.3f}/{np.percentile(v, 90):.3f}")
    print(f"{name:<5} total median {np.median(totals):.3f} s, p90 {np.percentile(totals, 90):.3f} s, "
          f"mean {totals.mean():.3f} s  | per step median/p90 s: " + ", ".join(parts))
    return float(np.median(totals))


def print_header(threads: int) -> None:
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    load = os.getloadavg()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), onnxruntime {ort_version} "
          f"({threads} intra-op threads), CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, "
          f"native bf16: {native_bf16()[1]}")
    print(f"load average at start (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if load[0] > BUSY_LOAD:
        print(f"WARNING: 1-min load average {load[0]:.2f} > {BUSY_LOAD}: other jobs share the CPU, these timings "
              "are not figures; rerun on a quiet machine")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ACDC, help="ACDC training folder (read only)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    p.add_argument("--model", type=Path, default=None, help="segmenter .safetensors (default: the shipped one)")
    p.add_argument("--engines", default="fp32,bf16,onnx")
    p.add_argument("--rotations", default="", help="also time each engine with test-time rotation averaging at "
                                                   "these angles (comma-separated degrees), as ENGINE+rot")
    a = p.parse_args()
    frames = pick_frames(a.data, a.frames)
    if not frames:
        print(f"skipped: no ACDC frames under {a.data} (set ACDC_ROOT or --data)")
        return
    torch.set_num_threads(a.threads)
    print_header(a.threads)

    from cmrprior.segmentation.network import load_segmenter
    from cmrprior.segmentation.predict import default_model_path
    from cmrprior.segmentation.volumes import predict_volume
    from cmrprior.io.nifti import read_nifti

    model, margs, _ = load_segmenter(a.model or default_model_path())
    engines = make_engines(model, margs, a.engines.split(","), a.threads)
    rotations = angles(a.rotations)
    if rotations:
        from cmrprior.segmentation.tta import RotationAverage

        engines.update({f"{name}+rot": RotationAverage(engine, rotations) for name, engine in list(engines.items())})
        print(f"ENGINE+rot: the engine with test-time rotations {list(rotations)} degrees on the heart window")
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
    agree: dict[str, list[float]] = {name: [] for name in engines}
    with tempfile.TemporaryDirectory(prefix="segment_speed_") as tmp:
        with torch.no_grad():
            reference = predict_volume(model, read_nifti(frames[0]), divisor=margs.divisor).labels
        for name, engine in engines.items():  # warm-up (allocators, kernels, ORT arena); not timed
            (Path(tmp) / name).mkdir()
            _, labels = run_frame(engine, frames[0], Path(tmp) / name, margs.divisor)
            if name == "fp32":
                print(f"timed steps reproduce predict_volume: {bool(np.array_equal(labels, reference))}")
        for path in frames:
            fp32_labels = None
            for name, engine in engines.items():
                t, labels = run_frame(engine, path, Path(tmp) / name, margs.divisor)
                rows[name].append(t)
                fp32_labels = labels if name == "fp32" else fp32_labels
                if fp32_labels is not None:
                    agree[name].append(float((labels == fp32_labels).mean()))
    shape_info = ", ".join(sorted({f"{read_nifti(f).shape}" for f in frames[:3]}))
    print(f"{len(frames)} frames (first shapes Z, H, W: {shape_info}); seconds per frame, end to end:")
    medians = {name: summarise(name, r) for name, r in rows.items()}
    for name in engines:
        if name != "fp32" and "fp32" in medians and agree[name]:
            print(f"{name}: {medians['fp32'] / medians[name]:.2f}x fp32 (median total); labels equal to fp32's on "
                  f"{100 * np.mean(agree[name]):.3f} % of voxels (min frame {100 * min(agree[name]):.3f} %)")
    for name, median in medians.items():
        print(f"{name}: median {median:.3f} s per frame, {'within' if median <= TARGET_S else 'over'} {TARGET_S} s")
    best = min(medians, key=medians.get)
    verdict = "meets" if medians[best] <= TARGET_S else "misses"
    print(f"fastest: {best} {medians[best]:.3f} s per frame: {verdict} the {TARGET_S} s target "
          f"({a.threads} threads)")
    load = os.getloadavg()
    print(f"load average at end (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
