"""CLI: `cmrprior pretrain` (SimCLR pre-training on the training patients of a split).

    cmrprior pretrain --data PREPARED --images full|segmented --backbone vgg16 --out RUN
                      [--resume] [--split-seed S] [--batch-size 128 | --batch-sizes 64,128,256] ...
    torchrun --nproc-per-node N -m cmrprior pretrain ...      (DistributedDataParallel)

By default only the training part of a stratified patient split (`cmrprior.data.splits.stratified_split`,
`--test-fraction`, `--split-seed`: the same call the diagnosis stage makes) is used; a further part of
those training patients (`--val-fraction`) gives the held-out NT-Xent for early stopping. No test patient
is seen. `--all-patients` uses every patient (for a cohort that is only ever used unlabelled).
Both the ED and the ES slice of every kept slice position are pre-training images. `RUN/split.json`
lists the patients used.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrprior.data.splits import ProtocolConfig, inner_split, stratified_split
from cmrprior.errors import ConfigError, DataError
from cmrprior.ssl.config import PretrainConfig
from cmrprior.runs import read_json
from cmrprior.utils import atomic
from cmrprior.utils.runlock import run_lock
from cmrprior.vocab import SEGMENTED_MODES, ImagesConfig


@dataclass(frozen=True)
class PretrainData:
    train: np.ndarray  # (N, H, W) float32
    val: np.ndarray | None
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]


def _open_prepared(data: Path, out: Path):
    """A prepared cohort folder (`cmrprior prepare`); a raw cohort is refused: preparing it here would find the
    heart from its expert masks, and the heart is found by the segmenter (`cmrprior prepare` does that)."""
    # data.prepare loads SciPy and the image readers (~0.3-1 s): kept out of `cmrprior` start-up
    from cmrprior.data.prepare import load_prepared

    if (data / "cohort.json").is_file() or (data / "prepared.json").is_file():
        return load_prepared(data)
    raise DataError(data, "not a prepared cohort: prepare it first with `cmrprior prepare --data "
                          f"{data} --out PREPARED` (the heart found by the segmenter) and give --data PREPARED")


def _split_patients(ids: list[str], labels: np.ndarray, fraction: float, seed: int,
                    strict: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kept, held out) patient ids: stratified when every patient has a label, else a seeded shuffle.

    strict=False: also a seeded shuffle when the classes are too small to stratify (the early-stopping
    part of the training patients; the test split itself is always stratified when labels exist).
    """
    if fraction <= 0:
        return tuple(ids), ()
    if (labels >= 0).all():
        try:
            s = stratified_split(ids, labels.tolist(), test_fraction=fraction, seed=seed)
            return tuple(s.train), tuple(s.test)
        except ConfigError:
            if strict:
                raise
    order = np.random.default_rng(seed).permutation(len(ids))
    n_out = max(1, int(round(fraction * len(ids))))
    return tuple(ids[i] for i in sorted(order[n_out:])), tuple(ids[i] for i in sorted(order[:n_out]))


