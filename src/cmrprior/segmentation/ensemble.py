"""Segmenter ensembles: several trained U-Nets stored and run as one segmenter (`cmrprior segment combine`).

The members' softmax probabilities are averaged (`network.SegmenterEnsemble`). The combined weights file is
an ordinary segmenter file: `predict`, `measure`, the study, segmenter sets, basal models and both inference
engines take it where they take one U-Net. Each member runs on the heart window, so that pass costs members
times as long; the heart-finding pass on the whole field of view, the slowest, runs the first member only
(`SegmenterEnsemble.locator`; under ONNX Runtime the exported graph runs whole).

Two uses:
- `combine_weights`: any trained models, e.g. the K fold models of a cross-validation, for new patients.
- `combine_cv`: fold by fold, the fold models of cross-validation runs made with the same folds (for
  example two training recipes), so that the ensemble itself can be cross-validated. Runs whose fold k
  held out other patients are refused: their ensemble would have been trained on its own test patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cmrprior.errors import ConfigError, DataError
from cmrprior.segmentation.cv import FOLD_SPLIT_FILE, read_fold_split
from cmrprior.segmentation.network import SegmenterEnsemble, ensemble_args, load_segmenter, save_segmenter
from cmrprior.segmentation.predict import file_sha256
from cmrprior.segmentation.train import MODEL_FILE


def combine_weights(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Write the ensemble of the segmenters at `paths` to `out` (.safetensors, with its .json listing each
    member's arguments, source file, sha256 and training metadata). Returns `out`.

    Raises:
        ConfigError: fewer than 2 members, or `out` is one of them. DataError: unreadable weights, a member
            that is itself an ensemble, or members that differ in input slices, classes or divisor (naming the
            file).
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ConfigError(f"an ensemble needs at least 2 segmenters, got {len(paths)}")
    if Path(out).suffix != ".safetensors":
        raise ConfigError(f"the ensemble's weights file must end in .safetensors, got {out}")
    if Path(out).resolve() in {p.resolve() for p in paths}:
        raise ConfigError(f"the ensemble would overwrite its member {out}; write it elsewhere")
    models, args, sources = [], [], []
    for path in paths:
        model, margs, meta = load_segmenter(path)
        if "members" in meta:
            raise DataError(path, "is already an ensemble; combine its members instead")
        try:
            ensemble_args([*args, margs])
        except ConfigError as exc:
            raise DataError(path, f"cannot join the ensemble: {exc}") from exc
        models.append(model)
        args.append(margs)
        sources.append({"unet_args": margs.to_json(), "source": str(path), "sha256": file_sha256(path),
                        "training": {k: v for k, v in meta.items() if k != "unet_args"}})
    return save_segmenter(SegmenterEnsemble(models), args[0], out, {"members": sources})


def _fold_dirs(cv_dir: Path) -> dict[str, Path]:
    folds = {d.name: d for d in cv_dir.glob("fold_*") if (d / MODEL_FILE).exists()}
    if not folds:
        raise DataError(cv_dir, f"no finished fold (fold_k/{MODEL_FILE}) of a `segment train --folds K` run")
    return folds


def combine_cv(cv_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Fold by fold, the ensemble of the fold models of cross-validation runs (`RUN/cv` folders) made with the
    same folds: `out/fold_k/model.safetensors` and its `test_patients.json`, the layout `segment index-folds`
    and the benchmarks read. Returns `out`.

    Raises:
        ConfigError: fewer than 2 runs, or `out` inside one of them. DataError: a run without finished folds,
            runs with different finished folds, or a fold whose held-out (or training) patients differ between
            runs (naming the file).
    """
    cv_dirs = [Path(d) for d in cv_dirs]
    if len(cv_dirs) < 2:
        raise ConfigError(f"an ensemble needs at least 2 cross-validation runs, got {len(cv_dirs)}")
    out = Path(out)
    for d in cv_dirs:
        if out.resolve() == d.resolve() or d.resolve() in out.resolve().parents:
            raise ConfigError(f"the fold ensembles would be written into the cross-validation run {d}; "
                              "write them to a new folder")
    runs = [_fold_dirs(d) for d in cv_dirs]
    for d, folds in zip(cv_dirs[1:], runs[1:]):
        if set(folds) != set(runs[0]):
            raise DataError(d, f"finished folds {sorted(folds)} differ from {sorted(runs[0])} of {cv_dirs[0]}")
    for name in sorted(runs[0], key=lambda n: int(n.split("_")[1])):
        split = read_fold_split(runs[0][name] / FOLD_SPLIT_FILE)
        for folds in runs[1:]:
            if not read_fold_split(folds[name] / FOLD_SPLIT_FILE).same_patients(split):
                raise DataError(folds[name] / FOLD_SPLIT_FILE,
                                f"{name} splits the patients differently from {runs[0][name] / FOLD_SPLIT_FILE}; "
                                "an ensemble of the two would have been trained on its own test patients")
        (out / name).mkdir(parents=True, exist_ok=True)
        combine_weights([folds[name] / MODEL_FILE for folds in runs], out / name / MODEL_FILE)
        split.write(out / name / FOLD_SPLIT_FILE)
    return out
