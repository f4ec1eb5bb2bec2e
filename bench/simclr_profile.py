"""Where a SimCLR step's time goes: `torch.profiler` on the step of `bench/pretrain_throughput.py` (cmrprior's
batched views, both views in one forward, NT-Xent, backward, Adam), with the step's share of the matmul peak.

    PYTHONPATH=src .venv/bin/python bench/simclr_profile.py [--backbone resnet18] [--size 128] [--batch 64] [--rows 25]
        [--per-layer] [--precision fp32|bf16]

Prints the matrix-product peak of the step's precision (`--precision`; bf16: autocast, as `cmrprior pretrain`) measured in the same process (the higher of torch.matmul and a oneDNN 1x1
convolution, `pretrain_throughput.gemm_peak`), the median of 3 timed steps (after 2 warm-up steps) as
GFLOP/s and as a share of that peak, then the profiler's table of one more step by self CPU time. `--per-layer`:
then each convolution of the encoder alone, at the shape the step gives it (both views, channels-last), its forward
and its backward (input and weight gradients) as GFLOP/s and share of the peak, median of 3: which layers and which
direction keep the step from the peak. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from pretrain_throughput import blobs, cmrprior_stepper, flops, gemm_peak


def _median_s(fn, reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def per_layer(model: torch.nn.Module, n: int, size: int, peak: float, precision: str) -> None:
    """Each Conv2d of `model` alone on `n` random inputs of the shape it meets, channels-last, in `precision`
    (bf16: the input and weights in bf16, as autocast gives them to a convolution)."""
    shapes: list[tuple[torch.nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, tuple(i[0].shape))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, 1, size, size).contiguous(memory_format=torch.channels_last))
    for h in hooks:
        h.remove()
    cl = torch.channels_last
    total = {"forward": [0.0, 0.0], "backward": [0.0, 0.0]}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    print(f"each convolution alone, {n} inputs, channels-last {precision} (share of the {peak:.1f} GFLOP/s peak):")
    for m, shape in shapes:
        conv = torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=False).to(
            dtype=dtype, memory_format=cl)
        x = torch.randn(n, *shape[1:], dtype=dtype).contiguous(memory_format=cl).requires_grad_(m.in_channels > 1)
        with torch.no_grad():
            y = conv(x)
        g = torch.randn_like(y)
        flop = 2 * y.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        bw_flop = flop * (2 if m.in_channels > 1 else 1)  # the input's gradient is not needed for the image
        with torch.no_grad():
            tf = _median_s(lambda: conv(x))
        tb = max(_median_s(lambda: conv(x).backward(g)) - tf, 1e-9)  # forward with its graph, then backward
        total["forward"][0] += flop; total["forward"][1] += tf
        total["backward"][0] += bw_flop; total["backward"][1] += tb
        print(f"  {m.in_channels:4d} -> {m.out_channels:4d}, {m.kernel_size[0]}x{m.kernel_size[1]} stride {m.stride[0]}, "
              f"input {shape[2]}x{shape[3]}: forward {tf * 1e3:7.1f} ms {flop / tf / 1e9 / peak:6.1%}, "
              f"backward {tb * 1e3:7.1f} ms {bw_flop / tb / 1e9 / peak:6.1%}")
    for k, (f, t) in total.items():
        print(f"  all convolutions, {k}: {t:.2f} s, {f / 1e9:.0f} GFLOP, {f / t / 1e9:.1f} GFLOP/s = {f / t / 1e9 / peak:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--per-layer", action="store_true", help="time each convolution alone, forward and backward")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: {os.getloadavg()[0]:.2f}")
    peak, _ = gemm_peak(torch.bfloat16 if a.precision == "bf16" else torch.float32)
    _, train = flops(a.backbone, a.size)
    model, step = cmrprior_stepper(a.backbone, blobs(max(4 * a.batch, 256), a.size), a.batch, a.precision, True, False)
    step()  # the second warm-up step is `_median_s`'s
    sec = _median_s(step)
    rate = a.batch * train / 1e9 / sec
    print(f"{a.backbone} @ {a.size} px, batch {a.batch}, {a.precision} channels-last: {a.precision} matrix-product peak {peak:.1f} GFLOP/s; "
          f"step {sec:.2f} s (median of 3) = {rate:.1f} GFLOP/s = {rate / peak:.1%} of the peak")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
    if a.per_layer:
        per_layer(model, 2 * a.batch, a.size, peak, a.precision)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
