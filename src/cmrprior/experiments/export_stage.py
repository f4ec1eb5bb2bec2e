"""The study's exported models: every model family fitted on all study patients, as a bundle under
`RUN/models/<name>/` (`cmrprior.bundle`), and `RUN/models/recommended.json` naming the one the config's rule
recommends (the study's primary analysis, `primary:` in the config, fixed before any result is seen).

Bundles, named as the tables name the models:
- `anatomy`: the Anatomy model fitted exactly as the `--test` stage fits it (all study patients, the same CV
  search and seed);
- `<backbone>-<init>-<images>` (e.g. `densenet121-segmented_sscl-segmented`): each image cell's `--test`
  model (trained on all study patients, `RUN/holdout/cells/...`), its weights converted to safetensors, with
  the study's preparation settings (`cmrprior.bundle.image`);
- `<backbone>-<init>-<images>+measures`: each hybrid of the `--test` stage, its fusion fitted again exactly as
  that stage fitted it (`fit_cell_hybrid`, checked against the recorded held-out probabilities).
So `cmrprior diagnose` with any of them reproduces the held-out table's probabilities. Image cells and hybrids
exist only when the study ran with `--test` (the only models it fits on all its patients). Each card carries
the study's estimate for that model family on the repeated splits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmrprior.bundle.export import export_anatomy_bundle, export_image_bundle
from cmrprior.bundle.image import Preparation, image_spec
from cmrprior.bundle.spec import Acquisition
from cmrprior.classify.anatomy import fit_anatomy
from cmrprior.errors import CmrPriorError, DataError
from cmrprior.evaluate.tables import summarise_cells
from cmrprior.experiments.anatomy_stage import AnatomyInputs
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.hybrid_stage import fit_cell_hybrid
from cmrprior.io.cohort import open_cohort
from cmrprior.io.fingerprint import volume_fingerprint
from cmrprior.io.load import load_patient, read_image
from cmrprior.io.records import PatientRecord
from cmrprior.runs import HOLDOUT, CellResult, RunFolder, SplitSpec
from cmrprior.utils import atomic
from cmrprior.utils.seeding import derive_seed
from cmrprior.vocab import hybrid_images

log = logging.getLogger(__name__)

ANATOMY_BUNDLE = "anatomy"


def bundle_name(backbone: str, init: str, images: str) -> str:
    """The folder name under `RUN/models/` of an image cell's bundle (a hybrid's `images` end in `+measures`)."""
    return f"{backbone}-{init}-{images}"


def primary_bundle(primary: str | None) -> str | None:
    """The bundle name of the config's primary analysis ("anatomy" or "backbone/init/images")."""
    if primary is None or primary == ANATOMY_BUNDLE:
        return primary
    return bundle_name(*primary.split("/"))


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
                       seed=derive_seed(config.protocol.seed, "anatomy"), train_ids=list(patient_ids),
                       class_names=list(classes))


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
                  inputs: AnatomyInputs, anatomy_results: list[CellResult], config: StudyConfig, *,
                  image_results: Sequence[CellResult] = (), holdout_inputs: AnatomyInputs | None = None
                  ) -> dict[str, Path]:
    """Write the bundles and `recommended.json`; returns name -> bundle folder. `image_results`: the image cells
    of the repeated splits (their estimates go into the cards); `holdout_inputs`: the measures of the study and
    `--test` patients (the hybrids' refit). A failure is logged, never raised: the study's tables are already on
    disk."""
    if not config.export.enabled:
        return {}
    if config.masks.source != "segmenter":
        log.warning("no model bundles exported: the study used oracle masks, and a bundle's inputs must be masks "
                    "that its users can have (the segmenter's)")
        return {}
    out: dict[str, Path] = {}
    cells = [c for c in run.cells(holdout=True) if c.ok and run.model_path(c.key).exists()]
    if not config.anatomy.enabled and not cells:
        _recommend(run, out, config)
        return out
    recs = {r.patient_id: r for r in open_cohort(Path(data)).patients}
    acquisitions, prints = training_scans([recs[p] for p in patient_ids])
    common = dict(classes=classes, acquisitions=acquisitions, segmenter=config.masks.model,
                  made_by=f"cmrprior study --data {data} (config {config.name})", training_fingerprints=prints)
    model = None
    if config.anatomy.enabled:
        try:
            model = fit_final_anatomy(patient_ids, inputs, classes, config)
            out[ANATOMY_BUNDLE] = export_anatomy_bundle(
                run.bundle_dir(ANATOMY_BUNDLE), model, name=f"{config.name}-{ANATOMY_BUNDLE}",
                train_values=[inputs.measures[p].values for p in patient_ids],
                train_labels=[inputs.measures[p].label for p in patient_ids],
                estimate=estimate_of(anatomy_results, config), **common)
        except CmrPriorError as exc:
            log.error("exporting the anatomy bundle failed: %s", exc)
    measured = [p for p in patient_ids if p in inputs.measures]
    values = [inputs.measures[p].values for p in measured]
    labels = [recs[p].label for p in patient_ids]
    for cell in cells:
        name = bundle_name(*cell.key.config)
        try:
            image = _image_of(run, cell, config)
            same = [r for r in image_results if r.key.config == cell.key.config]
            out[name] = export_image_bundle(run.bundle_dir(name), image, name=f"{config.name}-{name}",
                                            train_values=values if len(values) == len(labels) else [],
                                            train_labels=labels, estimate=estimate_of(same, config), **common)
        except CmrPriorError as exc:
            log.error("exporting the image bundle %s failed: %s", name, exc)
            continue
        if model is not None and holdout_inputs is not None:
            out.update(_export_hybrid(run, cell, image, model, holdout_inputs, patient_ids, config, common))
    _recommend(run, out, config)
    log.info("exported model bundles: %s (recommended: %s)", ", ".join(out) or "none",
             primary_bundle(config.primary) if primary_bundle(config.primary) in out else "none")
    return out


