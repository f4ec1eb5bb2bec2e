"""SimCLR training-step throughput on this machine: cmrprior vs lightly, same backbone/batch/resolution.

    nice -n 10 .venv/bin/python bench/pretrain_throughput.py [--backbones resnet18,vgg16] [--size 128]
        [--batch 64] [--steps 3] [--warmup 1] [--bf16 auto|force|off] [--compile-too]

One step = views of a batch (augmentation) + encoder and projection head on both views + NT-Xent + backward +
Adam. cmrprior: batched on-device views (`cmrprior.ssl.augment`), both views in one forward,
`cmrprior.ssl.model.simclr_loss`. lightly: its default SimCLR recipe: `SimCLRTransform` per sample on
PIL images through a DataLoader (num_workers=0, as this 2-core machine has no spare cores), torchvision
backbone on 3-channel input, `SimCLRProjectionHead`, `NTXentLoss`, two forwards.

Settings per backbone: cmrprior's defaults as `cmrprior pretrain` resolves them on this machine
(`resolve_auto`), cmrprior fp32 in NCHW (lightly's layout: like for like), lightly's default (fp32), and
with --compile-too / bf16 more. The settings are timed round-robin (step k of each before step k+1 of any), so
a load change hits all alike, and the median step is reported.

Printed per backbone and setting: images/s (median step after warm-up), FLOPs per image (model forward, and the
whole training step: 2 views, forward + backward; counted with torch.utils.flop_counter.FlopCounterMode), the
achieved FLOP rate and its fraction of this machine's matrix-product peak (the higher of large torch.matmul products
and a large oneDNN 1x1 convolution, in fp32 and bf16, measured at the start of the same run). bf16 steps are skipped
under `--bf16 auto` when the bf16 peak is under a quarter of the fp32 one (a CPU without AVX512-BF16/AMX emulates bf16; a step would take many minutes); the peaks say why.
The CPU is shared: the 1-minute load average is printed before and after.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cmrprior.ssl.config import PretrainConfig, resolve_auto


def matmul_peak(dtype: torch.dtype, max_n: int = 2048, budget_s: float = 20.0) -> tuple[float, int]:
    """Best GFLOP/s of square matmuls, growing n while one product takes < 0.5 s (within a time budget)."""
    best, n, t_start = 0.0, 256, time.perf_counter()
    while n <= max_n and time.perf_counter() - t_start < budget_s:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while reps < 3 or time.perf_counter() - t0 < 0.5:
            a @ b
            reps += 1
            if time.perf_counter() - t0 > 5:
                break
        dt = (time.perf_counter() - t0) / reps
        best = max(best, 2 * n**3 / dt / 1e9)
        if dt > 0.5:
            break
        n *= 2
    return best, n


def conv_gemm_peak(dtype: torch.dtype, reps: int = 5) -> float:
    """GFLOP/s of a 1x1 convolution in channels-last, a (4096 x 1024) x (1024 x 1024) matrix product run by oneDNN,
    the library that runs the networks' convolutions: best of `reps`. On some CPUs torch.matmul's float32 library
    reaches less than oneDNN does (an AVX512 EPYC, 2 threads: 182 against 427 GFLOP/s), and a share of that lower figure
    would overstate how close a network comes to the machine's peak."""
    x = torch.randn(4, 1024, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1024, 1024, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flop = 2 * 4 * 32 * 32 * 1024 * 1024
    with torch.no_grad():
        t0 = time.perf_counter()
        torch.nn.functional.conv2d(x, w)
        best = 0.0
        for _ in range(reps if time.perf_counter() - t0 < 2 else 1):  # emulated bf16 takes seconds a call
            t0 = time.perf_counter()
            torch.nn.functional.conv2d(x, w)
            best = max(best, flop / (time.perf_counter() - t0) / 1e9)
    return best


def gemm_peak(dtype: torch.dtype) -> tuple[float, str]:
    """The higher of torch.matmul's and oneDNN's (`conv_gemm_peak`) matrix-product rates, and both in words."""
    mm, n = matmul_peak(dtype)
    conv = conv_gemm_peak(dtype)
    return max(mm, conv), f"matmul {mm:.1f} (n<={n}), 1x1 convolution {conv:.1f}"


def blobs(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.1, 0.25) * size
        out[i] = 0.2 + 0.6 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2) + 0.05 * rng.standard_normal((size, size))
    return np.clip(out, 0, 1)


