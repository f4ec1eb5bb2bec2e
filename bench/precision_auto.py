"""What `auto` precision chooses on this CPU, for the Seg-teacher and for SimCLR, with oneDNN free to use every
instruction set the CPU has and with it capped at AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`).

    PYTHONPATH=src .venv/bin/python bench/precision_auto.py [--backbones tiny resnet18] [--size 64] [--threads 1]

The cap makes a CPU with native bf16 compute like an AVX2-only one in oneDNN while its flags still say bf16: the
timing then has to find bf16 slower and choose float32, which checks that the choice follows the measurement
and not the flags. Each choice runs in its own process (the cap is read when oneDNN starts); each prints the
timed seconds a step and the choice, as the study's log does. On a CPU without native bf16 nothing is timed
(float32 in both rows). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
backbone, size = sys.argv[1], int(sys.argv[2])
t = time.time()
if sys.argv[4] == "teacher":
    from cmrprior.ssl.teacher import TeacherConfig, _resolve
    cfg, why = _resolve(TeacherConfig(precision="auto", batch_size=32), backbone, size, None)
else:
    from cmrprior.ssl.config import PretrainConfig, resolve_auto
    from cmrprior.ssl.pretrain import _precision_step
    cfg = PretrainConfig(backbone=backbone, image_size=size, batch_size=64, precision="auto", device="cpu")
    cfg, why = resolve_auto(cfg, torch.device("cpu"), _precision_step(cfg, torch.device("cpu"), (1, size, size)))
print(f"{cfg.precision} | {why} | {time.time() - t:.1f} s")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["tiny", "resnet18"])
    ap.add_argument("--size", type=int, default=64, help="image size (px)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for backbone in args.backbones:
        for what in ("teacher", "simclr"):
            for isa in (None, "AVX2"):
                env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
                if isa:
                    env["ONEDNN_MAX_CPU_ISA"] = isa
                out = subprocess.run([sys.executable, "-c", CHILD, backbone, str(args.size), str(args.threads), what],
                                     env=env, capture_output=True, text=True)
                line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"failed: {out.stderr[-300:]}"
                print(f"{what:8s} {backbone:9s} {args.size} px, oneDNN ISA {isa or 'all':4s}: {line}")


if __name__ == "__main__":
    main()
