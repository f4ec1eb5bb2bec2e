"""Where the segmenter's errors move the measures: a per-patient, per-slice error table of out-of-sample masks
against ACDC's expert masks, sorted by the LVEF (or mass) each slice's error moves.

    PYTHONPATH=src .venv/bin/python bench/segment_errors.py [--data ACDC] [--limit N] [--threads T] [--model SET]
        [--top 25] [--csv OUT.csv]

Each ACDC training patient is segmented by the fold model (of the shipped set, or of `--model`) that never saw it
(`cmrprior.segmentation.measures.segmenter_masks`; expert masks are not read there); the expert `_gt` masks are
read afterwards, for the reference. For every patient, phase (ED, ES), slice and structure (LV cavity,
myocardium, RV): the expert's and the network's volume on that slice (ml), and what the slice's error does to
the patient's measures: `lvef_effect_points` = LVEF from the network's masks minus LVEF with only this slice
replaced by the expert's (likewise `rvef_effect_points`, and `mass_effect_g` for ED myocardium). The kind of
each LV error is named: `cavity as myocardium` (expert LV drawn as myocardium), `extra slice` (LV where the
expert drew none), `missed slice`, or `boundary`. Slices are numbered in stack order and also by their position
from the base (`from_base`, 0 = the most basal slice with an expert label).

Prints the slices that move LVEF most, the sum of each error kind's effect, and the patients with the largest
LVEF and mass errors; `--csv` writes every row (units in the column names). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict

import numpy as np

from acdc_cohort import add_arguments, open_cohort

STRUCTURES = {"lv": 3, "myo": 2, "rv": 1}


def _ef(edv: float, esv: float) -> float:
    return float("nan") if edv <= 0 else 100.0 * (edv - esv) / edv


def _kind(pred: np.ndarray, truth: np.ndarray) -> str:
    """The kind of LV-cavity error on one slice (module docstring)."""
    p, t = pred == 3, truth == 3
    if not t.any():
        return "extra slice" if p.any() else "none"
    if not p.any():
        return "missed slice"
    as_myo = np.count_nonzero(t & (pred == 2))
    return "cavity as myocardium" if as_myo > 0.25 * np.count_nonzero(t) else "boundary"


def patient_rows(pid: str, label: str, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                 voxel_ml: float) -> list[dict]:
    """The rows of one patient (module docstring); `pred`/`truth`: phase -> (Z, H, W) labels."""
    vol = {(src, ph, s): (m[ph] == v).reshape(m[ph].shape[0], -1).sum(1) * voxel_ml
           for src, m in (("pred", pred), ("true", truth)) for ph in ("ED", "ES") for s, v in STRUCTURES.items()}
    tot = {k: float(v.sum()) for k, v in vol.items()}
    lvef = _ef(tot[("pred", "ED", "lv")], tot[("pred", "ES", "lv")])
    rvef = _ef(tot[("pred", "ED", "rv")], tot[("pred", "ES", "rv")])
    labelled = np.flatnonzero((truth["ED"] > 0).reshape(truth["ED"].shape[0], -1).any(1))
    base = int(labelled[0]) if labelled.size else 0
    rows = []
    for ph in ("ED", "ES"):
        for z in range(pred[ph].shape[0]):
            fixed = {s: tot[("pred", ph, s)] - vol[("pred", ph, s)][z] + vol[("true", ph, s)][z] for s in STRUCTURES}
            ed_lv, es_lv = (fixed["lv"], tot[("pred", "ES", "lv")]) if ph == "ED" else (tot[("pred", "ED", "lv")], fixed["lv"])
            ed_rv, es_rv = (fixed["rv"], tot[("pred", "ES", "rv")]) if ph == "ED" else (tot[("pred", "ED", "rv")], fixed["rv"])
            row = {"patient_id": pid, "label": label, "phase": ph, "slice": z, "from_base": z - base,
                   "lv_kind": _kind(pred[ph][z], truth[ph][z]),
                   "lvef_effect_points": lvef - _ef(ed_lv, es_lv), "rvef_effect_points": rvef - _ef(ed_rv, es_rv),
                   "mass_effect_g": 1.05 * (vol[("pred", ph, "myo")][z] - vol[("true", ph, "myo")][z]) if ph == "ED" else 0.0}
            for s in STRUCTURES:
                row[f"{s}_true_ml"] = float(vol[("true", ph, s)][z])
                row[f"{s}_pred_ml"] = float(vol[("pred", ph, s)][z])
            rows.append(row)
    return rows


def main() -> int:
    from cmrprior.io.load import load_patient
    from cmrprior.segmentation.measures import segmenter_masks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--top", type=int, default=25, help="slices printed (default 25)")
    ap.add_argument("--csv", default=None, help="write every row to this CSV")
    args = ap.parse_args()
    cohort = open_cohort(args)
    if cohort is None:
        return 1
    t0 = time.perf_counter()
    predicted = [p for p in segmenter_masks(cohort, args.model) if p.choice.out_of_sample is not False]
    by_id = {r.patient_id: r for r in cohort.patients}
    rows, per_patient = [], []
    for p in predicted:
        pv = load_patient(by_id[p.record.patient_id])  # expert masks, read only here, for the reference
        voxel_ml = float(np.prod(p.spacing_zyx)) / 1000.0
        truth = {"ED": pv.ed_mask.array, "ES": pv.es_mask.array}
        pr = patient_rows(p.record.patient_id, p.record.label, {"ED": p.ed, "ES": p.es}, truth, voxel_ml)
        rows += pr
        lv = lambda m, ph: float((m[ph] == 3).sum()) * voxel_ml  # noqa: E731
        d_ef = _ef(lv({"ED": p.ed, "ES": p.es}, "ED"), lv({"ED": p.ed, "ES": p.es}, "ES")) - _ef(lv(truth, "ED"), lv(truth, "ES"))
        d_mass = 1.05 * voxel_ml * (float((p.ed == 2).sum()) - float((truth["ED"] == 2).sum()))
        per_patient.append((p.record.patient_id, p.record.label, d_ef, d_mass))
    print(f"{len(predicted)} patients segmented out of sample and compared in {time.perf_counter() - t0:.0f} s")
    rows.sort(key=lambda r: -abs(r["lvef_effect_points"]))
    print(f"\nslices that move LVEF most (effect = network LVEF - LVEF with this slice as the expert drew it):")
    print(f"{'patient':<12}{'class':<6}{'phase':<6}{'slice':>6}{'from base':>10}{'LVEF pts':>10}{'LV true':>9}"
          f"{'LV pred':>9}{'MYO true':>9}{'MYO pred':>9}  kind")
    for r in rows[: args.top]:
        print(f"{r['patient_id']:<12}{r['label']:<6}{r['phase']:<6}{r['slice']:>6}{r['from_base']:>10}"
              f"{r['lvef_effect_points']:>+10.2f}{r['lv_true_ml']:>9.1f}{r['lv_pred_ml']:>9.1f}{r['myo_true_ml']:>9.1f}"
              f"{r['myo_pred_ml']:>9.1f}  {r['lv_kind']}")
    kinds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["lv_kind"] != "none":
            kinds[(r["phase"], r["lv_kind"])].append(r["lvef_effect_points"])
    print("\nLV error kinds: slices, sum of |LVEF effect| (points), sum of signed effect")
    for (ph, k), v in sorted(kinds.items(), key=lambda kv: -np.abs(kv[1]).sum()):
        print(f"  {ph} {k:<22}{len(v):>6}{np.abs(v).sum():>10.1f}{np.sum(v):>+10.1f}")
    per_patient.sort(key=lambda t: -abs(t[2]))
    print("\npatients with the largest LVEF error (points) and their mass error (g):")
    for pid, lab, d_ef, d_mass in per_patient[:10]:
        print(f"  {pid} {lab:<5} LVEF {d_ef:+6.2f}  mass {d_mass:+7.1f}")
    ef = np.array([t[2] for t in per_patient])
    print(f"LVEF MAE {np.nanmean(np.abs(ef)):.2f} points over {ef.size} patients")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"rows: {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