# ------------------------------------------------------------------------------------------------ cmrprior
def cmrprior_stepper(name: str, images: np.ndarray, batch: int, precision: str, channels_last: bool, compile_: bool):
    from cmrprior.ssl.augment import ViewAugmentConfig, two_views
    from cmrprior.ssl.model import build_model, simclr_loss

    torch.manual_seed(0)
    model = build_model({"backbone": name, "in_chans": 1, "backbone_kwargs": {}, "proj_hidden_dim": 512,
                         "proj_dim": 128, "proj_batch_norm": False})
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fwd = torch.compile(model) if compile_ else model
    data = torch.from_numpy(images).unsqueeze(1)
    g = torch.Generator().manual_seed(0)
    aug = ViewAugmentConfig()
    size = images.shape[-1]
    state = {"i": 0}

    def step() -> float:
        i = state["i"]
        idx = torch.arange(i * batch, (i + 1) * batch) % data.shape[0]
        state["i"] += 1
        with torch.no_grad():
            v1, v2 = two_views(data[idx], aug, g, out_size=size)
        if channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        loss = simclr_loss(fwd, v1, v2, temperature=0.1, precision=precision)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


# ------------------------------------------------------------------------------------------------ lightly
def lightly_stepper(name: str, images: np.ndarray, batch: int, precision: str):
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    size = images.shape[-1]
    transform = SimCLRTransform(input_size=size)
    pil = [Image.fromarray((im * 255).astype(np.uint8)).convert("RGB") for im in images]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(pil)

        def __getitem__(self, i):
            return transform(pil[i])

    torch.manual_seed(0)
    if name == "vgg16":
        tv = torchvision.models.vgg16(weights=None)
        backbone = nn.Sequential(tv.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        nf = 512
    else:
        tv = getattr(torchvision.models, name)(weights=None)
        nf = tv.fc.in_features
        tv.fc = nn.Identity()
        backbone = tv

    class SimCLR(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(nf, 512, 128)

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    model = SimCLR()
    crit = NTXentLoss(temperature=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(DS(), batch_size=batch, shuffle=True, drop_last=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    it = {"it": iter(loader)}

    def step() -> float:
        try:
            views = next(it["it"])
        except StopIteration:
            it["it"] = iter(loader)
            views = next(it["it"])
        x0, x1 = views[0], views[1]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            z0, z1 = model(x0), model(x1)
            loss = crit(z0, z1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


def time_steps(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def flops(name: str, size: int) -> tuple[float, float]:
    """(forward FLOPs per image of the encoder, training-step FLOPs per image: 2 views fwd+bwd incl. head/loss)."""
    from cmrprior.ssl.model import build_model, simclr_loss

    torch.manual_seed(0)
    model = build_model({"backbone": name, "in_chans": 1, "backbone_kwargs": {}, "proj_hidden_dim": 512,
                         "proj_dim": 128, "proj_batch_norm": False})
    x = torch.randn(2, 1, size, size)
    model.eval()
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model.encoder.forward_features(x[:1])
    fwd = fc.get_total_flops()
    model.train()
    with FlopCounterMode(display=False) as fc:
        simclr_loss(model, x, x.flip(-1), temperature=0.1, precision="fp32").backward()
    return float(fwd), float(fc.get_total_flops()) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="resnet18,vgg16")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--bf16", choices=("auto", "force", "off"), default="auto")
    ap.add_argument("--compile-too", action="store_true", help="also time cmrprior channels-last with torch.compile (fp32, and bf16 where timed)")
    args = ap.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average before: {os.getloadavg()[0]:.2f}", flush=True)
    peak32, how32 = gemm_peak(torch.float32)
    peak16, how16 = gemm_peak(torch.bfloat16)
    print(f"matrix-product peak (the higher of torch.matmul and a oneDNN 1x1 convolution, GFLOP/s): fp32 {peak32:.1f} "
          f"({how32}), bf16 {peak16:.1f} ({how16})", flush=True)
    do_bf16 = args.bf16 == "force" or (args.bf16 == "auto" and peak16 >= 0.25 * peak32)
    if not do_bf16:
        print(f"bf16 steps skipped: bf16 matmul peak is {peak16 / peak32:.1%} of fp32 on this CPU (no native bf16)",
              flush=True)
    images = blobs(max(args.batch * (args.warmup + args.steps), 256), args.size)

    for name in args.backbones.split(","):
        fwd, train = flops(name, args.size)
        print(f"\n{name} @ {args.size}px, batch {args.batch}: forward {fwd / 1e9:.2f} GFLOP/image, training step "
              f"{train / 1e9:.2f} GFLOP/image (2 views, fwd+bwd)", flush=True)
        # what `cmrprior pretrain` resolves "auto" to here, timing this network's step as it does
        check = {p: cmrprior_stepper(name, images, args.batch, p, True, False)[1] for p in ("fp32", "bf16")[:1 + do_bf16]}
        default, why = resolve_auto(PretrainConfig(backbone=name, batch_size=args.batch), torch.device("cpu"),
                                    (lambda p: check[p]()) if do_bf16 else None)
        del check
        print(f"  cmrprior's 'auto' precision here: {why}", flush=True)
        # (label, library, precision, channels-last, compile); "default" = what `cmrprior pretrain` picks here
        settings = [(f"cmrprior default ({default.precision}{', channels-last' if default.channels_last else ''})",
                     "cmrprior", default.precision, default.channels_last, default.compile),
                    ("cmrprior fp32 NCHW", "cmrprior", "fp32", False, False)]
        if default.precision == "bf16":
            settings.append(("cmrprior fp32 channels-last", "cmrprior", "fp32", True, False))
        lightly = hasattr(importlib.import_module("torchvision.models"), name)  # lightly's recipe takes a torchvision backbone
        if lightly:
            settings.append(("lightly  fp32 (its default)", "lightly", "fp32", None, None))
        if args.compile_too:
            settings.append(("cmrprior fp32 channels-last compiled", "cmrprior", "fp32", True, True))
            if do_bf16:
                settings.append(("cmrprior bf16 channels-last compiled", "cmrprior", "bf16", True, True))
        if do_bf16:
            if default.precision != "bf16":
                settings.append(("cmrprior bf16 channels-last", "cmrprior", "bf16", True, False))
            if lightly:
                settings.append(("lightly  bf16", "lightly", "bf16", None, None))
        steppers = {}
        for label, lib, prec, cl, comp in settings:
            if lib == "cmrprior":
                steppers[label] = cmrprior_stepper(name, images, args.batch, prec, cl, comp)[1]
            else:
                steppers[label] = lightly_stepper(name, images, args.batch, prec)[1]
            for _ in range(args.warmup):
                steppers[label]()
        # round-robin: step k of every setting runs before step k+1 of any, so a change of the machine's
        # load during the run hits all settings alike; the median step time is reported
        times: dict[str, list[float]] = {label: [] for label in steppers}
        for _ in range(args.steps):
            for label, step in steppers.items():
                t0 = time.perf_counter()
                step()
                times[label].append(time.perf_counter() - t0)
        rates = {}
        for label, lib, prec, cl, comp in settings:
            sec = float(np.median(times[label]))
            ips = args.batch / sec
            rates[label] = ips
            achieved = ips * train / 1e9
            peak = peak16 if prec == "bf16" else peak32
            print(f"  {label:40s} {ips:7.2f} images/s  (median {sec:6.1f} s/step of {args.steps}, "
                  f"min {min(times[label]):.1f})  {achieved:6.1f} GFLOP/s = {achieved / peak:5.1%} of {prec} matmul peak",
                  flush=True)
        del steppers
        base = rates.get("lightly  fp32 (its default)")
        for label, ips in rates.items():
            if label.startswith("cmrprior") and base:
                print(f"  {label} / lightly fp32: {ips / base:.2f}x", flush=True)
    again32, _ = gemm_peak(torch.float32)
    print(f"\nfp32 matmul peak measured again at the end: {again32:.1f} GFLOP/s (start: {peak32:.1f}; fractions above use "
          f"the start value; on a shared CPU both are lower bounds of the true peak)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
