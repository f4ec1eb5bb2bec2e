"""Writing a segmenter set (`folds.json`, see `cmrprior.segmentation.folds`) whole, or renewing it one model at a
time.

A K-fold training of a new recipe takes longer than a working session, but its folds are independent
(`segment train --folds K --only-fold k`), so they land one at a time. `ship_fold` copies one finished fold into
a set in place of the set's fold of the same patients: its weights, its JSON (the network arguments, its training
config, and its own index entry `set_entry` with its training and held-out patients and their image
fingerprints), its per-epoch log and held-out QC rows (`fold_k.log.jsonl`, `fold_k.metrics.csv`), and the set index with the fold's recipe digest
(`config.recipe_digest`) and `generation` tag. Until every model is of that generation the index says the set is
mixed and which models are new (`SegmenterSet.describe`); every patient is still segmented by a model that never
saw it. `ship_full` replaces the full model, only once every fold is of its generation and recipe. A basal model
fitted for the replaced weights is removed (it would be refused beside new weights): `segment fit-basal` fits
new ones.

A ship killed half-way leaves weights or JSON that disagree with the index; loading the set then refuses it,
naming the file, and the same ship command completes it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cmrprior.errors import ConfigError, DataError
from cmrprior.io.records import Cohort
from cmrprior.segmentation.basal import basal_path, load_basal_model
from cmrprior.segmentation.config import recipe_digest
from cmrprior.segmentation.cv import FOLD_SPLIT_FILE, MODEL_FILE, FoldSplit, read_fold_split
from cmrprior.segmentation.folds import (INDEX_NAME, SET_ENTRY_KEY, SegmenterSet, check_model_files,
                                         fingerprint_cohort, load_segmenter_set, set_from_index)
from cmrprior.segmentation.predict import file_sha256
from cmrprior.utils import atomic

# shipped beside a model's weights as `<stem>.<name>` when its run folder has them: the per-epoch training log
# (`train.train_segmenter`) and a fold's held-out QC rows (`cv.cross_validate`), the figures a model card is made from
RUN_RECORDS = ("log.jsonl", "metrics.csv")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise DataError(path, "not a JSON object")
    return data


def model_recipe(weights: Path) -> str | None:
    """The recipe digest of the training config in the JSON beside `weights` (None: no JSON, or no config in it)."""
    meta = weights.with_suffix(".json")
    config = _read_json(meta).get("config") if meta.is_file() else None
    return recipe_digest(config) if isinstance(config, dict) else None


def _entry(name: str, weights_rel: str, sha256: str, split: FoldSplit, prints: dict[str, tuple[str, str]],
           source: Path, recipe: str | None, generation: str | None) -> dict:
    """A model's index entry; `source` is named when a patient is not in the cohort."""
    missing = sorted(set(split.train + split.test) - set(prints))
    if missing:
        raise DataError(source, f"trained or held out patients not in the cohort: {missing[:5]}")
    entry = {"weights": weights_rel, "sha256": sha256, "patients": sorted(split.train),
             "fingerprints": sorted(f for p in split.train for f in prints[p]), "recipe": recipe,
             "generation": generation}
    return entry if name == "full" else {**entry, "held_out": sorted(split.test)}


def _copy_model(src: Path, dest: Path, name: str, entry: dict, prints: dict[str, tuple[str, str]]) -> None:
    """Copy the weights `src` to `dest` and its JSON beside it, with the model's own `set_entry` when it has a
    generation; its run folder's `RUN_RECORDS`; remove a basal model fitted for other weights."""
    with atomic.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    if entry.get("generation") is None:  # an untagged set: the JSON as trained
        with atomic.atomic_path(dest.with_suffix(".json")) as tmp:
            shutil.copyfile(src.with_suffix(".json"), tmp)
    else:
        held = entry.get("held_out", [])
        meta = {**_read_json(src.with_suffix(".json")), SET_ENTRY_KEY: {
            "name": name, **entry, "held_out_fingerprints": sorted(f for p in held for f in prints[p])}}
        atomic.write_json(dest.with_suffix(".json"), meta)
    for record in RUN_RECORDS:
        if (src.parent / record).is_file():
            with atomic.atomic_path(dest.with_name(f"{dest.stem}.{record}")) as tmp:
                shutil.copyfile(src.parent / record, tmp)
    basal = basal_path(dest)
    if basal.exists() and load_basal_model(basal).segmenter_sha256 != entry["sha256"]:
        basal.unlink()