def select_pretrain_data(
    prepared,
    *,
    images: str = "full",
    segmented_mode: str = ImagesConfig.segmented_mode,
    margin_mm: float = ImagesConfig.margin_mm,
    split_seed: int = ProtocolConfig.seed,
    test_fraction: float = ProtocolConfig.test_fraction,
    val_fraction: float = ProtocolConfig.val_fraction,
    all_patients: bool = False,
) -> PretrainData:
    """Training and held-out pre-training images of a PreparedCohort (see module doc).

    images: "full" or "segmented" (`cmrprior.anatomy.heart.apply_image_mode(segmented_mode)`; needs masks).
    Raises ConfigError (bad option, no masks for segmented images, too few patients).
    """
    if images not in ("full", "segmented"):
        raise ConfigError(f"--images must be 'full' or 'segmented', got {images!r}")
    ids = prepared.patient_ids
    labels = prepared.patient_labels
    test_ids: tuple[str, ...] = ()
    pool = list(ids)
    if not all_patients:
        pool_t, test_ids = _split_patients(ids, labels, test_fraction, split_seed)
        pool = list(pool_t)
    pos = {p: i for i, p in enumerate(ids)}
    pool_labels = labels[[pos[p] for p in pool]]
    try:
        if all_patients or not (pool_labels >= 0).all():
            raise ConfigError("no stratified inner split")
        # the study's own inner split of this split's training patients: the same pre-training patients
        inner = inner_split(pool, pool_labels.tolist(), val_fraction=val_fraction, split_seed=split_seed)
        train_ids, val_ids = tuple(inner.train), tuple(inner.test)
    except ConfigError:  # unlabelled, or classes too small to stratify (a study would refuse this cohort)
        train_ids, val_ids = _split_patients(pool, pool_labels, val_fraction, split_seed + 1, strict=False)
    if not train_ids:
        raise ConfigError("pretrain: no training patients left after the split")

    def stack(patient_ids: tuple[str, ...]) -> np.ndarray:
        sub = prepared.select_patients(list(patient_ids))
        x = np.concatenate([sub.ed, sub.es]).astype(np.float32, copy=False)
        if images == "segmented":
            if sub.ed_mask is None:
                raise ConfigError("pretrain --images segmented needs heart masks: prepare a cohort with masks or "
                                  "run `cmrprior segment` first")
            from cmrprior.anatomy.heart import apply_image_mode  # SciPy (~0.5 s): only for segmented images

            m = np.concatenate([sub.ed_mask, sub.es_mask])
            groups = np.concatenate([sub.patient_index, sub.patient_index])
            x = apply_image_mode(x, m, segmented_mode, margin_mm=margin_mm, pixel_spacing_mm=prepared.pixel_spacing_mm,
                                 groups=groups)
        return x

    return PretrainData(stack(train_ids), stack(val_ids) if val_ids else None, train_ids, val_ids, test_ids)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="SimCLR pre-training of an encoder (training patients only)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="prepared cohort folder (`cmrprior prepare --out`)")
    p.add_argument("--images", choices=("full", "segmented"), default="full",
                   help="pre-train on full images or on heart-masked ones (Full- or Segmented-SSCL)")
    p.add_argument("--segmented-mode", choices=SEGMENTED_MODES, default=ImagesConfig.segmented_mode,
                   help="how the heart mask makes a segmented image")
    p.add_argument("--margin-mm", type=float, default=ImagesConfig.margin_mm,
                   help="heart-mask margin for segmented images (mm)")
    p.add_argument("--backbone", default=PretrainConfig.backbone, help="encoder network")
    p.add_argument("--weights", default=PretrainConfig.weights, help="start from 'imagenet' or a weights file (default: random init)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (required if it exists)")
    p.add_argument("--split-seed", type=int, default=ProtocolConfig.seed,
                   help="seed S: the same patients as split S - protocol.seed of a study (default 0: its first split)")
    p.add_argument("--test-fraction", type=float, default=ProtocolConfig.test_fraction,
                   help="patients held out as the split's test part (never pre-trained on)")
    p.add_argument("--val-fraction", type=float, default=ProtocolConfig.val_fraction,
                   help="training patients held out for early stopping")
    p.add_argument("--all-patients", action="store_true", help="use every patient (no test part)")
    p.add_argument("--extra-unlabeled", type=Path, default=None, help=".npy (N, H, W) or prepared cohort of extra images")
    p.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size, help="images per step (all devices)")
    p.add_argument("--batch-sizes", type=_int_list, default=None, help="grid search, e.g. 64,128,256 (study)")
    p.add_argument("--epochs", type=int, default=PretrainConfig.epochs, help="maximum epochs")
    p.add_argument("--patience", type=int, default=PretrainConfig.patience,
                   help="epochs without a lower held-out NT-Xent before stopping (0: never stop early)")
    p.add_argument("--lr", type=float, default=PretrainConfig.lr, help="Adam learning rate")
    p.add_argument("--temperature", type=float, default=PretrainConfig.temperature, help="NT-Xent temperature")
    p.add_argument("--image-size", type=int, default=None, help="view size in pixels (default: the data's)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=PretrainConfig.precision,
                   help="auto: bfloat16 autocast on CUDA, float32 on CPU")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="channels-last memory format (auto: on)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-batchnorm", action="store_true", help="synchronise batch norm across devices (torchrun)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=PretrainConfig.device,
                   help="auto: CUDA when available, else CPU")
    p.add_argument("--seed", type=int, default=PretrainConfig.seed, help="seed of the initialisation and the views")
    p.add_argument("--checkpoint-every", type=int, default=PretrainConfig.checkpoint_every_steps,
                   help="also checkpoint every K steps (0: at the end of each epoch only)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after K steps (resumable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (--quiet implies it)")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    # torch (seconds to import) stays out of `cmrprior` start-up
    from cmrprior.ssl.distributed import dist_info, init_distributed

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    init_distributed(None if args.device == "auto" else args.device)  # under torchrun: join the process group
    out: Path = args.out
    if args.data.is_dir() and out.resolve().is_relative_to(args.data.resolve()):
        raise ConfigError(f"--out {out} is inside the input folder {args.data}; input folders are never written to")
    # one process at a time in the run folder (under torchrun the main rank holds the lock for all ranks)
    with run_lock(out) if dist_info().is_main else contextlib.nullcontext():
        return _run_pretrain(args, out)