def _image_of(run: RunFolder, cell: CellResult, config: StudyConfig) -> tuple[dict, dict]:
    """The bundle description and arrays of a `--test` image cell's saved model (read as weights only)."""
    import torch

    try:
        payload = torch.load(run.model_path(cell.key), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(run.model_path(cell.key), f"unreadable model ({exc})") from None
    preparation = Preparation(config.prepare, config.image_spec(cell.key.images), config.classifier.input_size)
    return image_spec(payload, init=cell.key.init, mode=cell.mode, preparation=preparation,
                      batch_size=config.classifier.feature_batch_size)


def _export_hybrid(run: RunFolder, cell: CellResult, image: tuple[dict, dict], model, inputs: AnatomyInputs,
                   patient_ids: Sequence[str], config: StudyConfig, common: dict) -> dict[str, Path]:
    """The hybrid bundle of a `--test` image cell whose hybrid the study fitted (none otherwise)."""
    key = dataclasses.replace(cell.key, images=hybrid_images(cell.key.images))
    recorded = run.read_cell(key)
    if recorded is None or not recorded.ok:
        return {}
    name = bundle_name(*key.config)
    split = SplitSpec(HOLDOUT, config.protocol.seed, tuple(patient_ids), tuple(cell.test.patient_ids))
    fit = fit_cell_hybrid(split, model, inputs, cell)
    if fit.choice != recorded.mode or not np.allclose(fit.test_probabilities, recorded.test.probabilities,
                                                      rtol=0, atol=1e-9):
        log.error("hybrid bundle %s not exported: its refit (%s) differs from the study's (%s)", name, fit.choice,
                  recorded.mode)
        return {}
    same = [r for r in run.hybrid_results() if r.key.config == key.config]
    try:
        return {name: export_image_bundle(run.bundle_dir(name), image, name=f"{config.name}-{name}", anatomy=model,
                                          fusion=fit.fusion, fusion_choice=fit.choice,
                                          train_values=[inputs.measures[p].values for p in patient_ids],
                                          train_labels=[inputs.measures[p].label for p in patient_ids],
                                          estimate=estimate_of(same, config), **common)}
    except CmrPriorError as exc:
        log.error("exporting the hybrid bundle %s failed: %s", name, exc)
        return {}


def _recommend(run: RunFolder, out: dict[str, Path], config: StudyConfig) -> None:
    primary = primary_bundle(config.primary)
    if primary in out:
        atomic.write_json(run.recommended_json, {
            "recommended": primary, "bundle": str(out[primary].relative_to(run.root)),
            "rule": f"the study's primary analysis (primary: {config.primary!r} in the config, fixed before the "
                    "results); not chosen on any result"})
    else:
        atomic.write_json(run.recommended_json, {
            "recommended": None, "bundle": None,
            "rule": "no primary analysis named in the config (primary:)" if primary is None else
                    f"the primary analysis {config.primary!r} is not exported as a bundle (exported: "
                    f"{sorted(out) or 'none'}; image cells are exported only by a study run with --test)"})
