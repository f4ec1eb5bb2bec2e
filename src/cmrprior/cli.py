"""Command-line interface: thin subcommands that build a config and call one library function.

Each stage package owns a `commands.py` with `register(subparsers)`; listed in COMMAND_MODULES.
Library code raises `CmrPriorError`; here it becomes one line on stderr and an exit code (`EXIT_CODES`):
3 for bad input data (`DataError`: a file or folder that cannot be read or is wrong), 2 for bad usage (argparse's
own usage errors, `ConfigError`) and every other `CmrPriorError`; 130 when interrupted. An OSError (disk full,
read-only folder, ...; `cmrprior.utils.atomic` names the file it was writing) is one line and exit code 2;
a closed output pipe (`... | head`) ends quietly with 141, as a shell's SIGPIPE would.
Library code logs and never prints: here its INFO lines (progress of every long stage) go to stderr, or
only warnings and errors with `--quiet` (every subcommand has it); `study` and `demo` also write them to
the run folder's `log.txt`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from cmrprior import __version__
from cmrprior.errors import CmrPriorError, DataError
from cmrprior.utils.atomic import os_error_line
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
    "cmrprior.bundle.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmrprior", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cmrprior {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _add_quiet(parser)
    _user_help(parser)
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the text already says it or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        nothing = default is None or default is False or default is argparse.SUPPRESS or default in ([], ())
        if nothing or "default" in text.lower():
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: %(default)s)"


def _user_help(parser: argparse.ArgumentParser) -> None:
    """Every parser shows the defaults (`_HelpFormatter`); a subcommand's `--help` opens with its one-line help."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:  # noqa: SLF001 - no public API
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            lines = {a.dest: a.help for a in action._choices_actions}  # noqa: SLF001
            for name, child in action.choices.items():
                if child.description is None:
                    child.description = lines.get(name)
                _user_help(child)


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """`--quiet` on every leaf subcommand (`cmrprior segment predict --quiet`, `cmrprior study --quiet`)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001 - no public API
    if not subs:
        if "--quiet" not in parser._option_string_actions:  # noqa: SLF001
            parser.add_argument("--quiet", action="store_true",
                                help="print only warnings and errors, no progress bars (a run's log.txt still gets "
                                     "every progress line)")
        return
    for child in dict.fromkeys(subs[0].choices.values()):
        _add_quiet(child)


# exit code of an error, the first matching type wins: bad data (3) apart from bad usage (2, as argparse's own)
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = ((DataError, 3), (CmrPriorError, 2))


def exit_code(exc: BaseException) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with cli_logging(quiet=getattr(args, "quiet", False)):
            result = args.func(args)
    except CmrPriorError as exc:
        print(f"cmrprior {args.command}: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:  # the reader went away (`cmrprior study --status RUN | head`): not the run's error
        _silence_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE
    except OSError as exc:  # disk full, read-only or unwritable folder, a path through a file: one line
        print(f"cmrprior {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmrprior {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130
    return int(result or 0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout replaced by an object without a file descriptor
        pass


if __name__ == "__main__":
    raise SystemExit(main())
