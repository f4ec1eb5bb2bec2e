"""The main job: every stage of the study on the synthetic phantom cohort (or a given cohort), in minutes.

`run_demo(out)` generates a phantom cohort (`cmrprior.data.phantom.generate_phantom`) into `out/phantom` and a
held-out cohort of new patients of the same phantom into `out/heldout` unless `data` is given, runs
`run_study` into `out/study` with `configs/demo.yaml` (the study shrunk to a few minutes on 2 CPU cores;
`config=load_config("cpu")` for the full CPU study), and then applies the study's exported Anatomy bundle to a
few more new phantom patients (`out/new_patients`) with `cmrprior diagnose` (`out/diagnose`), as a user
applies a finished study to the next patient. `answer_lines` says the result in a few lines. A rerun reuses
the phantom and every finished piece of the study.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cmrprior.experiments.config import StudyConfig, load_config
from cmrprior.experiments.study import StudyResult, run_study
from cmrprior.utils import atomic, timing
from cmrprior.utils.progress import format_duration

log = logging.getLogger(__name__)


def make_phantom(folder: Path, *, n_patients: int, seed: int, first_patient: int = 1) -> Path:
    """Generate the phantom cohort once (a `done.json` marker makes reruns reuse it); `first_patient` as
    `generate_phantom`'s."""
    marker = folder / "done.json"
    if marker.exists():
        return folder / "cohort"
    from cmrprior.data.phantom import generate_phantom

    t0 = time.monotonic()
    log.info("phantom: generating %d patients (seed %d) into %s", n_patients, seed, folder / "cohort")
    with timing.phase("phantom", items=n_patients):
        cohort = Path(generate_phantom(folder / "cohort", n_patients=n_patients, seed=seed, workers=2,
                                       first_patient=first_patient))
    atomic.write_json(marker, {"n_patients": n_patients, "seed": seed, "path": str(cohort),
                               **({"first_patient": first_patient} if first_patient != 1 else {})})
    log.info("phantom: %d patients done in %s", n_patients, format_duration(time.monotonic() - t0))
    return cohort


DEMO_NEW_PATIENTS = 3
# (study patients, held-out patients: new patients of the same phantom, scored once) of the phantom cohorts, by
# config name: the demo config's are smaller (the segmenter alone takes ~3 CPU s a patient); other configs (the
# CPU study) run on the 60-patient phantom.
PHANTOM_SIZES = {"demo": (40, 10)}
DEFAULT_PHANTOM_SIZE = (60, 20)


def phantom_size(config: StudyConfig) -> tuple[int, int]:
    """(study patients, held-out patients) of the demo's phantom cohorts with `config`."""
    return PHANTOM_SIZES.get(config.name, DEFAULT_PHANTOM_SIZE)


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
    with timing.phase("diagnose", items=DEMO_NEW_PATIENTS):
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
    n_patients: int | None = None,
    seed: int = 0,
    test_patients: int | None = None,
) -> StudyResult:
    """Run the demo study into `study_dir(out)`; returns where the tables, figure and report are.

    `config`: None = the built-in `demo` config. `n_patients`, `seed`: the phantom's; `test_patients`: the held-out
    cohort's (patients `n_patients + 1 ..` of the same phantom; 0: none); None: `phantom_size(config)`. All three
    are ignored with `data`.
    """
    out = Path(out)
    config = config or load_config("demo")
    sizes = phantom_size(config)
    n_patients = sizes[0] if n_patients is None else n_patients
    test_patients = sizes[1] if test_patients is None else test_patients
    phantom = data is None
    test = None
    if phantom:
        data = make_phantom(out / "phantom", n_patients=n_patients, seed=seed)
        # the phantom's masks are exact; the shipped segmenter is used like on real data
        if test_patients:
            test = make_phantom(out / "heldout", n_patients=test_patients, seed=seed, first_patient=n_patients + 1)
    result = run_study(data, study_dir(out), config, test_data=test)
    if phantom:
        page = diagnose_new_patients(out, result, seed=seed)
        if page is not None:
            log.info("diagnose: the exported Anatomy bundle on %d new patients: %s", DEMO_NEW_PATIENTS, page)
    return result


def _auc(entry: dict | None) -> str:
    """'0.912 [0.871, 0.953]' (mean macro AUC and its interval across splits) of a metrics.json or Table 4 row."""
    if not entry or entry.get("macro_auc") is None:
        return "not scored"
    text = f"{entry['macro_auc']:.3f}"
    if entry.get("t_low") is not None and entry.get("t_high") is not None:
        text += f" [{entry['t_low']:.3f}, {entry['t_high']:.3f}]"
    return text


def answer_lines(run_dir: str | Path, *, best: int = 3) -> list[str]:
    """The study's answer in a few plain lines, read from its tables: the primary analysis, the `best` image
    configurations by mean macro AUC (picked after the results, and said so), the Anatomy model and the best
    hybrid, and the held-out cohort's primary result. Missing tables give fewer lines, never an error."""
    from cmrprior.report.summary import read_json
    from cmrprior.runs import RunFolder
    from cmrprior.vocab import ANATOMY, init_label

    run = RunFolder(run_dir)
    config = StudyConfig.from_yaml(run.config_yaml) if run.config_yaml.exists() else None
    metrics = [m for m in read_json(run.tables / "metrics.json") or [] if isinstance(m, dict)
               and m.get("macro_auc") is not None]
    table4 = read_json(run.tables / "table4.json") or {}
    n_splits = config.protocol.n_splits if config else "?"
    lines = [f"macro AUC, mean [interval across {n_splits} splits]:"]

    def entry_of(primary: str, prefix: str) -> dict | None:
        if primary == ANATOMY:
            rows = (read_json(run.tables / f"{prefix}table4.json") or {}).get("rows") or []
            return rows[0] if rows else None
        found = [m for m in read_json(run.tables / f"{prefix}metrics.json") or []
                 if isinstance(m, dict) and f"{m.get('backbone')}/{m.get('init')}/{m.get('images')}" == primary]
        return found[0] if found else None

    primary = config.primary if config else None
    if primary:
        lines.append(f"  primary analysis ({'Anatomy model' if primary == ANATOMY else primary}, named before the "
                     f"results): {_auc(entry_of(primary, ''))}")
    if metrics:
        lines.append(f"  best image models ({min(best, len(metrics))} of {len(metrics)}, picked after the results):")
    for m in sorted(metrics, key=lambda m: -m["macro_auc"])[:best]:
        lines.append(f"    {m.get('backbone')}, {init_label(m.get('init', '?'))}, {m.get('images')} images: {_auc(m)}")
    rows = table4.get("rows") or []
    if rows and primary != ANATOMY:
        lines.append(f"  Anatomy model (cardiac measures): {_auc(rows[0])}")
    hybrids = [r for r in rows[1:] if str(r.get("model", "")).startswith("Hybrid") and r.get("macro_auc") is not None]
    if hybrids:
        top = max(hybrids, key=lambda r: r["macro_auc"])
        lines.append(f"  best hybrid ({top['model']}): {_auc(top)}")
    if primary and (run.tables / "holdout_metrics.json").exists():
        held = entry_of(primary, "holdout_") or {}
        text = "not scored" if held.get("macro_auc") is None else f"{held['macro_auc']:.3f}"
        if held.get("boot_low") is not None and held.get("boot_high") is not None:
            text += f" [{held['boot_low']:.3f}, {held['boot_high']:.3f}] (patient bootstrap)"
        lines.append(f"  held-out cohort, primary analysis (trained on every study patient, scored once): {text}")
    return lines
