"""Plots and the self-contained HTML report of a study run (`build_report`)."""

from cmrprior.report.build import build_report

__all__ = ["build_report"]
