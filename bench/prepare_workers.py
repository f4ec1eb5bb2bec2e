"""The study's preparation of a cohort (`cmrprior.experiments.cohort_data.prepare_data`: phases, fingerprints,
segmenter choice, heart located by the segmenter, preparation, anatomy measures) in 1 and in N processes, each
run in a fresh process on one torch thread as the `prepare` piece of `cmrprior study --workers N --threads 1`:
prints wall and CPU seconds (the process and its workers) and whether the prepared arrays hash the same.

    PYTHONPATH=src .venv/bin/python bench/prepare_workers.py /tmp/acdc_split/study [--workers 1,2] [--config cpu]

Give a folder without `_gt` files (`bench/acdc_split.py`) to time what a user's run does. Figures are printed,
never asserted; the load average before and after is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[4])
from prepare_locate import digest
from cmrprior.experiments.cohort_data import prepare_data
from cmrprior.experiments.config import load_config
data, workers, config = sys.argv[1], int(sys.argv[2]), load_config(sys.argv[3])
with tempfile.TemporaryDirectory() as folder:  # the cache and QC files of one run (about 230 MB for 79 patients)
    tmp = Path(folder)
    w0 = time.perf_counter()
    prepared, _ = prepare_data(data, config, cache_dir=tmp / "cache", qc_dir=tmp / "qc",
                               measures_to=(tmp / "m.csv", tmp / "p.csv"), workers=workers)
    wall = time.perf_counter() - w0
    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    result = {"wall_s": wall, "cpu_s": cpu, "patients": len(prepared.patient_ids), "sha256": digest(prepared)}
print(json.dumps(result))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--config", default="cpu")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    hashes = set()
    for n in [int(w) for w in args.workers.split(",")]:
        res = subprocess.run([sys.executable, "-c", CHILD, args.data, str(n), args.config, here], check=True,
                             capture_output=True, text=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        hashes.add(r["sha256"])
        print(f"{n} process(es): {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU (with its workers), "
              f"{r['patients']} patients, prepared arrays sha256 {r['sha256'][:16]}", flush=True)
    print("prepared arrays: " + ("the same in every run" if len(hashes) == 1 else "DIFFER between runs"))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