def _run_pretrain(args: argparse.Namespace, out: Path) -> int:
    from cmrprior.ssl.config import PretrainConfig
    from cmrprior.ssl.distributed import dist_info
    from cmrprior.ssl.pretrain import pretrain, select_batch_size

    if (out / "last.pt").exists() or any(out.glob("bs*/last.pt")):
        if not args.resume:
            raise ConfigError(f"{out} already holds a run: pass --resume to continue it, or choose a new --out")
    prepared = _open_prepared(args.data, out)
    sel = select_pretrain_data(prepared, images=args.images, segmented_mode=args.segmented_mode,
                               margin_mm=args.margin_mm, split_seed=args.split_seed, test_fraction=args.test_fraction,
                               val_fraction=args.val_fraction, all_patients=args.all_patients)
    extra = None
    if args.extra_unlabeled is not None:
        if args.extra_unlabeled.suffix == ".npy":
            try:
                extra = np.load(args.extra_unlabeled, allow_pickle=False)
            except Exception as exc:
                raise DataError(args.extra_unlabeled, f"cannot read images ({exc})") from exc
        else:
            from cmrprior.data.prepare import load_prepared  # SciPy and image readers: see _open_prepared

            ex = load_prepared(args.extra_unlabeled)
            extra = np.concatenate([ex.ed, ex.es])
    config = PretrainConfig(
        backbone=args.backbone, weights=args.weights, image_size=args.image_size or int(sel.train.shape[-1]),
        batch_size=args.batch_size, epochs=args.epochs, patience=args.patience, lr=args.lr,
        temperature=args.temperature, precision=args.precision,
        channels_last={"auto": None, "on": True, "off": False}[args.channels_last], compile=args.compile,
        sync_batchnorm=args.sync_batchnorm, device=args.device, seed=args.seed,
        checkpoint_every_steps=args.checkpoint_every, max_steps=args.max_steps,
        progress=not (args.no_progress or getattr(args, "quiet", False)),  # --quiet: no bar either
    )
    split = {"split_seed": args.split_seed, "test_fraction": 0.0 if args.all_patients else args.test_fraction,
             "images": args.images, "train_patients": list(sel.train_ids), "val_patients": list(sel.val_ids),
             "test_patients_excluded": list(sel.test_ids), "n_train_images": int(len(sel.train)),
             "n_val_images": 0 if sel.val is None else int(len(sel.val))}
    if (out / "split.json").is_file() and read_json(out / "split.json") != split:
        # checked before anything is written: a refused resume leaves the run's record as it was
        raise ConfigError(f"{out}: the run folder holds a run on other patients or images (its split.json differs); "
                          "use a new --out folder, or the same data and split to resume")
    if dist_info().is_main:
        atomic.write_json(out / "split.json", split)
    if args.batch_sizes:
        if sel.val is None:
            raise ConfigError("--batch-sizes needs held-out images (--val-fraction > 0)")
        best, results = select_batch_size(sel.train, sel.val, config, out, grid=args.batch_sizes,
                                          extra_unlabeled=extra)
        result = results[best]
        atomic.write_json(out / "batch_size.json", {"best": best, "val_loss": {b: r.best_val_loss for b, r in results.items()},
                                                    "checkpoint": str(result.checkpoint)})
    else:
        result = pretrain(sel.train, config, out, val_images=sel.val, extra_unlabeled=extra)
    if dist_info().is_main:
        status = "finished" if result.finished else "stopped at --max-steps (run again with --resume)"
        print(f"pretrain {status}: {len(result.history)} epoch(s), best held-out NT-Xent "
              f"{result.best_val_loss if result.best_val_loss is not None else 'n/a'}; encoder: {result.checkpoint}")
    return 0
