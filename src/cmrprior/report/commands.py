"""CLI: `cmrprior report RUN` (the self-contained HTML report of a study run)."""

from __future__ import annotations

import argparse


def _report(args: argparse.Namespace) -> int:
    from cmrprior.report.build import build_report

    path = build_report(args.run)
    print(f"report: {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write RUN/report/index.html (self-contained, opens from disk); it renders "
                              "what the run holds: `cmrprior study` runs the saliency stage, else `cmrprior saliency`")
    p.add_argument("run", help="study run folder (from `cmrprior study`)")
    p.set_defaults(func=_report)
