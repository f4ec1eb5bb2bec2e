"""Segmenter benchmark: prints throughput, inference time per frame, and cross-validated quality.

    .venv/bin/python bench/segmentation.py speed [--threads 1] [--steps 6]
        training slices/s of the shipped U-Net (float32 vs bfloat16 autocast) at the training crop, and
        inference seconds per ACDC frame (whole volume, input geometry, with post-processing).
    .venv/bin/python bench/segmentation.py cv RUN
        for a `cmrprior segment train --folds K --out RUN` folder: held-out Dice/HD95 per structure and
        phase (mean, 95% t-interval), LVEF / LV EDV / RV EDV mean absolute error of the fold models'
        masks against the ground-truth masks (`cmrprior.anatomy.measure`), training time and
        peak memory from the training logs.
    .venv/bin/python bench/segmentation.py paired RUN/cv/fold_K OTHER.safetensors [--data ACDC] [--threads 2]
        a candidate recipe's fold against another model of the same held-out patients (e.g. the shipped set's
        `set/fold_K.safetensors`): OTHER segments the fold's held-out patients exactly as `cross_validate` scored
        the fold (prepared grid, ED+ES, `RUN/cv/fold_K/metrics.csv`), then both are printed per structure and
        phase with the paired difference (fold minus OTHER) per patient-phase.
    .venv/bin/python bench/segmentation.py paired-sets CANDIDATE_SET OTHER_SET --folds 1 2 3 4 [--data ACDC] [--threads 2]
        two segmenter sets (folders with `folds.json`) fold by fold: each fold's held-out patients (those its
        model was not trained on; both sets' fold K must have the same training patients) segmented by both
        sets' fold K as `paired` does, the paired differences pooled over the folds; the candidate's figures are
        also checked against its shipped `fold_K.metrics.csv` when the set has one. CANDIDATE_SET may instead
        name one model file per fold with `{k}` (e.g. `ENS/fold_{k}.safetensors`, ensembles from `cmrprior segment
        combine`): each is scored on the held-out patients of OTHER_SET's fold k.
    .venv/bin/python bench/segmentation.py native RUN [--data ACDC]
        the same held-out patients scored as a user meets them: each fold model segments the raw ED and ES
        frames in their own geometry with `predict_volume` (it finds the heart itself on the whole field of
        view, no ground-truth crop), and Dice/HD95 are computed at the native resolution against the raw
        ground-truth masks; plus inference seconds per frame.

Figures are printed, never asserted. Nothing is written except under RUN/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from acdc_cohort import ACDC


def speed(threads: int, steps: int, crop: int, batch: int) -> None:
    from cmrprior.segmentation.losses import make_seg_loss
    from cmrprior.segmentation.network import UNetArgs, build_unet, count_parameters
    from cmrprior.segmentation.predict import default_model_path
    from cmrprior.segmentation.network import load_segmenter
    from cmrprior.segmentation.volumes import predict_volume

    torch.set_num_threads(threads)
    args = UNetArgs()
    print(f"torch {torch.__version__}, threads {threads}, U-Net channels {args.channels}, "
          f"res units {args.num_res_units}, {count_parameters(build_unet(args)):,} parameters")
    print(f"load average at start: {os.getloadavg()}")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, crop, crop, generator=g)
    y = torch.randint(0, 4, (batch, 1, crop, crop), generator=g)
    for bf16 in (False, True):
        torch.manual_seed(0)
        net = build_unet(args)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        loss_fn = make_seg_loss()

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(x)
            loss = loss_fn(out.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = steps * batch
        print(f"train {'bf16' if bf16 else 'fp32'}: {n / wall:6.1f} slices/s wall, {n / cpu:6.1f} slices per CPU-second "
              f"({crop}x{crop}, batch {batch})")
    try:
        model, margs, _ = load_segmenter(default_model_path())
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(f"inference: shipped model unavailable ({exc}); using an untrained network")
        model, margs = build_unet(args).eval(), args
    if (ACDC / "patient001").is_dir():
        from cmrprior.io.nifti import read_nifti

        vol = read_nifti(ACDC / "patient001" / "patient001_frame01.nii.gz")
    else:
        from cmrprior.io.records import Volume

        vol = Volume(np.random.default_rng(0).random((10, 216, 256)).astype(np.float32), (10.0, 1.5, 1.5), np.eye(4))
    with torch.no_grad():
        predict_volume(model, vol, divisor=margs.divisor)
        t0, c0 = time.perf_counter(), time.process_time()
        reps = 3
        for _ in range(reps):
            predict_volume(model, vol, divisor=margs.divisor)
        per = (time.perf_counter() - t0) / reps
        per_cpu = (time.process_time() - c0) / reps
    print(f"inference: {per:.2f} s per frame wall, {per_cpu:.2f} CPU-s per frame ({vol.shape[0]} slices of {vol.shape[1]}x{vol.shape[2]} at "
          f"{vol.spacing[1]:.2f} mm; localisation pass + crop pass + resampling + post-processing)")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def print_dice_hd95(rows: list[dict]) -> None:
    """Mean and 95% t-interval of Dice and HD95 per structure, for ED, ES and "all" (ED and ES together)."""
    from cmrprior.segmentation import qc

    print(f"{'metric':<10}{'phase':<6}{'mean':>8}  95% CI (t)")
    for s in qc.summarise(rows):
        if s["metric"].startswith(("dice_", "hd95_")):
            print(f"{s['metric']:<10}{s['phase']:<6}{s['mean']:8.3f}  [{s['ci_low']:.3f}, {s['ci_high']:.3f}]  n={s['n']}")


def cv(run: Path) -> None:
    from cmrprior.anatomy.measure import measure_patient
    from cmrprior.data.prepare import load_prepared
    from cmrprior.segmentation import qc
    from cmrprior.segmentation.predict import segment_prepared

    caches = sorted((run / "cache").glob("*/cohort.json"))
    if not caches:
        sys.exit(f"{run}: no prepared cache under {run / 'cache'}")
    prepared = load_prepared(caches[0].parent)
    rows, anat = [], []
    folds = sorted((run / "cv").glob("fold_*"))
    for fold in folds:
        model = fold / "model.safetensors"
        if not model.exists():
            print(f"{fold.name}: not finished")
            continue
        test_ids = json.loads((fold / "test_patients.json").read_text())["test"]
        truth = prepared.select_patients(test_ids)
        pred = segment_prepared(truth, model)
        for r in qc.evaluate_prepared(pred, truth):
            rows.append({**r, "fold": fold.name})
        for p, info in enumerate(truth.patients):
            idx = np.flatnonzero(truth.patient_index == p)
            idx = idx[np.argsort(truth.slice_index[idx])]
            sp = (info.slice_thickness_mm, truth.pixel_spacing_mm, truth.pixel_spacing_mm)
            mt = measure_patient(truth.ed_mask[idx], truth.es_mask[idx], sp)
            mp = measure_patient(pred.ed_mask[idx], pred.es_mask[idx], sp)
            anat.append({"patient": info.patient_id, "label": info.label, **{f"gt_{k}": getattr(mt, k) for k in
                         ("lvef", "lv_edv_ml", "lv_esv_ml", "rv_edv_ml", "rvef", "myo_mass_g")},
                         **{f"pred_{k}": getattr(mp, k) for k in ("lvef", "lv_edv_ml", "lv_esv_ml", "rv_edv_ml", "rvef",
                                                                   "myo_mass_g")}})
    if not rows:
        sys.exit("no finished fold")
    out = run / "bench"
    qc.write_csv(rows, out / "cv_heldout_qc.csv")
    qc.write_csv(anat, out / "cv_heldout_anatomy.csv")
    print(f"{len(folds)}-fold cross-validation, {len({r['patient_id'] for r in rows})} held-out patients "
          f"(each scored by the fold model that never saw it); 3D on the prepared 1.5 mm grid, post-processed")
    print_dice_hd95(rows)
    for k, unit in (("lvef", "% points"), ("lv_edv_ml", "ml"), ("lv_esv_ml", "ml"), ("rv_edv_ml", "ml"),
                    ("rvef", "% points"), ("myo_mass_g", "g")):
        err = np.array([a[f"pred_{k}"] - a[f"gt_{k}"] for a in anat], dtype=float)
        err = err[np.isfinite(err)]
        m, lo, hi, n = qc.mean_ci(np.abs(err))
        print(f"{k:<11} MAE {m:6.2f} {unit} [{lo:.2f}, {hi:.2f}], bias {err.mean():+.2f}, n={n}")
    flags = [k for k in ("empty_heart", "missing_structure_mid", "myo_not_surrounding_lv", "volume_jump")]
    print("QC flags on held-out predictions: " + ", ".join(f"{k} {sum(bool(r[k]) for r in rows)}" for k in flags)
          + f" (of {len(rows)} volumes)")
    final_model = run / "final" / "model.safetensors"
    if final_model.exists():
        val_ids = json.loads((run / "final" / "split.json").read_text())["val"]
        truth = prepared.select_patients(val_ids)
        frows = qc.evaluate_prepared(segment_prepared(truth, final_model), truth)
        qc.write_csv(frows, out / "final_val_qc.csv")
        parts = []
        for s in qc.summarise(frows):
            if s["phase"] in ("ED", "ES") and s["metric"].startswith("dice_"):
                parts.append(f"{s['metric'][5:]} {s['phase']} {s['mean']:.3f}")
        print(f"final model on its {len(val_ids)} validation patients (never trained on, used to pick the epoch): "
              + ", ".join(parts))
    for name in [f.name for f in folds] + ["final"]:
        log = (run / "cv" / name / "log.jsonl") if name != "final" else (run / "final" / "log.jsonl")
        if log.exists():
            recs = [json.loads(x) for x in log.read_text().splitlines()]
            print(f"{name}: {len(recs)} epochs, training {sum(r['train_seconds'] for r in recs) / 60:.1f} min "
                  f"(without validation), {np.mean([r['slices_per_s'] for r in recs]):.1f} slices/s mean, "
                  f"peak RSS {max(r['peak_rss_mb'] for r in recs):.0f} MB, best epoch {recs[-1]['best_epoch']}")


def native(run: Path, data: Path, limit: int | None = None) -> None:
    from cmrprior.io.cohort import open_cohort
    from cmrprior.io.load import as_mask, read_image
    from cmrprior.segmentation import qc
    from cmrprior.segmentation.network import load_segmenter
    from cmrprior.segmentation.volumes import predict_volume

    records = {r.patient_id: r for r in open_cohort(data).patients}
    rows, seconds = [], []
    for fold in sorted((run / "cv").glob("fold_*")):
        if not (fold / "model.safetensors").exists():
            print(f"{fold.name}: not finished")
            continue
        model, margs, _ = load_segmenter(fold / "model.safetensors")
        for pid in json.loads((fold / "test_patients.json").read_text())["test"][:limit]:
            rec = records[pid]
            for phase, img, mask, frame in (("ED", rec.ed_image, rec.ed_mask, rec.ed_frame),
                                            ("ES", rec.es_image, rec.es_mask, rec.es_frame)):
                vol = read_image(img, frame=frame)
                t0 = time.perf_counter()
                with torch.no_grad():
                    pred = predict_volume(model, vol, divisor=margs.divisor)
                seconds.append(time.perf_counter() - t0)
                truth = as_mask(read_image(mask, frame=frame), vol).array
                rows.append({"patient_id": pid, "phase": phase, "fold": fold.name,
                             **qc.structure_metrics(pred.labels, truth, vol.spacing)})
    if not rows:
        sys.exit("no finished fold")
    qc.write_csv(rows, run / "bench" / "cv_heldout_native_qc.csv")
    print(f"held-out patients segmented in their own geometry (heart found by the model on the whole field of "
          f"view), scored at native resolution: {len({r['patient_id'] for r in rows})} patients, "
          f"{torch.get_num_threads()} threads, {np.mean(seconds):.2f} s per frame (median {np.median(seconds):.2f})")
    print_dice_hd95(rows)


def paired(fold_dir: Path, other: Path, data: Path) -> None:
    import csv

    from cmrprior.data.prepare import PrepareConfig, prepare_cohort
    from cmrprior.io.cohort import open_cohort
    from cmrprior.segmentation import qc
    from cmrprior.segmentation.cv import FOLD_SPLIT_FILE
    from cmrprior.segmentation.predict import segment_prepared

    test_ids = json.loads((fold_dir / FOLD_SPLIT_FILE).read_text())["test"]
    cache = fold_dir.parent.parent / "cache"  # the run's prepared cohort (segment train --out RUN: RUN/cache)
    prepared = prepare_cohort(open_cohort(data), PrepareConfig(), cache_dir=cache if cache.is_dir() else None)
    test = prepared.select_patients(test_ids)
    theirs = {(r["patient_id"], r["phase"]): r for r in qc.evaluate_prepared(segment_prepared(test, other), test)}
    ours = {(r["patient_id"], r["phase"]): r for r in csv.DictReader(open(fold_dir / "metrics.csv"))}
    if set(ours) != set(theirs):
        sys.exit(f"{fold_dir}/metrics.csv does not hold the fold's held-out patients")
    print(f"{fold_dir} against {other}: {len(test_ids)} held-out patients, prepared grid, no basal correction")
    print_paired(ours, theirs, "fold")


def print_paired(ours: dict[tuple[str, str], dict], theirs: dict[tuple[str, str], dict], name: str,
                 mean_of_three: bool = False) -> None:
    """The Dice table of two models' QC rows on the same (patient, phase) keys: per phase (ED, ES, both) and structure
    the two means and the paired difference (ours - theirs) with its 95 % t-interval; `mean_of_three`: also the
    paired difference of the mean of LV, MYO and RV."""
    from cmrprior.segmentation import qc

    print(f"| phase | structure | {name} | other | paired difference ({name} - other) [95% t] |")
    for phase in ("ED", "ES", None):
        keys = [k for k in sorted(ours) if phase is None or k[1] == phase]
        diffs = []
        for s in ("LV", "MYO", "RV"):
            a = np.array([float(ours[k][f"dice_{s}"]) for k in keys])
            b = np.array([float(theirs[k][f"dice_{s}"]) for k in keys])
            mean, lo, hi, _ = qc.mean_ci(a - b)
            diffs.append(a - b)
            print(f"| {phase or 'ED+ES'} | {s} | {a.mean():.4f} | {b.mean():.4f} | {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] |")
        if mean_of_three:
            mean, lo, hi, _ = qc.mean_ci(np.mean(diffs, axis=0))
            print(f"| {phase or 'ED+ES'} | mean of the three | | | {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] |")


def paired_sets(candidate: str, other: Path, folds: list[int], data: Path) -> None:
    import csv

    from cmrprior.data.prepare import PrepareConfig, prepare_cohort
    from cmrprior.io.cohort import open_cohort
    from cmrprior.segmentation import qc
    from cmrprior.segmentation.folds import load_segmenter_set
    from cmrprior.segmentation.predict import segment_prepared

    files = "{k}" in candidate  # one model file per fold, trained on the other set's fold's patients
    sets = {"other": load_segmenter_set(other)}
    if not files:
        sets["candidate"] = load_segmenter_set(Path(candidate))
    prepared = prepare_cohort(open_cohort(data), PrepareConfig())
    ids = [p.patient_id for p in prepared.patients]
    rows: dict[str, dict[tuple[str, str], dict]] = {"candidate": {}, "other": {}}
    for k in folds:
        models = {name: s.folds[k] for name, s in sets.items()}
        if not files and models["candidate"].patients != models["other"].patients:
            sys.exit(f"fold {k}: the two sets' models were trained on different patients")
        test_ids = [pid for pid in ids if pid not in models["other"].patients]
        test = prepared.select_patients(test_ids)
        weights = {name: (m.weights, m.lineage) for name, m in models.items()}
        if files:
            weights["candidate"] = (Path(candidate.format(k=k)), "a model file")
        for name in ("candidate", "other"):
            path, lineage = weights[name]
            scored = qc.evaluate_prepared(segment_prepared(test, path), test)
            rows[name].update({(r["patient_id"], r["phase"]): r for r in scored})
            print(f"fold {k} {name}: {path} ({lineage}), {len(test_ids)} held-out patients")
        shipped = Path(candidate) / f"fold_{k}.metrics.csv"
        if not files and shipped.exists():
            ref = {(r["patient_id"], r["phase"]): r for r in csv.DictReader(open(shipped))}
            keys = [key for key in ref if key[0] in test_ids]
            if set(keys) != {key for key in rows["candidate"] if key[0] in test_ids}:
                sys.exit(f"{shipped} does not hold fold {k}'s held-out patients")
            diff = max(abs(float(ref[key][f"dice_{s}"]) - float(rows["candidate"][key][f"dice_{s}"]))
                       for key in keys for s in ("LV", "MYO", "RV"))
            print(f"fold {k}: candidate's Dice against its {shipped.name}: max difference {diff:.2e}")
    print(f"{candidate} against {other}: folds {folds}, {len({k[0] for k in rows['candidate']})} held-out patients, "
          "prepared grid, no basal correction")
    print_paired(rows["candidate"], rows["other"], "candidate", mean_of_three=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--steps", type=int, default=6)
    s.add_argument("--crop", type=int, default=96)
    s.add_argument("--batch", type=int, default=8)
    c = sub.add_parser("cv")
    c.add_argument("run", type=Path)
    n = sub.add_parser("native")
    n.add_argument("run", type=Path)
    n.add_argument("--data", type=Path, default=ACDC)
    n.add_argument("--threads", type=int, default=None)
    n.add_argument("--limit", type=int, default=None, help="first N held-out patients per fold (a smoke run)")
    pr = sub.add_parser("paired")
    pr.add_argument("fold", type=Path)
    pr.add_argument("other", type=Path)
    pr.add_argument("--data", type=Path, default=ACDC)
    pr.add_argument("--threads", type=int, default=None)
    ps = sub.add_parser("paired-sets")
    ps.add_argument("candidate", help="a set folder, or model files per fold named with {k}")
    ps.add_argument("other", type=Path)
    ps.add_argument("--folds", type=int, nargs="+", required=True)
    ps.add_argument("--data", type=Path, default=ACDC)
    ps.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.what == "speed":
        speed(a.threads, a.steps, a.crop, a.batch)
    elif a.what == "paired":
        if a.threads:
            torch.set_num_threads(a.threads)
        paired(a.fold, a.other, a.data)
    elif a.what == "paired-sets":
        if a.threads:
            torch.set_num_threads(a.threads)
        paired_sets(a.candidate, a.other, a.folds, a.data)
    elif a.what == "native":
        if a.threads:
            torch.set_num_threads(a.threads)
        native(a.run, a.data, a.limit)
    else:
        cv(a.run)


if __name__ == "__main__":
    main()
