"""Where a SimCLR step's time goes: `torch.profiler` on the step of `bench/pretrain_throughput.py` (cmrprior's
batched views, both views in one forward, NT-Xent, backward, Adam), with the step's share of the matmul peak.

    PYTHONPATH=src .venv/bin/python bench/simclr_profile.py [--backbone resnet18] [--size 128] [--batch 64] [--rows 25]

Prints the fp32 matmul peak measured in the same process, the median of 3 timed steps (after 2 warm-up steps) as
GFLOP/s and as a share of that peak, then the profiler's table of one more step by self CPU time. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from pretrain_throughput import blobs, cmrprior_stepper, flops, matmul_peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rows", type=int, default=25)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: {os.getloadavg()[0]:.2f}")
    peak, _ = matmul_peak(torch.float32)
    _, train = flops(a.backbone, a.size)
    _, step = cmrprior_stepper(a.backbone, blobs(max(4 * a.batch, 256), a.size), a.batch, "fp32", True, False)
    step()
    step()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    rate = a.batch * train / 1e9 / sec
    print(f"{a.backbone} @ {a.size} px, batch {a.batch}, fp32 channels-last: fp32 matmul peak {peak:.1f} GFLOP/s; "
          f"step {sec:.2f} s (median of 3) = {rate:.1f} GFLOP/s = {rate / peak:.1%} of the peak")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
