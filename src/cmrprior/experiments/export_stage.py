"""The study's exported models: every model family fitted on all study patients, as a bundle under
`RUN/models/<name>/` (`cmrprior.bundle`), and `RUN/models/recommended.json` naming the one the config's rule
recommends (the study's primary analysis, `primary:` in the config, fixed before any result is seen).

The anatomy bundle is the Anatomy model fitted exactly as the `--test` stage fits it (all study patients,
the same CV search and seed), so that `cmrprior diagnose` with it reproduces the held-out table's
probabilities. Its card carries the study's estimate for the Anatomy model on the repeated splits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from cmrprior.bundle.export import export_anatomy_bundle
from cmrprior.bundle.spec import Acquisition
from cmrprior.classify.anatomy import fit_anatomy
from cmrprior.errors import CmrPriorError
from cmrprior.evaluate.tables import summarise_cells
from cmrprior.experiments.anatomy_stage import AnatomyInputs
from cmrprior.experiments.config import StudyConfig
from cmrprior.io.cohort import open_cohort
from cmrprior.io.fingerprint import volume_fingerprint
from cmrprior.io.load import load_patient, read_image
from cmrprior.io.records import PatientRecord
from cmrprior.runs import CellResult, RunFolder
from cmrprior.utils import atomic
from cmrprior.utils.seeding import derive_seed

log = logging.getLogger(__name__)

ANATOMY_BUNDLE = "anatomy"


def training_scans(records: Sequence[PatientRecord]) -> tuple[list[Acquisition], list[str]]:
    """(the ED image's geometry of every patient, the ED and ES image fingerprints of these patients), each image
    read once. A cine given without its ED/ES frames has no such images until the frames are found: its geometry
    is read from frame 1 (every frame has the same), its fingerprints are left out, and that is logged."""
    acquisitions, prints, unknown = [], [], []
    for rec in records:
        if rec.cine is not None and (rec.ed_frame is None or rec.es_frame is None):
            unknown.append(rec.patient_id)
            vol = read_image(rec.ed_image, frame=rec.ed_frame or 1)
            acquisitions.append(Acquisition.of(vol.shape, vol.spacing))
            continue
        volumes = load_patient(dataclasses.replace(rec, ed_mask=None, es_mask=None))
        acquisitions.append(Acquisition.of(volumes.ed.shape, volumes.ed.spacing))
        prints += [volume_fingerprint(volumes.ed), volume_fingerprint(volumes.es)]  # as `patient_fingerprints`
    if unknown:
        log.warning("bundle: %d training patient(s) given as cines without ED/ES frames are not recognised by "
                    "`diagnose` as training patients (e.g. %s)", len(unknown), unknown[0])
    return acquisitions, prints


def fit_final_anatomy(patient_ids: Sequence[str], inputs: AnatomyInputs, classes: Sequence[str], config: StudyConfig):
    """The Anatomy model on every study patient (the `--test` stage's fit: same search, same seed)."""
    lut = {c: i for i, c in enumerate(classes)}
    return fit_anatomy([inputs.measures[p].values for p in patient_ids],
                       [lut[inputs.measures[p].label] for p in patient_ids], n_classes=len(classes),
                       config=config.anatomy, cv_folds=config.protocol.cv_folds,
                       seed=derive_seed(config.protocol.seed, "anatomy"), train_ids=list(patient_ids))


def estimate_of(results: list[CellResult], config: StudyConfig) -> dict:
    """The study's figures for one model family over its repeated splits (for the bundle's card)."""
    ev = config.evaluation
    summ = next(iter(summarise_cells(results, test_train_ratio=config.protocol.test_train_ratio, n_boot=ev.n_boot,
                                     seed=config.protocol.seed, level=ev.level).values()), None)
    if not summ or summ.get("macro_auc") is None:
        return {}
    return {"macro_auc": summ["macro_auc"], "macro_auc_interval": [summ["t_low"], summ["t_high"]],
            "macro_auc_bootstrap_interval": [summ["boot_low"], summ["boot_high"]],
            "accuracy": summ["accuracy"], "n_splits": summ["n_splits"],
            "protocol": f"{config.protocol.n_splits} patient-level stratified splits (seed {config.protocol.seed}); "
                        f"{100 * ev.level:.0f}% intervals: corrected resampled t and patient bootstrap"}


def export_models(run: RunFolder, data: str | Path, patient_ids: Sequence[str], classes: Sequence[str],
                  inputs: AnatomyInputs, anatomy_results: list[CellResult], config: StudyConfig) -> dict[str, Path]:
    """Write the bundles and `recommended.json`; returns name -> bundle folder. A failure is logged, never
    raised: the study's tables are already on disk."""
    if not config.export.enabled:
        return {}
    if config.masks.source != "segmenter":
        log.warning("no model bundles exported: the study used oracle masks, and a bundle's inputs must be masks "
                    "that its users can have (the segmenter's)")
        return {}
    out: dict[str, Path] = {}
    if config.anatomy.enabled:
        try:
            model = fit_final_anatomy(patient_ids, inputs, classes, config)
            recs = {r.patient_id: r for r in open_cohort(Path(data)).patients}
            acquisitions, prints = training_scans([recs[p] for p in patient_ids])
            out[ANATOMY_BUNDLE] = export_anatomy_bundle(
                run.bundle_dir(ANATOMY_BUNDLE), model, name=f"{config.name}-{ANATOMY_BUNDLE}", classes=classes,
                train_values=[inputs.measures[p].values for p in patient_ids],
                train_labels=[inputs.measures[p].label for p in patient_ids],
                acquisitions=acquisitions, segmenter=config.masks.model,
                estimate=estimate_of(anatomy_results, config), made_by=f"cmrprior study --data {data} (config {config.name})",
                training_fingerprints=prints)
        except CmrPriorError as exc:
            log.error("exporting the anatomy bundle failed: %s", exc)
    primary = config.primary
    if primary in out:
        atomic.write_json(run.recommended_json, {
            "recommended": primary, "bundle": str(out[primary].relative_to(run.root)),
            "rule": f"the study's primary analysis (primary: {primary!r} in the config, fixed before the results); "
                    "not chosen on any result"})
    else:
        atomic.write_json(run.recommended_json, {
            "recommended": None, "bundle": None,
            "rule": "no primary analysis named in the config (primary:)" if primary is None else
                    f"the primary analysis {primary!r} is not exported as a bundle (exported: {sorted(out) or 'none'})"})
    log.info("exported model bundles: %s (recommended: %s)", ", ".join(out) or "none", primary if primary in out else "none")
    return out
