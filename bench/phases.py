"""ED/ES detection benchmark: agreement of `detect_phases` (shipped segmenter) with known frames.

    PYTHONPATH=src .venv/bin/python bench/phases.py acdc [--data ACDC] [--limit N] [--threads 1]
        ACDC patients against Info.cfg. With `patientNNN_4d.nii.gz`: every frame is segmented and the
        detected ED/ES frames are compared with Info.cfg (exact / within 1 frame, cyclic). Without it (the
        copy shipped to this project has no 4D files): the two given frames form a 2-frame cine and the check
        is whether the segmenter's LV volumes put ED and ES on the right frames; also LV EDV/ESV error against
        the expert masks. Note: the shipped segmenter was trained on the ACDC training set.
    PYTHONPATH=src .venv/bin/python bench/phases.py phantom OUT [--patients N] [--seed S] [--threads 1]
        a phantom cohort written as DICOM cine series (`cmrprior phantom --format dicom`), read back and
        ED/ES detected, against the phantom's true frames (ED and ES separately, exact / within 1 frame
        cyclically), for the chosen frames (mid-ventricular curve), for the raw largest / smallest volume of
        the whole-heart curve, and `curve_extremes` of the whole-heart curve; detections flagged unreliable.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from acdc_cohort import ACDC


def _cyclic(a: int, b: int, n: int) -> int:
    d = abs(a - b)
    return min(d, n - d)


def acdc(data: Path, limit: int | None) -> None:
    from cmrprior.io.acdc import read_acdc
    from cmrprior.io.load import load_patient, read_cine
    from cmrprior.segmentation.phases import detect_phases, shipped_segmenter

    cohort = read_acdc(data)
    factory = shipped_segmenter()
    full = exact = near = two = two_ok = 0
    edv_err, esv_err = [], []
    t0 = time.perf_counter()
    for rec in cohort.patients[:limit]:
        if rec.cine is not None:
            cine = read_cine(rec.cine)
            det = detect_phases(cine.frames, segment=factory(), patient_id=rec.patient_id)
            full += 1
            exact += det.ed_frame == rec.ed_frame and det.es_frame == rec.es_frame
            near += (_cyclic(det.ed_frame, rec.ed_frame, det.n_frames) <= 1
                     and _cyclic(det.es_frame, rec.es_frame, det.n_frames) <= 1)
            continue
        pv = load_patient(rec)
        det = detect_phases([pv.ed, pv.es], segment=factory(), patient_id=rec.patient_id)
        two += 1
        two_ok += det.ed_frame == 1 and det.es_frame == 2
        if pv.ed_mask is not None:
            voxel = float(np.prod(pv.ed.spacing)) / 1000.0
            edv_err.append(det.lv_volume_ml[0] - float((pv.ed_mask.array == 3).sum()) * voxel)
            esv_err.append(det.lv_volume_ml[1] - float((pv.es_mask.array == 3).sum()) * voxel)
    print(f"ACDC {data}: {len(cohort.patients[:limit])} patients, {time.perf_counter() - t0:.0f} s")
    if full:
        print(f"  4D cines: {full}; ED and ES exact {exact}/{full}, both within 1 frame {near}/{full}")
    if two:
        print(f"  no 4D file: {two} patients; ED/ES put on the right one of the two given frames: {two_ok}/{two}")
    if edv_err:
        e, s = np.array(edv_err), np.array(esv_err)
        print(f"  LV EDV error vs expert masks: mean {e.mean():+.1f} ml, MAE {np.abs(e).mean():.1f} ml; "
              f"ESV: mean {s.mean():+.1f} ml, MAE {np.abs(s).mean():.1f} ml")


def phantom(out: Path, patients: int, seed: int) -> None:
    from cmrprior.data.phantom import generate_phantom
    from cmrprior.io.manifest import read_manifest
    from cmrprior.segmentation.phases import curve_extremes, resolve_cohort_phases

    t0 = time.perf_counter()
    generate_phantom(out, n_patients=patients, seed=seed, output_format="dicom")
    t1 = time.perf_counter()
    cohort = read_manifest(out / "manifest.csv")
    resolved, dets = resolve_cohort_phases(cohort)
    t2 = time.perf_counter()
    # the chosen frames (mid-ventricular curve) against what the whole-heart curve would give
    hits = {k: np.zeros(4, int) for k in ("chosen", "raw", "whole")}
    trig = 0
    flagged = []
    both = 0
    for rec, det in zip(resolved.patients, dets):
        truth = json.loads((out / rec.patient_id / "phantom_truth.json").read_text())
        ed, es = truth["ed_frame"], truth["es_frame"]
        v = np.asarray(det.lv_volume_ml)
        found = {"chosen": (det.ed_frame, det.es_frame), "raw": (int(v.argmax()) + 1, int(v.argmin()) + 1),
                 "whole": curve_extremes(v)}
        for k, (f_ed, f_es) in found.items():
            hits[k] += [f_ed == ed, _cyclic(f_ed, ed, det.n_frames) <= 1,
                        f_es == es, _cyclic(f_es, es, det.n_frames) <= 1]
        trig += det.ed_matches_trigger
        hit = (det.ed_frame, det.es_frame) == (ed, es)
        both += hit
        if not det.reliable:
            flagged.append(f"{rec.patient_id} ({'right' if hit else 'wrong'})")
        print(f"  {rec.patient_id} {rec.label:4s} true ED/ES {ed:2d}/{es:2d}  found {det.ed_frame:2d}/{det.es_frame:2d}  "
              f"raw {found['raw'][0]:2d}/{found['raw'][1]:2d}  whole {found['whole'][0]:2d}/{found['whole'][1]:2d}  "
              f"segmented LV {v.min():.0f}-{v.max():.0f} ml, true {min(truth['lv_volume_ml']):.0f}-"
              f"{max(truth['lv_volume_ml']):.0f} ml, mid curve change {det.curve_change_percent:.1f} %")
    n = len(dets)
    print(f"phantom DICOM cine, {n} patients (seed {seed}): written in {t1 - t0:.0f} s, detected in {t2 - t1:.0f} s")
    for k, h in hits.items():
        print(f"  {k:6s} ED exact {h[0]}/{n}, within 1 frame {h[1]}/{n}; ES exact {h[2]}/{n}, within 1 frame {h[3]}/{n}")
    print(f"  chosen ED and ES both exact {both}/{n}")
    print(f"  ED at trigger time zero (+-1) {trig}/{n}")
    print(f"  flagged unreliable (curve change < 5 %): {len(flagged)}/{n} {' '.join(flagged)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("acdc")
    a.add_argument("--data", type=Path, default=ACDC)
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("phantom")
    p.add_argument("out", type=Path)
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cmd == "acdc":
        if not args.data.is_dir():
            print(f"ACDC not found at {args.data} (set ACDC_ROOT)", file=sys.stderr)
            return 1
        acdc(args.data, args.limit)
    else:
        phantom(args.out, args.patients, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
