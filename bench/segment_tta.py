"""Test-time rotation averaging on ACDC: native Dice of out-of-sample masks with and without it, paired.

    PYTHONPATH=src .venv/bin/python bench/segment_tta.py [--data ACDC] [--model SET] [--threads 2]
        [--rotations "15,-15" "20,-20" ...] [--limit N]

Each ACDC training patient is segmented as a user's patient is (`cmrprior.segmentation.measures.segmenter_masks`:
the fold model of the shipped set, or of `--model`, that never saw it; heart found on the whole field of view;
basal correction; expert masks unread), once with one pass and once per rotation setting
(`SegInference.rotations`). The expert `_gt` masks are read afterwards for the reference. Prints, per setting,
the 3D Dice in each image's own geometry per structure (mean over ED and ES, then ES alone) with 95% t-intervals
over patient-phases, the paired difference against one pass with its interval, and the seconds per patient.
Patients that every model of the set saw are named and left out. Figures are printed, never asserted; nothing
is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from acdc_cohort import add_arguments, angles, open_cohort


def dice_table(predicted, expert) -> dict[tuple[str, str], np.ndarray]:
    """(phase, structure) -> Dice per patient, patients in `predicted`'s order."""
    from cmrprior.segmentation.qc import STRUCTURES, dice

    out: dict[tuple[str, str], list[float]] = {}
    for p in predicted:
        truth = expert[p.record.patient_id]
        for phase, pred, gt in (("ED", p.ed, truth.ed), ("ES", p.es, truth.es)):
            gt = np.rint(gt).astype(np.int16)
            for value, name in STRUCTURES.items():
                out.setdefault((phase, name), []).append(dice(pred == value, gt == value))
    return {k: np.array(v) for k, v in out.items()}


def pooled(table: dict[tuple[str, str], np.ndarray], structure: str, phases: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([table[(ph, structure)] for ph in phases])


def main() -> int:
    from cmrprior.segmentation.inference import SegInference
    from cmrprior.segmentation.measures import given_masks, segmenter_masks
    from cmrprior.segmentation.qc import STRUCTURES, mean_ci

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--rotations", nargs="+", default=["15,-15"], help="one comma-separated angle list per setting")
    args = ap.parse_args()
    cohort = open_cohort(args)
    if cohort is None:
        return 1
    settings = [()] + [angles(r) for r in args.rotations]
    segmenter_masks(dataclasses.replace(cohort, patients=cohort.patients[:1]), args.model)  # warm-up, not timed
    tables, seconds = {}, {}
    for rotations in settings:
        t0 = time.perf_counter()
        predicted = segmenter_masks(cohort, args.model, SegInference(rotations=rotations))
        seconds[rotations] = (time.perf_counter() - t0) / len(predicted)
        inside = [p.record.patient_id for p in predicted if p.choice.out_of_sample is False]
        if inside and not rotations:
            print(f"left out, in-sample for every model of the set: {inside}")
        predicted = [p for p in predicted if p.choice.out_of_sample is not False]
        if not tables:
            kept = {p.record.patient_id for p in predicted}
            expert = {m.record.patient_id: m for m in given_masks(dataclasses.replace(
                cohort, patients=tuple(r for r in cohort.patients if r.patient_id in kept)))}
        tables[rotations] = dice_table(predicted, expert)
    base = tables[()]
    for rotations, table in tables.items():
        name = "one pass" if not rotations else f"rotations {list(rotations)}"
        print(f"\n{name}: {seconds[rotations]:.2f} s per patient (ED + ES, segmentation with basal correction)")
        for phases, label in ((("ED", "ES"), "ED+ES"), (("ES",), "ES")):
            parts = []
            for structure in STRUCTURES.values():
                m, lo, hi, n = mean_ci(pooled(table, structure, phases))
                part = f"{structure} {m:.4f} [{lo:.4f}, {hi:.4f}]"
                if rotations:
                    d, dlo, dhi, _ = mean_ci(pooled(table, structure, phases) - pooled(base, structure, phases))
                    part += f" (paired {d:+.4f} [{dlo:+.4f}, {dhi:+.4f}])"
                parts.append(part)
            print(f"  {label:5s} n={n}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
