"""`cmrprior phantom`: write a synthetic cohort in the ACDC layout."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cmrprior.utils.argtypes import at_least


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("phantom", help="write a synthetic phantom cohort in the ACDC layout")
    p.add_argument("--out", required=True, type=Path, help="output folder (new, empty, or a phantom to resume)")
    p.add_argument("--patients", type=at_least(1), default=100, help="number of patients (default 100)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--spurious-cue", action="store_true",
                   help="add a class-dependent marker outside the heart (shortcut-learning test)")
    p.add_argument("--classes", default=None,
                   help="comma-separated subset of NOR,DCM,HCM,MINF,RV (default: all five)")
    p.add_argument("--format", choices=("nifti", "dicom"), default="nifti", dest="output_format",
                   help="nifti: ACDC layout (default); dicom: one short-axis cine DICOM series per patient and "
                        "manifest.csv (ED/ES are then found from the cine)")
    p.add_argument("--workers", type=at_least(1), default=min(4, os.cpu_count() or 1),
                   help="parallel processes (default: CPU count, at most 4; output does not depend on it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cmrprior.data.phantom import generate_phantom
    from cmrprior.io.records import ACDC_CLASSES

    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else ACDC_CLASSES
    t0 = time.perf_counter()
    out = generate_phantom(args.out, n_patients=args.patients, seed=args.seed,
                           spurious_cue=args.spurious_cue, classes=classes, workers=args.workers,
                           output_format=args.output_format)
    print(f"phantom: {args.patients} patients in {out} ({time.perf_counter() - t0:.1f} s)", file=sys.stdout)
    return 0
