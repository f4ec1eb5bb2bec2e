"""`cmrprior segment train|predict|combine|index-folds|ship-fold|ship-full|fit-basal|export-onnx` and `cmrprior measure`: thin wrappers that build configs and call one library function."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cmrprior.errors import ConfigError
from cmrprior.io.cohort import open_cohort
from cmrprior.segmentation.config import BACKENDS, DICE_OVER, SegAugmentConfig, SegInference, SegTrainConfig, UNetArgs
from cmrprior.segmentation.context import check_context
from cmrprior.utils.argtypes import at_least
from cmrprior.utils.runfolder_checks import check_out_dir
from cmrprior.utils.runlock import run_lock

log = logging.getLogger(__name__)
_DEFAULT = SegTrainConfig()


def _register_train(sub: argparse._SubParsersAction) -> None:
    """`cmrprior segment train` and its flags."""
    tr = sub.add_parser("train", help="train the U-Net segmenter (optionally with K-fold cross-validation)")
    tr.add_argument("--data", required=True, type=Path, help="ACDC-layout folder or manifest CSV (with masks)")
    tr.add_argument("--out", required=True, type=Path, help="run folder (re-run the same command to resume)")
    tr.add_argument("--folds", type=int, default=1, help="K >= 2: K-fold CV by patient before the final model")
    tr.add_argument("--no-final", action="store_true", help="with --folds: skip the final model on all patients")
    tr.add_argument("--only-fold", type=at_least(0), default=None, metavar="K",
                    help="with --folds: train only fold K (0-based; the same patients as fold K of a full run) and no "
                         "final model, so that the folds can be trained one per session; the cross-validation summary "
                         "is written by the run that finds every fold finished in RUN/cv")
    tr.add_argument("--cache", type=Path, default=None, help="prepared-cohort cache (default RUN/cache)")
    tr.add_argument("--seed", type=int, default=_DEFAULT.seed, help="seed of the split, initialisation and augmentation")
    tr.add_argument("--draw-seed", type=int, default=None, metavar="S",
                    help="another training draw (initialisation, augmentation, batch order) on the folds and "
                         "validation patients of --seed: how much one recipe's results move between trainings")
    tr.add_argument("--epochs", type=int, default=_DEFAULT.max_epochs, help="maximum epochs")
    tr.add_argument("--final-epochs", type=int, default=None, help="maximum epochs of the final model (default --epochs)")
    tr.add_argument("--patience", type=int, default=_DEFAULT.patience,
                    help="epochs without a better validation Dice before training stops")
    tr.add_argument("--batch-size", type=int, default=_DEFAULT.batch_size, help="slices per training step")
    tr.add_argument("--lr", type=float, default=_DEFAULT.lr, help="peak learning rate (AdamW, cosine schedule)")
    tr.add_argument("--dice-over", choices=DICE_OVER, default=_DEFAULT.dice_over,
                    help="the loss's Dice term: pooled over the batch, or per slice then averaged (small structures "
                         "weigh as much as large ones)")
    tr.add_argument("--ce-boundary", type=float, default=_DEFAULT.ce_boundary, metavar="W",
                    help="the cross-entropy of pixels on a boundary between labels counts 1 + W times (0: every "
                         "pixel alike)")
    tr.add_argument("--train-crop", type=int, default=_DEFAULT.train_crop or 0,
                    help="random square crop in pixels; 0 (default) = the whole prepared window")
    tr.add_argument("--channels", type=str, default=",".join(map(str, UNetArgs().channels)),
                    help="U-Net feature channels per level, comma-separated")
    tr.add_argument("--res-units", type=int, default=UNetArgs().num_res_units, help="residual units per U-Net level")
    tr.add_argument("--context-slices", type=int, default=UNetArgs().in_channels,
                    help="adjacent slices per input, centred on the segmented one (odd; 3 = 2.5D)")
    tr.add_argument("--bf16", action="store_true",
                    help="bfloat16 autocast (slower than float32 on a CPU without native bfloat16)")
    tr.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: torch's choice)")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    tr.add_argument("--init", type=Path, default=None,
                    help="start the final model from these segmenter weights (same --channels, --res-units and "
                         "--context-slices) instead of a random initialisation: fine-tune or train further")
    tr.add_argument("--init-cv", type=Path, default=None,
                    help="with --folds: start each fold from the same fold's model of this earlier cv/ folder "
                         "(same data, folds and seed: checked)")
    tr.set_defaults(func=_train)


def _register_set(sub: argparse._SubParsersAction) -> None:
    """`cmrprior segment index-folds|ship-fold|ship-full`: segmenter sets, whole or renewed one model at a time."""
    ix = sub.add_parser("index-folds", help="a segmenter set for out-of-sample masks: the full model and the fold "
                                           "models of a --folds run, with the fingerprints of their training images")
    ix.add_argument("--cv", type=Path, default=None, help="the cv/ folder of `segment train --folds K` (none: the full model only)")
    ix.add_argument("--data", required=True, type=Path, help="the cohort the models were trained on")
    ix.add_argument("--full", required=True, type=Path, help="the full model's .safetensors (trained on all of --data)")
    ix.add_argument("--out", required=True, type=Path, help="folder for the set (weights + folds.json)")
    ix.add_argument("--no-copy-full", action="store_true", help="index the full model where it is instead of copying it")
    ix.add_argument("--generation", default=None,
                    help="a tag naming this generation of models (e.g. v3), recorded for every model with its recipe, "
                         "so that folds shipped later by ship-fold are told apart")
    ix.set_defaults(func=_index_folds)

    sf = sub.add_parser("ship-fold", help="put one finished fold of a --folds run into a segmenter set in place of "
                                          "the set's fold of the same patients; the set is marked mixed until every "
                                          "model is of the new generation")
    sf.add_argument("--cv", required=True, type=Path, help="the cv/ folder of `segment train --folds K [--only-fold k]`")
    sf.add_argument("--fold", required=True, type=at_least(0), help="the fold to ship (0-based)")
    sf.add_argument("--data", required=True, type=Path, help="the cohort the fold was trained on")
    sf.add_argument("--set", required=True, type=Path, help="segmenter-set folder (folds.json), e.g. src/cmrprior/weights/set")
    sf.add_argument("--generation", required=True, help="tag of the recipe's generation (e.g. v3), the same for every fold")
    sf.set_defaults(func=_ship_fold)

    su = sub.add_parser("ship-full", help="replace a segmenter set's full model once every fold is of the new generation")
    su.add_argument("--model", required=True, type=Path, help="the full model (RUN/final/model.safetensors)")
    su.add_argument("--data", required=True, type=Path, help="the cohort it was trained on (all of it)")
    su.add_argument("--set", required=True, type=Path, help="segmenter-set folder (folds.json)")
    su.add_argument("--generation", required=True, help="the generation of the set's folds")
    su.set_defaults(func=_ship_full)


def register(subparsers: argparse._SubParsersAction) -> None:
    seg = subparsers.add_parser("segment", help="heart segmentation: train, predict")
    sub = seg.add_subparsers(dest="segment_command", required=True)

    _register_train(sub)

    pr = sub.add_parser("predict", help="masks for every frame (ED, ES, 4D cine) as NIfTI in the input geometry")
    pr.add_argument("--data", required=True, type=Path, help="ACDC-layout folder or manifest CSV")
    pr.add_argument("--model", type=Path, default=None, help="segmenter .safetensors (default: the shipped one)")
    pr.add_argument("--out", required=True, type=Path, help="run folder (never the input folder)")
    pr.add_argument("--no-cine", action="store_true", help="only ED and ES, even when a 4D cine exists")
    pr.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: torch's choice)")
    pr.add_argument("--backend", choices=BACKENDS, default=SegInference().backend,
                    help="inference engine: eager PyTorch, ONNX Runtime (the onnx extra), or auto (ONNX Runtime when "
                         "installed and matching PyTorch's probabilities)")
    pr.add_argument("--rotations", type=float, nargs="+", default=list(SegInference().rotations), metavar="DEG",
                    help="test-time rotation averaging: extra passes on the heart window at these in-plane angles "
                         "(e.g. 15 -15; each costs one more window pass; see the model card)")
    pr.set_defaults(func=_predict)

    ex = sub.add_parser("export-onnx", help="export a segmenter to ONNX (needs the onnx extra)")
    ex.add_argument("model", type=Path, help="segmenter .safetensors (with its .json)")
    ex.add_argument("out", type=Path, help="the .onnx file to write")
    ex.set_defaults(func=_export_onnx)

    co = sub.add_parser("combine", help="an ensemble segmenter (mean of the members' probabilities) from trained "
                                        "models, or fold by fold from cross-validation runs made with the same folds")
    co.add_argument("sources", nargs="+", type=Path,
                    help="segmenter .safetensors files, or the cv/ folders of `segment train --folds K` runs")
    co.add_argument("--out", required=True, type=Path,
                    help="the ensemble's .safetensors (from files) or a folder of fold_k/ ensembles (from cv/ folders)")
    co.set_defaults(func=_combine)

    _register_set(sub)

    fb = sub.add_parser("fit-basal", help="fit the basal-slice models of a segmenter set on its labelled training "
                                          "cohort (out-of-sample masks against expert masks) and score them")
    fb.add_argument("--data", required=True, type=Path, help="the labelled cohort the set was trained on")
    fb.add_argument("--set", required=True, type=Path, help="segmenter-set folder (folds.json)")
    fb.add_argument("--out", required=True, type=Path,
                    help="folder for <weights stem>.basal.json (copy each beside its weights) and basal_cv.csv")
    fb.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: torch's choice)")
    fb.set_defaults(func=_fit_basal)

    me = subparsers.add_parser("measure", help="per-patient volumes, EF, mass, wall thickness -> RUN/measures.csv")
    me.add_argument("--data", required=True, type=Path, help="ACDC-layout folder or manifest CSV")
    me.add_argument("--out", required=True, type=Path, help="run folder (never inside --data)")
    me.add_argument("--masks", default="segmenter",
                    help="segmenter (default: out-of-sample fold models where the shipped model saw a patient) "
                         "or given (the cohort's own mask files)")
    me.add_argument("--model", type=Path, default=None,
                    help="segmenter-set folder or .safetensors (default: the shipped set)")
    me.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: torch's choice)")
    me.set_defaults(func=_measure)


def _config(args: argparse.Namespace, epochs: int) -> SegTrainConfig:
    channels = tuple(int(c) for c in args.channels.split(","))
    check_context(args.context_slices)
    unet = UNetArgs(channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=args.res_units,
                    in_channels=args.context_slices)
    return SegTrainConfig(seed=args.seed, draw_seed=args.draw_seed, unet=unet, augment=SegAugmentConfig(),
                          max_epochs=epochs, batch_size=args.batch_size, lr=args.lr, dice_over=args.dice_over,
                          ce_boundary=args.ce_boundary, patience=args.patience,
                          train_crop=args.train_crop or None, bf16=args.bf16, max_steps=args.max_steps,
                          num_threads=args.threads)


def _set_threads(threads: int | None) -> None:
    """`--threads`: torch's intra-op threads (torch is imported here, not when the parser is built)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _train(args: argparse.Namespace) -> int:
    # data.prepare and cv load SciPy, the image readers and MONAI (~1 s): kept out of `cmrprior` start-up
    from cmrprior.data.prepare import PrepareConfig, prepare_cohort
    from cmrprior.segmentation.cv import cross_validate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from cmrprior.segmentation.folds import duplicate_images, fingerprint_cohort

    out = Path(args.out)
    if args.init_cv is not None and args.folds < 2:
        raise ConfigError("segment train: --init-cv needs --folds K (K >= 2); use --init for one model")
    if args.only_fold is not None and args.folds < 2:
        raise ConfigError("segment train: --only-fold needs --folds K (K >= 2)")
    if args.only_fold is not None and args.only_fold >= args.folds:
        raise ConfigError(f"segment train: --only-fold {args.only_fold} is not a fold of --folds {args.folds} "
                          f"(0..{args.folds - 1})")
    for flag, on in (("--no-final", args.no_final), ("--only-fold", args.only_fold is not None)):
        if args.init is not None and on:
            raise ConfigError(f"segment train: --init starts the final model, which {flag} skips; use --init-cv for "
                              "the folds")
    cohort = open_cohort(args.data)
    prepared = prepare_cohort(cohort, PrepareConfig(), cache_dir=args.cache or out / "cache")
    if args.folds >= 2:
        duplicates = duplicate_images(fingerprint_cohort(cohort))
        for kept, dup in duplicates:
            log.info("%s has the images of %s: both are held out by the same fold", dup, kept)
        cross_validate(prepared, _config(args, args.epochs), out / "cv", folds=args.folds, duplicates=duplicates,
                       init_cv=args.init_cv, only_fold=args.only_fold)
        if args.only_fold is not None:
            fold_dir = out / "cv" / f"fold_{args.only_fold}"
            done = (fold_dir / "metrics.csv").exists()
            print(f"fold {args.only_fold}: {'finished' if done else 'not finished (re-run the same command to resume)'}"
                  f": {fold_dir}")
            return 0
        if not (out / "cv" / "cv_summary.csv").exists() or args.no_final:
            return 0
    from cmrprior.segmentation.train import train_segmenter  # torch (seconds to import): only when a command runs

    model = train_segmenter(prepared, _config(args, args.final_epochs or args.epochs).with_init(args.init), out / "final")
    log.info("segmenter: %s", model)
    return 0


