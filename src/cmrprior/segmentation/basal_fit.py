"""`cmrprior segment fit-basal`: fit the basal-slice models of a segmenter set and measure what they change.

For a segmenter set (`cmrprior.segmentation.folds`) and the labelled cohort its models were trained on:

1. Every patient is segmented by a model of the set that never saw it (`SegmenterSet.choose`), without the
   basal correction (`locate_cohort(correct=False)`). A patient every model saw (the same images under
   another id in another fold, as ACDC's patient074 and patient076) is left out, with a warning.
2. For each model of the set, a basal model (`cmrprior.segmentation.basal.fit_basal_model`: the RV and the LV
   decisions) is fitted on the patients that model was trained on: their out-of-sample masks against their expert masks. A patient is
   therefore never corrected by a basal model fitted on its own expert masks. (Its masks did train the
   other fold models, whose masks of the training patients the basal model learns from: a second-order
   link, as for any model fitted on out-of-sample masks.)
3. Each patient's masks are corrected with the basal model of the segmenter that made them, and both
   versions are scored against the expert masks: 3D Dice per structure and phase in the image's own
   geometry.

Writes `OUT/<weights stem>.basal.json` per model (copy each beside its weights to use it) and
`OUT/basal_cv.csv` (patient_id, segmenter, phase, structure, dice_before, dice_after). Expert masks are read
here: this is segmenter training, not the user's path.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.io.cohort import open_cohort
from cmrprior.segmentation.basal import basal_path, correct_basal, fit_basal_model
from cmrprior.segmentation.folds import fingerprint_cohort, load_segmenter_set, verify
from cmrprior.segmentation.measures import given_masks
from cmrprior.segmentation.qc import STRUCTURES, dice, write_csv
from cmrprior.segmentation.volumes import locate_cohort
from cmrprior.utils.runfolder_checks import check_out_dir

log = logging.getLogger(__name__)

CV_CSV = "basal_cv.csv"
CV_COLUMNS = ("patient_id", "segmenter", "phase", "structure", "dice_before", "dice_after")


def fit_basal_set(data: str | Path, set_folder: str | Path, out: str | Path) -> Path:
    """Steps 1-3 of the module doc; returns `out`.

    Raises:
        ConfigError: `out` inside `data` or `set_folder`. DataError: a patient without expert masks, a set
        whose weights differ from its index, no patient that a model of the set left out.
    """
    data, set_folder, out = Path(data), Path(set_folder), Path(out)
    check_out_dir(out, [data, set_folder])
    cohort = open_cohort(data)
    lacking = [r.patient_id for r in cohort.patients if not r.has_masks]
    if lacking:
        raise DataError(data, f"fit-basal needs expert ED/ES masks; patients {lacking[:5]} ({len(lacking)} in all) "
                              "have none")
    seg_set = load_segmenter_set(set_folder)
    verify(seg_set)
    choices = {pid: seg_set.choose(pid, fps, strict=False) for pid, fps in fingerprint_cohort(cohort).items()}
    seen = [pid for pid, c in choices.items() if not c.out_of_sample]
    if seen:
        log.warning("fit-basal: every model of the set saw patients %s: left out", seen)
        choices = {pid: c for pid, c in choices.items() if c.out_of_sample}
        cohort = dataclasses.replace(cohort, patients=tuple(r for r in cohort.patients if r.patient_id in choices))
    if not choices:
        raise DataError(set_folder, "no patient of the cohort was left out by a model of this set")
    blind = dataclasses.replace(cohort, patients=tuple(dataclasses.replace(r, ed_mask=None, es_mask=None)
                                                       for r in cohort.patients))
    locations = locate_cohort(blind, models={pid: c.model.weights for pid, c in choices.items()}, correct=False)
    predicted = {pid: (loc.ed_labels, loc.es_labels) for pid, loc in locations.items()}
    expert = {p.record.patient_id: (p.ed, p.es) for p in given_masks(cohort)}
    basal = {}
    for m in (seg_set.full, *seg_set.folds):
        ids = [r.patient_id for r in cohort.patients if r.patient_id in m.patients]
        if not ids:
            log.warning("fit-basal: %s was trained on none of this cohort's patients; no basal model", m.name)
            continue
        basal[m.name] = fit_basal_model([predicted[p] for p in ids], [expert[p] for p in ids],
                                        segmenter_sha256=m.sha256)
        path = basal[m.name].save(out / basal_path(m.weights).name)
        lv = basal[m.name].lv
        log.info("fit-basal: %s, %d patients, %d candidate slices with RV, %s with LV -> %s", m.name, len(ids),
                 basal[m.name].rv.n_slices, lv.n_slices if lv else "no decision (one class)", path)
    rows = []
    for pid, choice in choices.items():
        after = correct_basal(*predicted[pid], basal.get(choice.model.name))
        for k, phase in enumerate(("ED", "ES")):
            truth = np.rint(expert[pid][k]).astype(np.int16)
            for value, name in STRUCTURES.items():
                rows.append({"patient_id": pid, "segmenter": choice.model.name, "phase": phase, "structure": name,
                             "dice_before": dice(predicted[pid][k] == value, truth == value),
                             "dice_after": dice(after[k] == value, truth == value)})
    write_csv(rows, out / CV_CSV, CV_COLUMNS)
    for phase in ("ED", "ES"):
        for name in STRUCTURES.values():
            sel = [r for r in rows if r["phase"] == phase and r["structure"] == name]
            log.info("fit-basal: %s %s Dice %.4f -> %.4f (mean over %d patients)", phase, name,
                     np.nanmean([r["dice_before"] for r in sel]), np.nanmean([r["dice_after"] for r in sel]), len(sel))
    return out
