"""The main job: the study on the synthetic phantom cohort (or a given cohort) with `configs/cpu.yaml`.

`run_demo(out)` generates a phantom cohort (`cmrprior.data.phantom.generate_phantom`) into `out/phantom`
unless `data` is given, then runs `run_study` into `out`. A rerun reuses the phantom and every finished
piece of the study.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cmrprior.experiments.config import StudyConfig, load_config
from cmrprior.experiments.study import StudyResult, run_study
from cmrprior.utils import atomic

log = logging.getLogger(__name__)


def make_phantom(folder: Path, *, n_patients: int, seed: int) -> Path:
    """Generate the phantom cohort once (a `done.json` marker makes reruns reuse it)."""
    marker = folder / "done.json"
    if marker.exists():
        return folder / "cohort"
    from cmrprior.data.phantom import generate_phantom

    cohort = Path(generate_phantom(folder / "cohort", n_patients=n_patients, seed=seed, workers=2))
    atomic.write_json(marker, {"n_patients": n_patients, "seed": seed, "path": str(cohort)})
    return cohort


def run_demo(
    out: str | Path,
    *,
    data: str | Path | None = None,
    config: StudyConfig | None = None,
    n_patients: int = 60,
    seed: int = 0,
) -> StudyResult:
    """Run the demo study; returns where the tables, figure and report are."""
    out = Path(out)
    config = config or load_config("cpu")
    if data is None:
        data = make_phantom(out / "phantom", n_patients=n_patients, seed=seed)
        # the phantom's masks are exact; the shipped segmenter is used like on real data
    return run_study(data, out / "study", config)
