"""Short SimCLR pre-training on ACDC + linear probe vs a random-initialised encoder.

    nice -n 10 .venv/bin/python bench/ssl_probe.py --out runs/ssl_probe [--epochs 15] [--image-size 64]

1. ACDC training folder (100 patients) -> prepared cohort (cmrprior.data.prepare, cached in OUT/cache).
2. Patient split (stratified 70/30, --split-seed): the 30 test patients are never seen by pre-training.
   Inside the 70 training patients, a stratified 85/15 part: pre-training images / held-out NT-Xent.
3. SimCLR pre-training of --backbone on the ED+ES slices of the pre-training patients (views resampled
   to --image-size); the per-epoch held-out NT-Xent of the run's log is printed.
4. Held-out NT-Xent (batch statistics, as in training) of the untrained and the final encoder.
5. Linear probe: BatchNorm statistics of each encoder re-estimated on the pre-training images (precise BN),
   then frozen, pooled features of ED and ES slices (concatenated per slice position), standardised,
   multinomial logistic regression (sklearn) on all 70 training patients' slices; per-patient mean of slice
   probabilities on the 30 test patients; macro one-vs-rest AUC with a patient bootstrap 95% CI.
   Same probe on a random-initialised encoder (the pre-training's own initial weights).
Prints figures; resumes pre-training when run again with the same arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def features(encoder, images: np.ndarray, size: int, batch: int = 128) -> np.ndarray:
    """`(N, H, W)` -> `(N, F)` pooled features at `size` px (eval mode, fp32)."""
    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch]).float().unsqueeze(1)
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            out.append(encoder.forward_features(x).numpy())
    return np.concatenate(out)


def probe_auc(encoder, prepared, train_ids, test_ids, size: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """(summary: macro AUC and patient-bootstrap CI, test-patient labels `(P,)`, probabilities `(P, K)`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    def xy(ids):
        sub = prepared.select_patients(list(ids))
        f = np.concatenate([features(encoder, sub.ed, size), features(encoder, sub.es, size)], axis=1)
        return f, sub.slice_labels, sub.patient_index, sub.patient_labels

    xtr, ytr, _, _ = xy(train_ids)
    xte, _, pte, yte_pat = xy(test_ids)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=0.1, max_iter=3000, random_state=seed).fit(scaler.transform(xtr), ytr)
    p_slice = clf.predict_proba(scaler.transform(xte))
    p_pat = np.stack([p_slice[pte == i].mean(0) for i in range(len(test_ids))])
    auc = roc_auc_score(yte_pat, p_pat, multi_class="ovr", average="macro")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(1000):
        idx = rng.integers(0, len(yte_pat), len(yte_pat))
        if len(np.unique(yte_pat[idx])) == p_pat.shape[1]:
            boots.append(roc_auc_score(yte_pat[idx], p_pat[idx], multi_class="ovr", average="macro"))
    summary = {"auc": float(auc), "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
               "n_test_patients": len(test_ids), "n_train_slices": int(len(ytr))}
    return summary, yte_pat, p_pat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acdc", type=Path, default=Path(os.environ.get("ACDC_ROOT", Path(__file__).resolve().parents[2] / "shared/data/acdc/training")))
    ap.add_argument("--out", type=Path, default=Path("runs/ssl_probe"))
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from cmrprior.data.prepare import PrepareConfig, prepare_cohort
    from cmrprior.data.splits import stratified_split
    from cmrprior.io.cohort import open_cohort
    from cmrprior.ssl.checkpoint import load_encoder
    from cmrprior.ssl.config import PretrainConfig, resolve_auto
    from cmrprior.ssl.model import build_model, recalibrate_batchnorm
    from cmrprior.ssl.pretrain import heldout_loss, pretrain
    from cmrprior.utils.seeding import seed_everything

    t0 = time.time()
    prepared = prepare_cohort(open_cohort(args.acdc), PrepareConfig(), args.out / "cache", progress=False)
    ids, labels = prepared.patient_ids, prepared.patient_labels
    split = stratified_split(ids, labels.tolist(), test_fraction=0.3, seed=args.split_seed)
    pos = {p: i for i, p in enumerate(ids)}
    inner = stratified_split(list(split.train), [int(labels[pos[p]]) for p in split.train], test_fraction=0.15,
                             seed=args.split_seed + 1)
    assert not set(split.test) & (set(inner.train) | set(inner.test))

    def stack(pids):
        sub = prepared.select_patients(list(pids))
        return np.concatenate([sub.ed, sub.es]).astype(np.float32)

    train_imgs, val_imgs = stack(inner.train), stack(inner.test)
    print(f"prepared {len(prepared)} slice positions of {len(ids)} patients in {time.time() - t0:.0f} s; "
          f"split seed {args.split_seed}: {len(split.train)} train / {len(split.test)} test patients; pre-training on "
          f"{len(inner.train)} patients ({len(train_imgs)} images), held-out NT-Xent on {len(inner.test)} training "
          f"patients ({len(val_imgs)} images)", flush=True)

    cfg = PretrainConfig(backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
                         epochs=args.epochs, patience=0, seed=args.seed, device="cpu", progress=True)
    # the pre-training's own initial weights (same seed, same construction order): the random encoder
    seed_everything(cfg.seed)
    init_model_args = {"backbone": cfg.backbone, "in_chans": 1, "backbone_kwargs": {}, "proj_hidden_dim": cfg.proj_hidden_dim,
                       "proj_dim": cfg.proj_dim, "proj_batch_norm": cfg.proj_batch_norm}
    init_model = build_model(init_model_args)
    val_t = torch.from_numpy(val_imgs).unsqueeze(1)

    t1 = time.time()
    result = pretrain(train_imgs, cfg, args.out / "pretrain", val_images=val_imgs)
    print(f"pre-training: {len(result.history)} epochs in {time.time() - t1:.0f} s (this call)", flush=True)
    for h in result.history:
        print(f"  epoch {h['epoch']}: train NT-Xent {h['train_loss']:.4f}, held-out NT-Xent (as logged) {h['val_loss']:.4f}, "
              f"{h['seconds']:.0f} s", flush=True)

    last = args.out / "pretrain" / "last.pt"
    final = build_model(init_model_args)
    final.load_state_dict(torch.load(last, weights_only=True)["model"])
    # the precision the pre-training resolved (its "auto" may have timed bf16 faster on this CPU)
    ran = dataclasses.replace(cfg, precision=torch.load(last, weights_only=True)["config"]["precision"])
    rcfg, _ = resolve_auto(ran, torch.device("cpu"))
    val_init, val_final = heldout_loss(init_model, val_t, rcfg, torch.device("cpu")), heldout_loss(final, val_t, rcfg, torch.device("cpu"))
    print(f"held-out NT-Xent (batch statistics): untrained {val_init:.4f} -> after {len(result.history)} epochs {val_final:.4f}",
          flush=True)

    small = F.interpolate(torch.from_numpy(train_imgs).unsqueeze(1), size=(args.image_size,) * 2, mode="bilinear",
                          align_corners=False, antialias=True)
    enc_pre = recalibrate_batchnorm(load_encoder(last), small)
    enc_rnd = recalibrate_batchnorm(init_model.encoder, small)
    pre, y, pa = probe_auc(enc_pre, prepared, split.train, split.test, args.image_size, args.seed)
    print(f"probe SimCLR: macro AUC {pre['auc']:.3f}", flush=True)
    rnd, y_rnd, pb = probe_auc(enc_rnd, prepared, split.train, split.test, args.image_size, args.seed)
    from cmrprior.evaluate.compare import delong_test, patient_paired_bootstrap

    assert np.array_equal(y, y_rnd)
    # one split: the pooled resample of its test patients is the stratified resample of that split
    boot = patient_paired_bootstrap([([str(i) for i in range(len(y))], y, pa, pb)], n_boot=2000, seed=args.seed)
    delong = delong_test(y, pa, pb)
    summary = {
        "backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size, "lr": args.lr,
        "epochs": len(result.history), "split_seed": args.split_seed, "seed": args.seed,
        "heldout_ntxent_logged": [h["val_loss"] for h in result.history],
        "heldout_ntxent_batchstats": {"untrained": val_init, "final": val_final},
        "probe_simclr": pre, "probe_random": rnd, "checkpoint": str(last),
        "difference_paired_bootstrap": boot.as_dict(), "difference_delong": delong.as_dict(),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"linear probe (final encoder, BN re-estimated) macro OvR AUC on {pre['n_test_patients']} test patients (split seed {args.split_seed}, seed {args.seed}):")
    print(f"  SimCLR encoder : {pre['auc']:.3f}  (95% CI {pre['ci95'][0]:.3f}-{pre['ci95'][1]:.3f})")
    print(f"  random encoder : {rnd['auc']:.3f}  (95% CI {rnd['ci95'][0]:.3f}-{rnd['ci95'][1]:.3f})")
    for c in (boot, delong):
        print(f"  SimCLR - random: {c.difference:+.3f} [{c.low:+.3f}, {c.high:+.3f}], p = {c.p_value:.3f} ({c.method}, "
              f"same {len(y)} test patients)")


if __name__ == "__main__":
    main()
