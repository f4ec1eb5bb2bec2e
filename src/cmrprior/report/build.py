"""The study report: one self-contained HTML page per run folder (`RUN/report/index.html`).

`build_report(run_dir)` reads the run folder of `cmrprior study` through `cmrprior.runs.RunFolder` and
renders it; it computes nothing (the study writes the tables, the QC files and the mask flags, the saliency
stage its scores and grids). The page opens from disk with no network: every image is embedded as a base64
data URI. Sections, in order: the answer first (best configuration, main paired comparisons, masks source
and whether they were out-of-sample; `cmrprior.report.summary`), cohort summary, segmentation QC, Tables 1-3
(with CIs), paired comparisons, full versus segmented images (`cmrprior.report.full_vs_segmented`), metrics
per cell, the anatomy model and the hybrids (Table 4, its confusion matrix, feature importances, robustness),
ROC curves per class, confusion matrices, Figure 1 (convergence), in-heart saliency table,
saliency overlay grids, held-out cohort, configuration and software versions. A section whose inputs are
missing says so ("Not available: ...") instead of disappearing. The page is written atomically.

This module and its helpers import neither the saliency, experiments nor segmentation stages nor torch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import CmrPriorError, DataError
from cmrprior.report.anatomy import anatomy_section
from cmrprior.report.full_vs_segmented import full_vs_segmented_section
from cmrprior.report.html import render_page
from cmrprior.report.qc import segmentation_section
from cmrprior.report.sections import (config_section, cohort_section, confusion_section, figure1_section,
                                      pretraining_section, roc_section, saliency_grid_section, saliency_table_section,
                                      software_versions, tables_section)
from cmrprior.report.summary import summary_section
from cmrprior.runs import CellResult, RunFolder, RunInfo
from cmrprior.utils import atomic

__all__ = ["ReportInputs", "build_report", "load_inputs", "software_versions"]

log = logging.getLogger(__name__)

HOLDOUT_TABLES = tuple(f"holdout_{n}" for n in ("table1", "table2", "table3", "table4", "comparisons", "saliency"))


@dataclass(frozen=True, eq=False)
class ReportInputs:
    """What the report reads from a run folder (`prepared`: None when the prepared cohort is absent)."""

    run: RunFolder
    info: RunInfo
    study: dict | None
    cells: list[CellResult]  # repeated-split cells, any status, in table order
    prepared: PreparedCohort | None


def load_inputs(run_dir: str | Path) -> ReportInputs:
    """Read a run folder; raises DataError when it is missing or not a run of this layout version."""
    run = RunFolder(run_dir)
    if not run.root.is_dir():
        raise DataError(run.root, "run folder not found")
    info = run.info()
    return ReportInputs(run=run, info=info, study=_read_study(run), cells=run.cells(), prepared=_load_prepared(run))


def build_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report/index.html`; returns its path.

    Raises DataError when `run_dir` is not a run folder of this layout version (an older layout included).
    Missing parts of the run become explicit "Not available" notes in the page.
    """
    inputs = load_inputs(run_dir)
    run = inputs.run
    sections = [
        summary_section(run, inputs.info, inputs.study),
        cohort_section(run, inputs.info, inputs.study, inputs.prepared),
        segmentation_section(run, inputs.info, inputs.prepared),
        tables_section(run, ("table1", "table2", "table3"), "tables", "Tables 1-3: macro AUC with confidence intervals"),
        tables_section(run, ("comparisons",), "comparisons", "Paired comparisons"),
        full_vs_segmented_section(run),
        tables_section(run, ("metrics",), "metrics", "Metrics per configuration"),
        anatomy_section(run, inputs.info),
        roc_section(inputs.cells),
        confusion_section(inputs.cells),
        figure1_section(run),
        saliency_table_section(run),
        saliency_grid_section(run),
        tables_section(run, HOLDOUT_TABLES, "holdout", "Held-out cohort (--test)",
                       optional_note="the study was run without --test"),
        pretraining_section(run),
        config_section(run, inputs.study),
    ]
    root = run.root.resolve()
    subtitle = f"Run folder {root}; report written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}."
    page = render_page(f"cmrprior study report: {root.name}", subtitle, sections)
    path = atomic.write_text(run.report / "index.html", page)
    path.chmod(0o644)  # the temporary file of the atomic write is private (0600); a report is meant to be shared
    log.info("report: %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return path


def _read_study(run: RunFolder) -> dict | None:
    try:
        d = json.loads(run.study_json.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("report: cannot read %s (%s)", run.study_json, exc)
        return None
    return d if isinstance(d, dict) else None


def _load_prepared(run: RunFolder) -> PreparedCohort | None:
    folder = run.prepared()
    if not (folder / "cohort.json").exists():
        return None
    try:
        return PreparedCohort.load(folder)
    except (CmrPriorError, OSError, KeyError, ValueError) as exc:
        log.warning("report: cannot load %s (%s)", folder, exc)
        return None
