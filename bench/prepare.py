"""Benchmark: prepare the 100 ACDC training patients cold and from the cache; print times and peak RSS.

    .venv/bin/python bench/prepare.py [--data DIR] [--workers 1] [--size 128] [--spacing 1.5]

DIR defaults to $ACDC_ROOT, else ../shared/data/acdc/training next to the repository. The cache goes to a
fresh temporary folder (deleted at the end), so "cold" really is cold for the preparation (the OS file cache
may still hold the input files; the first figure after boot can be higher).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _default_data() -> Path:
    env = os.environ.get("ACDC_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "../shared/data/acdc/training"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data())
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--spacing", type=float, default=1.5)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"ACDC folder not found: {args.data} (set ACDC_ROOT)", file=sys.stderr)
        return 1

    t_import = time.perf_counter()
    from cmrprior.data.prepare import PrepareConfig, prepare_cohort
    from cmrprior.io.cohort import open_cohort

    t_import = time.perf_counter() - t_import
    config = PrepareConfig(pixel_spacing_mm=args.spacing, size=args.size)
    cache = Path(tempfile.mkdtemp(prefix="cmrprior-bench-prepare-"))
    try:
        t0 = time.perf_counter()
        cohort = open_cohort(args.data)
        cold = prepare_cohort(cohort, config, cache, workers=args.workers)
        t_cold = time.perf_counter() - t0
        rss_cold = _peak_rss_mb()
        t0 = time.perf_counter()
        cached = prepare_cohort(open_cohort(args.data), config, cache, workers=args.workers)
        t_cached = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert len(cached) == len(cold)
    cpu = os.cpu_count()
    load1 = os.getloadavg()[0]
    print(f"data:            {args.data.resolve()} ({len(cold.patients)} patients, {len(cold)} slice pairs, "
          f"{cold.ed.shape[1]}x{cold.ed.shape[2]} at {args.spacing} mm)")
    print(f"machine:         {cpu} CPUs, load average {load1:.2f} at the end; workers={args.workers}")
    print(f"import:          {t_import:6.2f} s (cmrprior.data.prepare + io)")
    print(f"cold prepare:    {t_cold:6.2f} s ({t_cold / len(cold.patients) * 1000:.0f} ms/patient; floor 60 s)")
    print(f"cached prepare:  {t_cached:6.2f} s (floor 2 s)")
    print(f"cache size:      {size_mb:6.1f} MiB")
    print(f"peak RSS:        {rss_cold:6.0f} MiB after the cold run, {_peak_rss_mb():.0f} MiB at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
