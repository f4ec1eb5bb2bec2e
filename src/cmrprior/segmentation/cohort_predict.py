"""`cmrprior segment predict`: masks for every patient of a cohort, written in each input's own geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmrprior.io.cohort import open_cohort
from cmrprior.io.load import as_mask, read_cine, read_image
from cmrprior.io.nifti import write_nifti
from cmrprior.segmentation import qc
from cmrprior.segmentation.inference import SegInference, load_for_inference
from cmrprior.segmentation.mask_index import MaskIndex, planned_origins
from cmrprior.segmentation.overlay import save_overlay
from cmrprior.segmentation.phases import resolve_cohort_phases
from cmrprior.segmentation.basal import basal_model_for, correct_basal
from cmrprior.segmentation.predict import default_model_path, file_sha256
from cmrprior.segmentation.volumes import predict_volume
from cmrprior.utils.filenames import mask_filename, patient_filename
from cmrprior.utils.runfolder_checks import check_out_dir


def _settings(inference: SegInference | None, include_cine: bool) -> dict:
    """The inference settings a mask depends on, as recorded in the mask index (JSON-ready)."""
    inference = inference or SegInference()
    return {"backend": inference.backend, "rotations": [float(r) for r in inference.rotations], "cine": include_cine}


def predict_cohort(
    data: str | Path, out: str | Path, *, model_path: str | Path | None = None, include_cine: bool = True,
    overlays: int = 3, inference: SegInference | None = None,
) -> list[dict]:
    """Segment every patient of a cohort (ACDC folder or manifest CSV) into `out`.

    Writes `out/<patient>/<patient>_ED_seg.nii.gz`, `_ES_seg.nii.gz` and, when the record has a cine (4D NIfTI or
    DICOM cine folder) and `include_cine`, `_cine_seg.nii.gz` `(X, Y, Z, T)`; every mask keeps its input's
    NIfTI header (`pixdim`, qform/sform and codes) or, for DICOM input, the DICOM geometry as qform/sform
    (code 1, scanner) with `pixdim` = the DICOM spacing. The ED and ES masks are corrected together at the
    base (`cmrprior.segmentation.basal.correct_basal`, with the model's basal model when it has one), as the
    study's are, when their shapes agree (the study refuses a pair that does not). ES and cine frames are
    segmented around ED's heart centre (found on ED's whole field of view), as in the study; cine frames, whose
    phase is not known, are written as the network labels them. `<patient>` is `patient_filename(patient_id)`.
    Records with only a cine get their ED/ES frames from `resolve_cohort_phases` (same model); `out/qc.csv` (flags per volume, Dice/Hausdorff where
    ground-truth masks exist) and `out/overlays/<patient>.png` (`overlays` slices per phase). `inference`
    chooses the engine (`cmrprior.segmentation.inference`; default eager PyTorch). Returns the QC rows.

    `out/masks_index.json` records the model (sha256), inputs and settings of every patient's masks
    (`cmrprior.segmentation.mask_index`).

    Raises:
        ConfigError: `out` inside the input folder, or holding masks another model or other inputs made.
        DataError: unreadable input, bad volumes.
        WeightsUnavailableError: no model given and none shipped.
    """

    data, out = Path(data), Path(out)
    check_out_dir(out, [data])

    cohort, _ = resolve_cohort_phases(open_cohort(data), model_path=model_path, inference=inference)
    weights = Path(model_path) if model_path is not None else default_model_path()
    model, args, _, _ = load_for_inference(weights, inference)
    sha = file_sha256(weights)
    basal = basal_model_for(weights, sha)
    index = MaskIndex(out)  # which model made which mask: a used folder is refused unless it is this run's own
    plans = planned_origins(out, cohort, sha, _settings(inference, include_cine))
    index.check(plans)
    rows: list[dict] = []
    for rec in cohort.patients:
        name = patient_filename(rec.patient_id)
        pdir = out / name
        index.record(rec.patient_id, plans[rec.patient_id], [pdir / mask_filename(name, k) for k in ("ED", "ES")]
                     + ([pdir / mask_filename(name, "cine")] if include_cine and rec.cine is not None else []))
        shown = {}
        phases = (("ED", rec.ed_image, rec.ed_mask, rec.ed_frame), ("ES", rec.es_image, rec.es_mask, rec.es_frame))
        vols = [read_image(img_path, frame=frame) for _, img_path, _, frame in phases]
        ed = predict_volume(model, vols[0], divisor=args.divisor)
        # ES (and the cine) around ED's heart centre, as the study segments a patient (`locate_heart`)
        centre = None if ed.blank else ed.centre
        es_centre = centre if vols[1].shape == vols[0].shape else None
        preds = [ed, predict_volume(model, vols[1], divisor=args.divisor, centre=es_centre)]
        labels = [p.labels for p in preds]
        if labels[0].shape == labels[1].shape:
            labels = list(correct_basal(labels[0], labels[1], basal))
        for (phase, _, mask_path, frame), vol, lab in zip(phases, vols, labels):
            write_nifti(lab, None, pdir / mask_filename(name, phase), like=vol)
            row = {"patient_id": rec.patient_id, "phase": phase, "source": str(vol.path)}
            row.update(qc.image_flags(vol.array))
            row.update(qc.mask_flags(lab))
            if mask_path is not None:
                truth = as_mask(read_image(mask_path, frame=frame), vol).array
                row.update(qc.structure_metrics(lab, truth, vol.spacing))
            rows.append(row)
            shown[phase] = (vol.array, lab)
        if include_cine and rec.cine is not None:
            frames = read_cine(rec.cine).frames
            cine = np.stack([predict_volume(model, f, divisor=args.divisor, centre=centre).labels for f in frames],
                            axis=-1)
            write_nifti(cine, None, pdir / mask_filename(name, "cine"), like=frames[0])
        if overlays > 0:
            save_overlay(shown, out / "overlays" / f"{name}.png", n_slices=overlays, title=rec.patient_id)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in rows[0], list(rows[0]).index(k) if k in rows[0] else 0))
    qc.write_csv([{k: r.get(k, "") for k in keys} for r in rows], out / "qc.csv")
    return rows
