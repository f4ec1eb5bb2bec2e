"""Cardiac measures from out-of-sample segmenter masks against the same measures from ACDC's expert masks.

    PYTHONPATH=src .venv/bin/python bench/measures_acdc.py [--data ACDC] [--limit N] [--threads T] [--model SET]
        [--rotations 15,-15]

Each ACDC training patient is segmented by the fold model (of the shipped set, or of `--model`) that never saw it
(`cmrprior.segmentation.measures.segmenter_masks` with the shipped set; expert masks are not read there);
the expert `_gt` masks are then read for the reference, and both are measured with
`cmrprior.anatomy.measure.measure_patient`. Prints MAE and bias (predicted - expert) of LVEF, RVEF (points),
LV/RV EDV and ESV (ml), myocardial mass (g), max and mean wall thickness (mm), the number of patients
with QC flags, and seconds per patient (segmentation + measures, and measures alone). `--rotations`: the
segmenter with test-time rotation averaging at these angles. Patients that every model of the set saw are named
and left out of the figures.
Figures are printed, never asserted; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from acdc_cohort import add_arguments, angles, open_cohort

KEYS = (("lvef", "points"), ("rvef", "points"), ("lv_edv_ml", "ml"), ("lv_esv_ml", "ml"), ("rv_edv_ml", "ml"),
        ("rv_esv_ml", "ml"), ("myo_mass_g", "g"), ("max_wall_thickness_mm", "mm"), ("mean_wall_thickness_mm", "mm"))


def main() -> int:
    from cmrprior.anatomy.measure import measure_patient
    from cmrprior.io.load import load_patient
    from cmrprior.segmentation.inference import SegInference
    from cmrprior.segmentation.measures import measure_row, segmenter_masks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--rotations", default="", help="test-time rotation angles in degrees, comma-separated")
    args = ap.parse_args()
    cohort = open_cohort(args)
    if cohort is None:
        return 1
    t0 = time.perf_counter()
    rotations = angles(args.rotations)
    print(f"test-time rotations: {list(rotations) or 'none'}")
    predicted = segmenter_masks(cohort, args.model, SegInference(rotations=rotations))
    t_seg = time.perf_counter() - t0
    by_id = {r.patient_id: r for r in cohort.patients}
    err: dict[str, list[float]] = {k: [] for k, _ in KEYS}
    models: dict[str, int] = {}
    flagged, t_measure = 0, 0.0
    inside = [p.record.patient_id for p in predicted if p.choice.out_of_sample is False]
    if inside:  # every model of the set saw them (e.g. one scan under two ids split across folds)
        print(f"left out, in-sample for every model of the set: {inside}")
    predicted = [p for p in predicted if p.choice.out_of_sample is not False]
    for p in predicted:
        t1 = time.perf_counter()
        row = measure_row(p)
        t_measure += time.perf_counter() - t1
        flagged += not row["qc_ok"]
        models[f"{p.choice.model.name} (out_of_sample={p.choice.out_of_sample})"] = models.get(
            f"{p.choice.model.name} (out_of_sample={p.choice.out_of_sample})", 0) + 1
        pred = measure_patient(p.ed, p.es, p.spacing_zyx, p.record.height_cm, p.record.weight_kg)
        pv = load_patient(by_id[p.record.patient_id])  # expert masks, read only here, for the reference
        ref = measure_patient(pv.ed_mask.array, pv.es_mask.array, pv.ed_mask.spacing)
        for k, _ in KEYS:
            err[k].append(getattr(pred, k) - getattr(ref, k))
    n = len(predicted)
    print(f"segmenters: {models}")
    print(f"{'measure':<24}{'MAE':>9}{'bias':>9}{'median AE':>11}  unit")
    for k, unit in KEYS:
        e = np.asarray(err[k], dtype=np.float64)
        e = e[np.isfinite(e)]
        print(f"{k:<24}{np.mean(np.abs(e)):9.2f}{np.mean(e):9.2f}{np.median(np.abs(e)):11.2f}  {unit} (n={e.size})")
    print(f"patients with QC flags: {flagged}/{n}")
    n_seg = n + len(inside)  # every patient was segmented
    print(f"seconds per patient: {t_seg / n_seg + t_measure / n:.2f} (segmentation {t_seg / n_seg:.2f}, measures "
          f"{t_measure / n:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
