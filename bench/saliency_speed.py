"""Saliency throughput on the CPU: Grad-CAM and integrated gradients per ED/ES slice pair, per backbone.

    .venv/bin/python bench/saliency_speed.py [--size 64] [--pairs 32] [--ig-steps 16] [--threads 1] [--backbones tiny,resnet18]

Prints one line per backbone and method: milliseconds per slice pair (median of 3 repeats). Random weights
(speed does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--ig-steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backbones", default="tiny,resnet18")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cmrprior.classify.model import DiagnosisModel
    from cmrprior.models.registry import create_backbone
    from cmrprior.saliency.attribution import integrated_gradients
    from cmrprior.saliency.gradcam import gradcam

    g = torch.Generator().manual_seed(0)
    ed = torch.randn(args.pairs, 1, args.size, args.size, generator=g)
    es = torch.randn(args.pairs, 1, args.size, args.size, generator=g)
    print(f"threads={args.threads} size={args.size}px pairs={args.pairs} ig_steps={args.ig_steps}")
    for name in args.backbones.split(","):
        torch.manual_seed(0)
        model = DiagnosisModel(create_backbone(name), create_backbone(name), 5).eval()
        for method, fn in (("gradcam", lambda: gradcam(model, ed, es)),
                           ("integrated_gradients", lambda: integrated_gradients(model, ed, es, steps=args.ig_steps))):
            fn()  # warm-up
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            print(f"{name:12s} {method:22s} {1000 * statistics.median(times) / args.pairs:8.2f} ms/pair")


if __name__ == "__main__":
    main()