def _write_index(out: Path, data: dict) -> SegmenterSet:
    """Write `data` (full and fold entries, `generation`) with the status that follows from it, then load it."""
    seg_set, _ = set_from_index(out, data)
    data = {**data, "status": {"mixed": seg_set.mixed, "new": list(seg_set.new_models()), "note": seg_set.describe()}}
    atomic.write_json(out / INDEX_NAME, data)
    return load_segmenter_set(out)


def write_set(out: str | Path, cohort: Cohort, *, full_weights: str | Path, cv_dir: str | Path | None = None,
              copy_full: bool = True, generation: str | None = None) -> Path:
    """`folds.write_segmenter_set`: a whole set from one cross-validation run and a full model."""
    out, full_weights = Path(out), Path(full_weights)
    out.mkdir(parents=True, exist_ok=True)
    prints = fingerprint_cohort(cohort)
    folds = []
    fold_dirs = [] if cv_dir is None else sorted(Path(cv_dir).glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    for k, fold_dir in enumerate(fold_dirs):
        split, weights = read_fold_split(fold_dir / FOLD_SPLIT_FILE), fold_dir / MODEL_FILE
        entry = _entry(f"fold_{k}", f"fold_{k}.safetensors", file_sha256(weights), split, prints, weights,
                       model_recipe(weights), generation)
        _copy_model(weights, out / f"fold_{k}.safetensors", f"fold_{k}", entry, prints)
        folds.append(entry)
    if cv_dir is not None and len(folds) < 2:
        raise DataError(Path(cv_dir), "needs at least 2 finished folds (fold_k/model.safetensors)")
    everyone = FoldSplit(tuple(r.patient_id for r in cohort.patients), ())
    rel = "full.safetensors" if copy_full else os.path.relpath(full_weights.resolve(), out.resolve())
    full = _entry("full", rel, file_sha256(full_weights), everyone, prints, full_weights, model_recipe(full_weights),
                  generation)
    if copy_full:
        _copy_model(full_weights, out / rel, "full", full, prints)
    _write_index(out, {"full": full, "folds": folds, "generation": generation})
    return out / INDEX_NAME


def _read_set(set_dir: Path, replaced: str) -> tuple[SegmenterSet, dict]:
    """The set at `set_dir` and its parsed index, every model but `replaced` checked (`check_model_files`): a ship
    of `replaced` killed half-way is completed by the same ship, not refused."""
    index = set_dir / INDEX_NAME
    data = _read_json(index)
    try:
        seg_set, entries = set_from_index(set_dir, data)
    except (KeyError, TypeError) as exc:
        raise DataError(index, f"not a segmenter-set index ({type(exc).__name__}: {exc})") from exc
    for m in seg_set.models:
        if m.name != replaced:
            check_model_files(m, entries[m.name])
    return seg_set, data


def _check_generation(generation: str) -> None:
    if not generation or not generation.strip() or generation != generation.strip():
        raise ConfigError(f"a generation tag is a non-empty name without surrounding spaces, got {generation!r}")


def ship_fold(set_dir: str | Path, fold_dir: str | Path, k: int, cohort: Cohort, generation: str) -> SegmenterSet:
    """Put the finished fold `fold_dir` (`RUN/cv/fold_k` of `segment train --folds K [--only-fold k]`) in place
    of fold `k` of the set at `set_dir`, tagged `generation`; `cohort` is the cohort it was trained on. Returns
    the set as now indexed.

    Raises:
        DataError: the fold is not finished; it trained on other patients or images than the set's fold `k`;
            another fold of this generation was trained with another recipe; an inconsistent set.
        ConfigError: a bad generation tag, or no fold `k` in the set.
    """
    _check_generation(generation)
    set_dir, fold_dir = Path(set_dir), Path(fold_dir)
    index = set_dir / INDEX_NAME
    name = f"fold_{k}"
    _, data = _read_set(set_dir, name)
    if not 0 <= k < len(data["folds"]):
        raise ConfigError(f"{index}: the set has folds 0..{len(data['folds']) - 1}; ship-fold replaces one of them")
    weights = fold_dir / MODEL_FILE
    if not weights.is_file():
        raise DataError(weights, "the fold has not finished training (re-run its `segment train --only-fold` command)")
    split = read_fold_split(fold_dir / FOLD_SPLIT_FILE)
    prints = fingerprint_cohort(cohort)
    recipe = model_recipe(weights)
    entry = _entry(name, f"{name}.safetensors", file_sha256(weights), split, prints, fold_dir / FOLD_SPLIT_FILE,
                   recipe, generation)
    old = data["folds"][k]
    if set(old["patients"]) != set(entry["patients"]):
        raise DataError(fold_dir / FOLD_SPLIT_FILE, f"{name} of this run trained on other patients than {name} of the "
                                                    f"set {set_dir} (another seed, fold count or cohort)")
    if set(old["fingerprints"]) != set(entry["fingerprints"]):
        raise DataError(fold_dir / FOLD_SPLIT_FILE, f"the images of {name}'s training patients differ from those "
                                                    f"the set {set_dir} indexes: another cohort")
    others = {f"fold_{j}": d.get("recipe") for j, d in enumerate(data["folds"])
              if j != k and d.get("generation") == generation}
    clash = sorted(n for n, r in others.items() if r != recipe)
    if clash:
        raise DataError(weights.with_suffix(".json"), f"trained with recipe {str(recipe)[:12]}, but {', '.join(clash)} of "
                                                      f"generation {generation} with another: one generation, one recipe")
    _copy_model(weights, set_dir / entry["weights"], name, entry, prints)
    data["folds"][k] = entry
    return _write_index(set_dir, {k: v for k, v in data.items() if k != "status"} | {"generation": generation})


def ship_full(set_dir: str | Path, weights: str | Path, cohort: Cohort, generation: str) -> SegmenterSet:
    """Replace the full model of the set at `set_dir` (where its index points, e.g. the shipped
    `segmenter_unet.safetensors` beside the set folder) by `weights` (`RUN/final/model.safetensors`, trained on
    all of `cohort`), tagged `generation`. Returns the set as now indexed.

    Raises:
        DataError: a fold of the set is not yet of this generation or recipe (the full model is rebuilt when the
            last fold has landed); `weights` missing; an inconsistent set. ConfigError: a bad generation tag.
    """
    _check_generation(generation)
    set_dir, weights = Path(set_dir), Path(weights)
    index = set_dir / INDEX_NAME
    seg_set, data = _read_set(set_dir, "full")
    behind = [m.name for m in seg_set.folds if m.generation != generation]
    if behind or len({m.recipe for m in seg_set.folds}) > 1:
        raise DataError(index, f"{', '.join(behind) or 'the folds'} not all of generation {generation} and one recipe "
                               "yet: the full model is replaced when the last fold has landed (`segment ship-fold`)")
    if not weights.is_file():
        raise DataError(weights, "full segmenter weights not found")
    prints = fingerprint_cohort(cohort)
    everyone = FoldSplit(tuple(r.patient_id for r in cohort.patients), ())
    entry = _entry("full", data["full"]["weights"], file_sha256(weights), everyone, prints, weights,
                   model_recipe(weights), generation)
    if set(entry["fingerprints"]) != set(data["full"]["fingerprints"]):
        raise DataError(weights, f"trained on other patients or images than the full model of the set {set_dir}")
    _copy_model(weights, set_dir / entry["weights"], "full", entry, prints)
    data["full"] = entry
    return _write_index(set_dir, {k: v for k, v in data.items() if k != "status"} | {"generation": generation})
