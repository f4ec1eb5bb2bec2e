"""CLI: `cmrprior saliency --run RUN` (saliency overlays and the in-heart table of a study run)."""

from __future__ import annotations

import argparse
import logging
import sys

from cmrprior.saliency.config import SaliencyConfig


def _saliency(args: argparse.Namespace) -> int:
    from cmrprior.saliency.run import run_saliency

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
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
    d = SaliencyConfig()  # the study's settings: a plain run scores every cell as `cmrprior study` does
    p.add_argument("--methods", default=",".join(d.methods), help="comma-separated saliency methods")
    p.add_argument("--target", default=d.target,
                   help="class the maps explain: predicted, true (the patient's label) or a class name")
    p.add_argument("--margin-mm", type=float, default=d.margin_mm, help="heart-mask dilation for the score (mm)")
    p.add_argument("--ig-steps", type=int, default=d.ig_steps, help="integrated-gradients quadrature points")
    p.add_argument("--overlay-patients", type=int, default=d.overlay_patients,
                   help="test patients with overlay images per cell")
    p.add_argument("--overlay-splits", type=int, default=d.overlay_splits, help="splits with overlay images")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the in-heart scores' bootstrap")
    p.set_defaults(func=_saliency)
