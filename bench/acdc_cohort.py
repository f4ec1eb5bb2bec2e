"""Where the benchmarks find ACDC (`ACDC`, or `ACDC_ROOT`); for those that segment it with a segmenter set, their
shared arguments (`--data`, `--model`, `--threads`, `--limit`), the cohort they select, and how they read a list
of test-time rotation angles (`angles`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

ACDC = Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "shared/data/acdc/training"))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, default=ACDC, help="ACDC training folder (read only; or ACDC_ROOT)")
    ap.add_argument("--model", type=Path, default=None,
                    help="segmenter set (`cmrprior segment index-folds`) or weights; default: the shipped set")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N patients only (a smoke run)")


def open_cohort(args: argparse.Namespace):
    """The cohort `args` select, with torch's threads set; None (and a printed reason) without ACDC."""
    from cmrprior.io.acdc import read_acdc

    if not args.data.is_dir():
        print(f"ACDC not found at {args.data} (set ACDC_ROOT)")
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    cohort = read_acdc(args.data)
    if args.limit:
        cohort = dataclasses.replace(cohort, patients=cohort.patients[: args.limit])
    print(f"{len(cohort)} patients, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    return cohort


def angles(text: str) -> tuple[float, ...]:
    """Test-time rotation angles in degrees from a comma-separated list ("" = none)."""
    return tuple(float(a) for a in text.split(",") if a)
