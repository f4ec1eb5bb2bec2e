"""The paper grid on a cluster: how many jobs, and an ESTIMATE of the GPU-hours of each kind of piece.

    .venv/bin/python bench/cluster_estimate.py [--config paper] [--patients 100] [--slices 9.4] [--tflops 50]

The job count is the study's own graph (`cmrprior.experiments.pieces.study_graph`) for the config. The
GPU-hours are not measured on a GPU: FLOPs per image are counted on this CPU (torch's FlopCounterMode, the
training step of `bench/pretrain_throughput.py`: 2 views, forward + backward), multiplied by the work of a
piece at its upper bound (every epoch run, no early stop), and divided by an ASSUMED sustained GPU rate
(`--tflops`, default 50 TFLOP/s: a fraction of an A100/H100's bf16 peak that convnets at batch 64 reach
with the data pipeline in the loop). Data loading, augmentation on the CPU and start-up are not counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from collections import Counter
from pathlib import Path

import torch


def _flops(name: str, size: int) -> tuple[float, float]:
    spec = importlib.util.spec_from_file_location("pt", Path(__file__).parent / "pretrain_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.flops(name, size)


def main() -> None:
    from cmrprior.experiments.config import load_config
    from cmrprior.experiments.pieces import study_graph
    from cmrprior.runs import RunFolder, SplitSpec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper")
    ap.add_argument("--patients", type=int, default=100, help="cohort size (ACDC training: 100)")
    ap.add_argument("--slices", type=float, default=9.4, help="short-axis slices per patient and phase (ACDC: ~9.4)")
    ap.add_argument("--tflops", type=float, default=50.0, help="ASSUMED sustained GPU rate, TFLOP/s")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    p, c, pt = cfg.protocol, cfg.classifier, cfg.pretrain
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(tmp)
        run.write_splits([SplitSpec(str(i), i, ("a",), ("b",)) for i in range(p.n_splits)])
        for holdout in (False, True):
            kinds = Counter(x.kind for x in study_graph(run, cfg, holdout=holdout))
            print(f"jobs{' with --test' if holdout else ''}: {sum(kinds.values())} ({dict(kinds)})")
    n_train = round(args.patients * (1 - p.test_fraction))
    n_inner = round(n_train * (1 - p.val_fraction))
    imgs = lambda n: n * args.slices * 2  # noqa: E731 - ED and ES slices
    size = c.input_size
    rate = args.tflops * 1e12
    print(f"ESTIMATE at {args.tflops:g} TFLOP/s sustained (assumed, not measured), {args.patients} patients, "
          f"{args.slices:g} slices, {size} px, upper bounds (every epoch; early stopping cuts them):")
    for backbone in c.backbones:
        fwd, step = _flops(backbone, size)  # per image
        pre = pt.simclr.epochs * (imgs(n_inner) * step + imgs(n_train - n_inner) * 2 * fwd)
        feats = imgs(args.patients) * fwd  # every slice of the split's patients through one candidate encoder
        linear_sscl = len(pt.batch_sizes) * feats
        fits = p.cv_folds * len(c.finetune_lrs) + 1
        finetune = fits * c.finetune_max_epochs * imgs(n_train) * 3 * fwd  # fwd + bwd ~ 3 x fwd, both encoders
        print(f"  {backbone}: forward {fwd / 1e9:.1f} GFLOP/image, SimCLR step {step / 1e9:.1f} GFLOP/image")
        for label, flop in (("SimCLR pre-training (one batch size)", pre),
                            (f"cell, linear, SSCL init ({len(pt.batch_sizes)} candidate encoders)", linear_sscl),
                            ("cell, linear, ImageNet init", feats),
                            (f"cell, fine-tuned, init none ({fits} fits)", finetune)):
            print(f"    {label}: {flop / 1e15:.1f} PFLOP, ~{flop / rate / 3600:.2f} GPU-h")


if __name__ == "__main__":
    main()
