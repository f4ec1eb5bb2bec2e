"""CLI: `cmrprior prepare` (prepare and cache a cohort) and `cmrprior cohort` (summary only).

`prepare --out DIR` writes `DIR/cache/<hash>/` (arrays.npz, cohort.json, prepare.json), then
`DIR/prepared.json` (which cache folder is current; read it with `cmrprior.data.prepare.load_prepared(DIR)`)
and `DIR/summary.txt`. A second run with the same data and options reads the cache.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cmrprior.data.prepare_config import PrepareConfig
from cmrprior.data.summary import summarize, summarize_cohort
from cmrprior.errors import ConfigError
from cmrprior.io.cohort import open_cohort
from cmrprior.utils import atomic
from cmrprior.utils.argtypes import at_least
from cmrprior.utils.runfolder_checks import check_out_dir
from cmrprior.utils.runlock import run_lock


def _labels(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="ACDC-layout folder or manifest .csv")
    p.add_argument("--labels", default=None,
                   help="comma-separated allowed labels (default: ACDC classes for folders, any for manifests)")
    p.add_argument("--skip-bad", action="store_true", help="leave out bad patients and list them")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prepare", help="resample, crop, normalise and cache a cohort",
                              description=__doc__.splitlines()[0])
    _add_data_args(p)
    p.add_argument("--out", required=True, type=Path, help="output folder (the cache goes in OUT/cache)")
    p.add_argument("--size", type=int, default=PrepareConfig.size, help="output image size in pixels")
    p.add_argument("--spacing", type=float, default=PrepareConfig.pixel_spacing_mm, help="in-plane pixel spacing in mm")
    p.add_argument("--all-slices", action="store_true", help="keep every slice, not only those with the heart")
    p.add_argument("--workers", type=at_least(1), default=1, help="processes (default 1)")
    p.set_defaults(func=run_prepare)

    c = subparsers.add_parser("cohort", help="print a summary of a cohort (no preparation)")
    _add_data_args(c)
    c.set_defaults(func=run_cohort)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def run_prepare(args: argparse.Namespace) -> int:
    # data.prepare loads SciPy and the image readers (~0.3-1 s): kept out of `cmrprior` start-up
    from cmrprior.data.prepare import prepare_cohort

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data: Path = args.data
    if data.is_dir() and _inside(args.out, data):
        raise ConfigError(f"--out {args.out} is inside the input folder {data}; input folders are never written to")
    check_out_dir(args.out, [])  # a file, or a folder that cannot be written: refused before the work
    config = PrepareConfig(pixel_spacing_mm=args.spacing, size=args.size, heart_slices_only=not args.all_slices)
    with run_lock(args.out):  # one process at a time in the output folder
        cohort = open_cohort(data, skip_bad=args.skip_bad, allowed_labels=_labels(args.labels))
        prepared = prepare_cohort(cohort, config, args.out / "cache", skip_bad=args.skip_bad,
                                  workers=args.workers, progress=True)
        text = f"source:     {cohort.source}\n" + summarize(prepared)
        atomic.write_json(args.out / "prepared.json", {"cache": f"cache/{prepared.config_hash}",
                                                       "config_hash": prepared.config_hash,
                                                       "source": str(cohort.source)})
        atomic.write_text(args.out / "summary.txt", text + "\n")
    print(text)
    print(f"prepared cohort: {args.out / 'cache' / prepared.config_hash}")
    return 0


def run_cohort(args: argparse.Namespace) -> int:
    cohort = open_cohort(args.data, skip_bad=args.skip_bad, allowed_labels=_labels(args.labels))
    print(summarize_cohort(cohort))
    return 0
