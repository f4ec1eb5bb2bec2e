"""CPU seconds of one Seg-teacher epoch in the default memory format and in channels-last (`teacher.channels_last`).

    PYTHONPATH=src .venv/bin/python bench/teacher_layout.py [--images 800] [--size 64] [--repeats 2] [--threads 1]

The tiny CNN's teacher (decoder of `TeacherConfig()`: 3 blocks, width 64) on random images and labels, batch 32,
the study's augmentation; process CPU seconds of the forward pass, the backward pass and the optimiser step, per
layout, the layouts alternating so that a change of the machine's load hits both. The last batch's loss of each
layout is printed too. Then how precise each layout is: one batch through the teacher and, alone, through a batch
norm layer in training mode, each layout's output and gradients against the same computation in float64 (relative
error norms; identical weights and inputs). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from cmrprior.models.registry import create_backbone
from cmrprior.ssl.teacher import SegmentationPretext, TeacherConfig, _shift_and_jitter


def epoch(x: torch.Tensor, y: torch.Tensor, cfg: TeacherConfig) -> tuple[dict[str, float], float]:
    torch.manual_seed(0)
    model = SegmentationPretext(create_backbone("tiny", in_chans=1, weights=None), width=cfg.decoder_width,
                                blocks=cfg.decoder_blocks)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(1)
    t = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    model.train()
    loss = torch.zeros(())
    for i in range(0, len(x), cfg.batch_size):
        xb, yb = _shift_and_jitter(x[i:i + cfg.batch_size], y[i:i + cfg.batch_size], cfg, g)
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        c0 = time.process_time()
        loss = F.cross_entropy(model(xb), yb)
        c1 = time.process_time()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        c2 = time.process_time()
        opt.step()
        c3 = time.process_time()
        t["forward"] += c1 - c0
        t["backward"] += c2 - c1
        t["optimizer"] += c3 - c2
    return t, float(loss.detach())


def _errors(module: torch.nn.Module, x: torch.Tensor, loss_fn, channels_last: bool) -> dict[str, float]:
    """Relative error norms of `loss_fn(module(x))`, of the input's gradient and of the worst parameter gradient,
    float32 in the given layout against float64 in the default one."""
    def run(m: torch.nn.Module, xx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        xx = xx.clone().requires_grad_(True)
        loss = loss_fn(m(xx))
        loss.backward()
        return loss.detach(), xx.grad, {n: p.grad for n, p in m.named_parameters()}

    ref = run(copy.deepcopy(module).double(), x.double())
    m32 = copy.deepcopy(module)
    x32 = x
    if channels_last:
        m32, x32 = m32.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    got = run(m32, x32)
    rel = lambda a, b: float((a.double() - b).norm() / b.norm().clamp_min(1e-300))  # noqa: E731
    return {"loss": rel(got[0], ref[0]), "input grad": rel(got[1], ref[1]),
            "worst parameter grad": max(rel(got[2][n], ref[2][n]) for n in ref[2])}


def precision(size: int) -> None:
    torch.manual_seed(0)
    teacher = SegmentationPretext(create_backbone("tiny", in_chans=1, weights=None))
    x, y = torch.randn(32, 1, size, size), torch.randint(0, 4, (32, size, size))
    bn = torch.nn.BatchNorm2d(64).train()
    xb, gb = torch.randn(32, 64, 32, 32) * 3 + 1, torch.randn(32, 64, 32, 32)
    cases = (("teacher, one batch", teacher, x, lambda out: F.cross_entropy(out, y.to(out.device))),
             ("batch norm (32, 64, 32, 32), mean 1, SD 3", bn, xb, lambda out: (out * gb.to(out.dtype)).sum()))
    print("float32 against float64, relative error norms:")
    for what, module, inp, loss_fn in cases:
        for cl in (False, True):
            e = _errors(module, inp, loss_fn, cl)
            print(f"  {what}, {'channels-last' if cl else 'default (NCHW)':15s}: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in e.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((a.images, a.size, a.size), dtype=np.float32))[:, None]
    y = torch.from_numpy(rng.integers(0, 4, (a.images, a.size, a.size)).astype(np.int64))
    print(f"{a.images} images at {a.size} px, {a.threads} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average before: {os.getloadavg()[0]:.2f}")
    for r in range(a.repeats):
        for cl in (False, True):
            t, last = epoch(x, y, dataclasses.replace(TeacherConfig(), channels_last=cl))
            print(f"  repeat {r + 1} {'channels-last' if cl else 'default (NCHW)':15s} CPU s: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in t.items()) + f", total {sum(t.values()):.2f}; last loss {last:.6f}")
    precision(a.size)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
