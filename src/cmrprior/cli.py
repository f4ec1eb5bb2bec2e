"""Command-line interface: thin subcommands that build a config and call one library function.

Each stage package owns a `commands.py` with `register(subparsers)`; listed in COMMAND_MODULES.
Library code raises `CmrPriorError`; here it becomes one line on stderr and exit code 2.
Library code logs and never prints: here its INFO lines (progress of every long stage) go to stderr, or
only warnings and errors with `--quiet` (every subcommand has it); `study` and `demo` also write them to
the run folder's `log.txt`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cmrprior import __version__
from cmrprior.errors import CmrPriorError
from cmrprior.utils.logs import cli_logging

COMMAND_MODULES: list[str] = [
    "cmrprior.data.commands",
    "cmrprior.data.phantom_commands",
    "cmrprior.segmentation.commands",
    "cmrprior.ssl.commands",
    "cmrprior.experiments.prepare_command",
    "cmrprior.experiments.commands",
    "cmrprior.saliency.commands",
    "cmrprior.report.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmrprior", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cmrprior {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _add_quiet(parser)
    return parser


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """`--quiet` on every leaf subcommand (`cmrprior segment predict --quiet`, `cmrprior study --quiet`)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001 - no public API
    if not subs:
        if "--quiet" not in parser._option_string_actions:  # noqa: SLF001
            parser.add_argument("--quiet", action="store_true",
                                help="print only warnings and errors (progress lines still go to a run's log.txt)")
        return
    for child in dict.fromkeys(subs[0].choices.values()):
        _add_quiet(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with cli_logging(quiet=getattr(args, "quiet", False)):
            result = args.func(args)
    except CmrPriorError as exc:
        print(f"cmrprior {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmrprior {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
