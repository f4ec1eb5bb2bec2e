"""Shared helpers of the report tests: the fake study run of tests/saliency (built once per process)."""

from __future__ import annotations

import sys
from pathlib import Path

_SALIENCY_TESTS = str(Path(__file__).resolve().parents[1] / "saliency")
if _SALIENCY_TESTS not in sys.path:
    sys.path.insert(0, _SALIENCY_TESTS)

from fake_run import CLASSES, build_fake_run, shared_run_with_saliency  # noqa: E402

__all__ = ["CLASSES", "build_fake_run", "shared_run_with_saliency", "shared_report"]

_REPORT: dict[str, Path] = {}


def shared_report() -> Path:
    """`build_report` of the shared fake run (built once per process; tests only read it)."""
    if "page" not in _REPORT:
        from cmrprior.report import build_report

        _REPORT["page"] = build_report(shared_run_with_saliency())
    return _REPORT["page"]
