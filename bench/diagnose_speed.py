"""Seconds per patient and peak memory of `cmrprior diagnose` with an anatomy bundle, end to end (reading the
images to writing diagnoses.csv), on a blind copy of ACDC (images only: symlinks, no `_gt` files).

    PYTHONPATH=src .venv/bin/python bench/diagnose_speed.py --threads 2 --limit 20 [--model acdc] [--no-pages]

Prints the per-patient seconds (median, p90, max: each patient's own segmentation, checks, measures and
model; the first patient also loads the segmenter), the whole run's seconds per patient (pages, CSVs and
run.json included), the peak resident memory of the process, and the load average before and after.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from acdc_cohort import ACDC  # noqa: E402


def blind_copy(src: Path, dst: Path, limit: int | None) -> Path:
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and p.name.startswith("patient"))[:limit]:
        (dst / folder.name).mkdir(parents=True)
        for f in folder.iterdir():
            if "_gt" not in f.name and (f.suffix in (".gz", ".nii") or f.name == "Info.cfg"):
                (dst / folder.name / f.name).symlink_to(f.resolve())
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ACDC, help="ACDC training folder (read only; or ACDC_ROOT)")
    ap.add_argument("--model", default="acdc", help="bundle folder or shipped name (default acdc)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=20, help="first N patients (default 20)")
    ap.add_argument("--no-pages", action="store_true")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"ACDC not found at {args.data} (set ACDC_ROOT)")
        return 0
    import torch

    from cmrprior.bundle import load_bundle
    from cmrprior.bundle.diagnose import diagnose

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = blind_copy(args.data, Path(tmp) / "data", args.limit)
        t0 = time.time()
        bundle = load_bundle(args.model)
        diagnose(bundle, data, Path(tmp) / "out", pages=not args.no_pages)
        wall = time.time() - t0
        with open(Path(tmp) / "out" / "diagnoses.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    sec = np.array([float(r["seconds"]) for r in rows])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bundle {bundle.name} ({bundle.sha256[:12]}), {len(rows)} patients, torch threads {torch.get_num_threads()}, "
          f"pages {'off' if args.no_pages else 'on'}")
    print(f"per patient: median {np.median(sec):.2f} s, p90 {np.percentile(sec, 90):.2f} s, max {sec.max():.2f} s "
          f"(first {sec[0]:.2f} s)")
    print(f"whole run: {wall:.1f} s = {wall / len(rows):.2f} s per patient; peak RSS {peak_mb:.0f} MB")
    print(f"refused: {sum(r['status'] != 'ok' for r in rows)}; load average before {load_before}, after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
