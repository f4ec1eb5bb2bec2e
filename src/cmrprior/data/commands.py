"""CLI: `cmrprior cohort` (a cohort's summary, no preparation), and the data options that `cmrprior prepare`
shares (that command finds the heart with the segmenter, so it lives in `cmrprior.experiments.prepare_command`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cmrprior.data.summary import summarize_cohort
from cmrprior.io.cohort import open_cohort


def labels_option(text: str | None) -> tuple[str, ...] | None:
    """'NOR, DCM' -> ('NOR', 'DCM'); None or '' -> None (the reader's default labels)."""
    if not text:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_data_args(p: argparse.ArgumentParser) -> None:
    """--data, --labels, --skip-bad: how a cohort is opened."""
    p.add_argument("--data", required=True, type=Path, help="ACDC-layout folder or manifest .csv")
    p.add_argument("--labels", default=None,
                   help="comma-separated allowed labels (default: ACDC classes for folders, any for manifests)")
    p.add_argument("--skip-bad", action="store_true", help="leave out bad patients and list them")


def register(subparsers: argparse._SubParsersAction) -> None:
    c = subparsers.add_parser("cohort", help="print a summary of a cohort (no preparation)")
    add_data_args(c)
    c.set_defaults(func=run_cohort)


def inside(child: Path, parent: Path) -> bool:
    """Whether `child` lies inside `parent` (an output folder must not: input folders are never written to)."""
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def run_cohort(args: argparse.Namespace) -> int:
    cohort = open_cohort(args.data, skip_bad=args.skip_bad, allowed_labels=labels_option(args.labels))
    print(summarize_cohort(cohort))
    return 0
