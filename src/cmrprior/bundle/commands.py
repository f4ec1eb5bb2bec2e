"""CLI: `cmrprior diagnose` (a model bundle applied to new patients) and `cmrprior bundle check`."""

from __future__ import annotations

import argparse

from cmrprior.bundle.config import DEFAULT_BUNDLE, SHIPPED
from cmrprior.segmentation.config import BACKENDS, SegInference
from cmrprior.utils.argtypes import at_least


def _diagnose(args: argparse.Namespace) -> int:
    import torch

    from cmrprior.bundle.diagnose import OK, diagnose
    from cmrprior.bundle.model import load_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    table = diagnose(bundle, args.data, args.out, inference=SegInference(backend=args.backend),
                     pages=not args.no_pages)
    n_ok = sum(p.status == OK for p in table.patients)
    print(f"diagnose: {n_ok} of {len(table.patients)} patients judged by {bundle.name}; {args.out}/diagnoses.csv"
          + ("" if args.no_pages else f", {args.out}/index.html"))
    return 0


def _check(args: argparse.Namespace) -> int:
    from cmrprior.bundle.model import load_bundle

    b = load_bundle(args.model)
    b.segmenter_model()
    inputs = [f"{len(b.features)} measures"] * bool(b.features) + [f"image model {b.image.cell}"] * (b.image is not None)
    print(f"bundle {b.name}: {b.kind}, classes {', '.join(b.classes)}, {' + '.join(inputs)}, sha256 {b.sha256}: "
          "every file and the segmenter check out")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose", help="apply a model bundle to new patients: diagnoses.csv, measures.csv, masks, one HTML page "
                         "per patient; a patient the model cannot judge is refused with its reason")
    p.add_argument("--model", default=DEFAULT_BUNDLE,
                   help=f"a bundle folder (RUN/models/<name> of a study) or a shipped bundle name "
                        f"({', '.join(SHIPPED)}; default {DEFAULT_BUNDLE})")
    p.add_argument("--data", required=True, help="ACDC-layout folder or manifest CSV (labels not needed)")
    p.add_argument("--out", required=True, help="output folder (never inside the input)")
    p.add_argument("--backend", choices=BACKENDS, default=SegInference().backend,
                   help=f"segmenter engine (default {SegInference().backend})")
    p.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-pages", action="store_true", help="skip the HTML pages (faster)")
    p.set_defaults(func=_diagnose)
    b = subparsers.add_parser("bundle", help="model bundles: `cmrprior bundle check MODEL` verifies one")
    bs = b.add_subparsers(dest="bundle_command", required=True)
    c = bs.add_parser("check", help="check a bundle's files against its manifest and its segmenter's sha256")
    c.add_argument("model", nargs="?", default=DEFAULT_BUNDLE, help="bundle folder or shipped name")
    c.set_defaults(func=_check)