def _combine(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.ensemble import combine_cv, combine_weights

    kinds = {p.is_dir() for p in args.sources}
    if len(kinds) != 1:
        raise ConfigError("segment combine: give either segmenter files or cv/ folders, not both")
    if kinds == {True}:
        print(f"fold ensembles: {combine_cv(args.sources, args.out)}")
    else:
        print(f"ensemble segmenter: {combine_weights(args.sources, args.out)}")
    return 0


def _index_folds(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.folds import load_segmenter_set, write_segmenter_set

    index = write_segmenter_set(args.out, open_cohort(args.data), full_weights=args.full, cv_dir=args.cv,
                                copy_full=not args.no_copy_full, generation=args.generation)
    print(f"segmenter set: {index}\n{load_segmenter_set(index.parent).describe()}")
    return 0


def _ship_fold(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.set_pieces import ship_fold

    seg_set = ship_fold(args.set, args.cv / f"fold_{args.fold}", args.fold, open_cohort(args.data), args.generation)
    print(f"fold {args.fold} shipped to {args.set}\n{seg_set.describe()}")
    if not seg_set.mixed or seg_set.new_models() == tuple(m.name for m in seg_set.folds):
        print("every fold is of this generation: train the full model and `cmrprior segment ship-full` it; "
              "then `cmrprior segment fit-basal`")
    return 0


def _ship_full(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.set_pieces import ship_full

    seg_set = ship_full(args.set, args.model, open_cohort(args.data), args.generation)
    print(f"full model shipped to {args.set}\n{seg_set.describe()}")
    return 0


def _fit_basal(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.basal_fit import fit_basal_set  # image readers, MONAI: see _train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _set_threads(args.threads)
    print(f"basal models: {fit_basal_set(args.data, args.set, args.out)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.cohort_predict import predict_cohort  # image readers, MONAI (~0.5 s): see _train

    _set_threads(args.threads)
    inference = SegInference(backend=args.backend, rotations=tuple(args.rotations))  # checked before --out is made
    with run_lock(check_out_dir(args.out, [args.data])):  # one process at a time in the output folder
        predict_cohort(args.data, args.out, model_path=args.model, include_cine=not args.no_cine, inference=inference)
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.onnx_runtime import export_onnx

    print(f"ONNX segmenter: {export_onnx(args.model, args.out)}")
    return 0


def _measure(args: argparse.Namespace) -> int:
    from cmrprior.segmentation.measures import check_mask_args, measure_data  # image readers, MONAI: see _train

    _set_threads(args.threads)
    check_mask_args(args.masks, args.model)  # before --out is made
    with run_lock(check_out_dir(args.out, [args.data])):  # one process at a time in the output folder
        print(measure_data(args.data, args.out, masks=args.masks, model=args.model))
    return 0
