"""CLI: `cmrprior prepare`, on the study's path: the heart is found by a segmenter, never by expert masks.

It lives here, not in `cmrprior.data`, because it needs the segmenter (`cmrprior.experiments.cohort_data.
prepare_data`, the same function `cmrprior study` prepares with): each patient's segmenter is chosen out of
sample where the segmenter set allows (`cmrprior.segmentation.folds.choose_segmenters`), the heart is located
on the raw frames, and cropping, slice choice and masks come from that one pass, so a cohort prepared with or
without its `_gt` files gives the same arrays. Expert masks are used only with `--oracle-masks`, and
`OUT/prepared.json` says which (`masks.source`, `masks.note`, `masks.out_of_sample`).

`prepare --out DIR` writes `DIR/cache/<hash>/` (arrays.npz, cohort.json, prepare.json), `DIR/qc/` (which
segmenter segmented whom, its Dice against expert masks where present, left-out slices), then
`DIR/prepared.json` (which cache folder is current; read it with `cmrprior.data.prepare.load_prepared(DIR)`)
and `DIR/summary.txt`. A second run with the same data and options reads the cache.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cmrprior.data.commands import add_data_args, inside, labels_option
from cmrprior.data.prepare_config import PrepareConfig
from cmrprior.errors import ConfigError
from cmrprior.io.cohort import open_cohort
from cmrprior.utils import atomic
from cmrprior.utils.argtypes import at_least
from cmrprior.utils.runfolder_checks import check_out_dir
from cmrprior.utils.runlock import run_lock


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare", help="resample, crop, normalise and cache a cohort (heart found by the segmenter)",
        description="Resample, crop, normalise and cache a cohort. The heart is found by a segmenter (out of sample "
                    "where the segmenter set allows), so a cohort with or without expert masks gives the same "
                    "arrays; expert masks are used only with --oracle-masks, and OUT/prepared.json says which.")
    add_data_args(p)
    p.add_argument("--out", required=True, type=Path, help="output folder (the cache goes in OUT/cache)")
    p.add_argument("--size", type=int, default=PrepareConfig.size, help="output image size in pixels")
    p.add_argument("--spacing", type=float, default=PrepareConfig.pixel_spacing_mm, help="in-plane pixel spacing in mm")
    p.add_argument("--all-slices", action="store_true", help="keep every slice, not only those with the heart")
    p.add_argument("--workers", type=at_least(1), default=1,
                   help="processes that locate the heart and prepare the patients, a patient each (the output is the same)")
    p.add_argument("--segmenter", default=None,
                   help="segmenter weights file or segmenter-set folder (`cmrprior segment index-folds`); "
                        "default: the shipped set")
    p.add_argument("--allow-in-sample", action="store_true",
                   help="run even where the only segmenter was trained on the patient (the output then says so)")
    p.add_argument("--oracle-masks", action="store_true",
                   help="use the cohort's expert masks (_gt files) instead of the segmenter: an oracle setting "
                        "for comparison only, named in OUT/prepared.json")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    # the segmenter and the study's data stage load torch (seconds): kept out of `cmrprior` start-up
    from cmrprior.data.summary import summarize
    from cmrprior.experiments.cohort_data import prepare_data
    from cmrprior.experiments.config import MasksConfig, StudyConfig

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data: Path = args.data
    if data.is_dir() and inside(args.out, data):
        raise ConfigError(f"--out {args.out} is inside the input folder {data}; input folders are never written to")
    check_out_dir(args.out, [])  # a file, or a folder that cannot be written: refused before the work
    masks = MasksConfig(source="ground_truth" if args.oracle_masks else "segmenter", model=args.segmenter,
                        require_out_of_sample=not args.allow_in_sample)
    config = StudyConfig(prepare=PrepareConfig(pixel_spacing_mm=args.spacing, size=args.size,
                                               heart_slices_only=not args.all_slices), masks=masks)
    with run_lock(args.out):  # one process at a time in the output folder
        cohort = open_cohort(data, skip_bad=args.skip_bad, allowed_labels=labels_option(args.labels))
        prepared, origin = prepare_data(data, config, cache_dir=args.out / "cache", qc_dir=args.out / "qc", cohort=cohort,
                                        skip_bad=args.skip_bad, workers=args.workers)
        masks_line = ("ORACLE: expert masks (--oracle-masks)" if args.oracle_masks else "segmenter") + f"; {origin.masks.note}"
        text = f"source:     {cohort.source}\nheart:      {masks_line}\n" + summarize(prepared)
        atomic.write_json(args.out / "prepared.json", {
            "cache": f"cache/{prepared.config_hash}", "config_hash": prepared.config_hash, "source": str(cohort.source),
            "masks": {"source": masks.source, "oracle": bool(args.oracle_masks), "note": origin.masks.note,
                      "out_of_sample": origin.masks.out_of_sample}})
        atomic.write_text(args.out / "summary.txt", text + "\n")
    print(text)
    print(f"prepared cohort: {args.out / 'cache' / prepared.config_hash}")
    return 0
