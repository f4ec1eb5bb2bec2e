"""The command line as users meet it: `cmrprior --help` without torch, defaults from the config dataclasses,
a help text on every option, distinct exit codes for bad data and bad usage."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmrprior import cli

SRC = Path(__file__).resolve().parents[1] / "src"
# cmrprior.bundle.commands imports cmrprior.bundle.model (torch, SciPy) for DEFAULT_BUNDLE and SHIPPED and
# segmentation.inference for BACKENDS; bundle/ is owned elsewhere: the fix (a torch-free names module) is
# proposed to its owner. strict: once it lands this marker must go.
_BUNDLE_IMPORTS_TORCH = pytest.mark.xfail(strict=True, reason="cmrprior.bundle.commands imports torch at module level")


def _run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("module", [pytest.param(m, marks=_BUNDLE_IMPORTS_TORCH) if m.startswith("cmrprior.bundle")
                                    else m for m in cli.COMMAND_MODULES])
def test_registering_a_command_imports_no_torch(module):
    code = ("import argparse, importlib, sys\n"
            f"importlib.import_module({module!r}).register(argparse.ArgumentParser().add_subparsers())\n"
            "print(sorted(m for m in ('torch', 'monai', 'scipy', 'matplotlib') if m in sys.modules))")
    assert _run_python(code) == "[]"


@_BUNDLE_IMPORTS_TORCH
def test_help_imports_no_torch():
    code = "import sys; from cmrprior.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert _run_python(code) == "False"
