"""The run folder of `cmrprior study`: its layout, and the typed records written into it and read from it.

This module is the only place that knows where a study's pieces live. The study writes through it; the
saliency stage and the report read through it. The layout is versioned (`LAYOUT_VERSION`, recorded in
`RUN/run.json`); reading a folder of another version is refused with a clear error. The layout is
documented in `cmrprior/experiments/README.md`.

Records (JSON on disk, frozen dataclasses in memory): `RunInfo` (what every reader needs to rebuild a
cell's inputs without the study's config), `MasksOrigin` (where the heart masks come from), `SplitSpec`, `PretrainRecord` (`done.json` of one SimCLR
run), `CellResult` (`result.json` of one trained and scored classifier).
"""

from cmrprior.runs.folder import RunFolder
from cmrprior.runs.records import (
    DEFAULT_LEVEL,
    HOLDOUT,
    LAYOUT_VERSION,
    PAIRED_TEST_KEY,
    PHASES_CSV,
    STATUSES,
    CellKey,
    CellResult,
    EpochRecord,
    MasksOrigin,
    OutOfFold,
    PretrainRecord,
    RunInfo,
    SaliencyGrid,
    SplitSpec,
    TestMetrics,
    TestOutputs,
    labels_in_order,
    paired_test_of,
    read_json,
)

__all__ = ["DEFAULT_LEVEL", "HOLDOUT", "LAYOUT_VERSION", "PAIRED_TEST_KEY", "PHASES_CSV", "STATUSES", "CellKey", "CellResult", "EpochRecord", "MasksOrigin", "OutOfFold", "PretrainRecord",
           "RunFolder", "RunInfo", "SaliencyGrid", "SplitSpec", "TestMetrics", "TestOutputs", "labels_in_order", "paired_test_of",
           "read_json"]
