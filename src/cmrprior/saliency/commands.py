"""CLI: `cmrprior saliency --run RUN` (saliency overlays and the in-heart table of a study run)."""

from __future__ import annotations

import argparse
import logging
import sys


def _saliency(args: argparse.Namespace) -> int:
    from cmrprior.saliency.run import SaliencyConfig, run_saliency
    from cmrprior.vocab import SALIENCY_METHODS

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    methods = tuple(args.methods.split(",")) if args.methods else tuple(SALIENCY_METHODS)
    config = SaliencyConfig(methods=methods, target=args.target, margin_mm=args.margin_mm, ig_steps=args.ig_steps,
                            overlay_patients=args.overlay_patients, overlay_splits=args.overlay_splits, seed=args.seed)
    out = run_saliency(args.run, config)
    print(f"saliency: {out.n_cells} cell(s) scored; overlays in {out.folder}")
    for kind, path in sorted(out.tables.items()):
        print(f"  in-heart table ({kind}): {path}")
    if not out.n_cells:
        print("  no finished cells with a model in this run: nothing to score", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("saliency", help="saliency overlays and in-heart scores for every configuration of a run")
    p.add_argument("--run", required=True, help="study run folder (from `cmrprior study`)")
    p.add_argument("--methods", default=None, help="comma-separated: gradcam,integrated_gradients (default both)")
    p.add_argument("--target", default="predicted",
                   help="class the maps explain: predicted (default), true (the patient's label) or a class name")
    p.add_argument("--margin-mm", type=float, default=5.0, help="heart-mask dilation for the score (mm)")
    p.add_argument("--ig-steps", type=int, default=16, help="integrated-gradients quadrature points")
    p.add_argument("--overlay-patients", type=int, default=4, help="test patients with overlay images per cell")
    p.add_argument("--overlay-splits", type=int, default=1, help="splits with overlay images")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=_saliency)
