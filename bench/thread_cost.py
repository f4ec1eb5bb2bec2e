"""CPU and wall seconds of the same small workloads on 1 and on 2 torch threads (is a second thread worth it here?).

    .venv/bin/python bench/thread_cost.py [--threads 1,2] [--steps 5] [--patients 4 --phantom DIR]

Workloads, each in a fresh process per thread count (torch's thread pool is set before any work):
* SimCLR: `--steps` pre-training steps of the `tiny` CNN at 64 px, batch 64 (`cmrprior.ssl.pretrain.pretrain`,
  one epoch with its held-out loss), with the phase split of `cmrprior.utils.timing`;
* segmenter (with `--phantom DIR`, an ACDC-layout cohort): the shipped segmenter locating the heart of the first
  `--patients` patients (`cmrprior.segmentation.volumes.locate_cohort`), model loading included.

Printed: process CPU seconds (all threads) and wall seconds per workload and thread count, and the load average
before and after. On a quiet machine two threads should cost about the same CPU seconds in less wall time; on
a shared one they can cost several times the CPU seconds. No times are asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, tempfile, time, dataclasses
import numpy as np, torch
threads, workload, steps, phantom, patients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
from cmrprior.utils import timing
out = {}
if workload == "simclr":
    from cmrprior.experiments.config import load_config
    from cmrprior.ssl.pretrain import pretrain
    cfg = dataclasses.replace(load_config("cpu").pretrain.for_run(backbone="tiny", batch_size=64, seed=0, image_size=64),
                              epochs=1)
    rng = np.random.default_rng(0)
    x, v = rng.random((64 * steps, 64, 64), dtype=np.float32), rng.random((64, 64, 64), dtype=np.float32)
    with timing.enabled() as t:
        w0, c0 = time.perf_counter(), time.process_time()
        pretrain(x, cfg, tempfile.mkdtemp(), val_images=v)
        out["wall_s"], out["cpu_s"] = time.perf_counter() - w0, time.process_time() - c0
    out["phases"] = {k: [round(p.wall_s, 2), round(p.cpu_s, 2)] for k, p in t.items()}
else:
    from dataclasses import replace
    from pathlib import Path
    from cmrprior.experiments.cohort_data import images_only
    from cmrprior.io.cohort import open_cohort
    from cmrprior.segmentation.folds import choose_segmenters, fingerprint_cohort
    from cmrprior.segmentation.volumes import locate_cohort
    c = open_cohort(Path(phantom))
    c = replace(c, patients=c.patients[:patients])
    prints = fingerprint_cohort(c)
    choices = choose_segmenters({r.patient_id: prints[r.patient_id] for r in c.patients}, None)
    w0, c0 = time.perf_counter(), time.process_time()
    locate_cohort(images_only(c), models={pid: ch.model.weights for pid, ch in choices.items()})
    out["wall_s"], out["cpu_s"] = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--phantom", default=None, help="ACDC-layout cohort for the segmenter workload")
    ap.add_argument("--patients", type=int, default=4)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    workloads = ["simclr"] + (["segmenter"] if args.phantom else [])
    for workload in workloads:
        for n in [int(t) for t in args.threads.split(",")]:
            res = subprocess.run([sys.executable, "-c", CHILD, str(n), workload, str(args.steps), str(args.phantom),
                                  str(args.patients)], check=True, capture_output=True, text=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            phases = "".join(f"; {k} {w:.2f} s wall / {c:.2f} s CPU" for k, (w, c) in r.get("phases", {}).items())
            print(f"{workload}, {n} thread(s): {r['cpu_s']:.2f} s CPU, {r['wall_s']:.2f} s wall{phases}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
