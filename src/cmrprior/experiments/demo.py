"""The main job: the study on the synthetic phantom cohort (or a given cohort) with `configs/cpu.yaml`.

`run_demo(out)` generates a phantom cohort (`cmrprior.data.phantom.generate_phantom`) into `out/phantom`
unless `data` is given, then runs `run_study` into `out`, and then applies the study's exported Anatomy bundle
to a few new phantom patients it never saw (`out/new_patients`) with `cmrprior diagnose` (`out/diagnose`),
as a user applies a finished study to the next patient. A rerun reuses the phantom and every finished piece of
the study.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cmrprior.experiments.config import StudyConfig, load_config
from cmrprior.experiments.study import StudyResult, run_study
from cmrprior.utils import atomic
from cmrprior.utils.progress import format_duration

log = logging.getLogger(__name__)


def make_phantom(folder: Path, *, n_patients: int, seed: int) -> Path:
    """Generate the phantom cohort once (a `done.json` marker makes reruns reuse it)."""
    marker = folder / "done.json"
    if marker.exists():
        return folder / "cohort"
    from cmrprior.data.phantom import generate_phantom

    t0 = time.monotonic()
    log.info("phantom: generating %d patients (seed %d) into %s", n_patients, seed, folder / "cohort")
    cohort = Path(generate_phantom(folder / "cohort", n_patients=n_patients, seed=seed, workers=2))
    atomic.write_json(marker, {"n_patients": n_patients, "seed": seed, "path": str(cohort)})
    log.info("phantom: %d patients done in %s", n_patients, format_duration(time.monotonic() - t0))
    return cohort


DEMO_NEW_PATIENTS = 3


def diagnose_new_patients(out: Path, study: StudyResult, *, seed: int) -> Path | None:
    """`cmrprior diagnose` with the study's exported Anatomy bundle on `DEMO_NEW_PATIENTS` new phantom patients
    (another seed); returns the cohort page, or None when the study exported no bundle."""
    from cmrprior.bundle.diagnose import diagnose
    from cmrprior.bundle.model import load_bundle
    from cmrprior.runs import RunFolder

    folder = RunFolder(study.run_dir).bundle_dir("anatomy")
    if not (folder / "manifest.json").exists():
        return None
    new = make_phantom(out / "new_patients", n_patients=DEMO_NEW_PATIENTS, seed=seed + 1000)
    table = diagnose(load_bundle(folder), new, out / "diagnose")
    for d in table.patients:
        log.info("diagnose %s (a new patient, truly %s): %s", d.patient_id, d.label,
                 d.predicted_label or f"refused: {d.reason}")
    return out / "diagnose" / "index.html"


def study_dir(out: str | Path) -> Path:
    """The study's run folder inside the demo folder `out` (the phantom is in `out/phantom`)."""
    return Path(out) / "study"


def run_demo(
    out: str | Path,
    *,
    data: str | Path | None = None,
    config: StudyConfig | None = None,
    n_patients: int = 60,
    seed: int = 0,
) -> StudyResult:
    """Run the demo study into `study_dir(out)`; returns where the tables, figure and report are.

    `config`: None = the built-in `cpu` config. `n_patients`, `seed`: the phantom's (ignored with `data`).
    """
    out = Path(out)
    config = config or load_config("cpu")
    phantom = data is None
    if phantom:
        data = make_phantom(out / "phantom", n_patients=n_patients, seed=seed)
        # the phantom's masks are exact; the shipped segmenter is used like on real data
    result = run_study(data, study_dir(out), config)
    if phantom:
        page = diagnose_new_patients(out, result, seed=seed)
        if page is not None:
            log.info("diagnose: the exported Anatomy bundle on %d new patients: %s", DEMO_NEW_PATIENTS, page)
    return result
