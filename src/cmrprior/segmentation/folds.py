"""Out-of-sample masks: which segmenter may segment which patient.

A segmenter trained on a patient gives that patient optimistic masks; when the masks feed a diagnosis model
that is scored on the patient, the study would rest on information a user does not have. So a set of
segmenters is shipped (or made by the user with `cmrprior segment train --folds K`): the full model,
trained on every patient of its cohort, and K fold models, each trained without one fold. Patients are
recognised by the fingerprints of their images (`cmrprior.io.fingerprint`), not by folder names. A patient
the full model never saw is segmented by it; a patient it saw is segmented by the fold model that did not.

Index file (`folds.json`, next to the weights):

    {"full": {"weights": "segmenter_unet.safetensors", "sha256": ..., "patients": [...], "fingerprints": [...]},
     "folds": [{"weights": "fold_0.safetensors", "sha256": ..., "patients": [...], "fingerprints": [...]}, ...]}

`patients`/`fingerprints` are the training patients (validation patients used for early stopping count as
seen) and the ED and ES image fingerprints of each. A set may have no fold models yet: its full model's
own training patients then get in-sample masks, which `choose(strict=False)` marks and callers must report.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cmrprior.errors import DataError, LeakageError
from cmrprior.io.fingerprint import patient_fingerprints
from cmrprior.io.records import Cohort
from cmrprior.segmentation.predict import file_sha256
from cmrprior.utils import atomic

INDEX_NAME = "folds.json"


@dataclass(frozen=True)
class SegmenterModel:
    """One segmenter and the patients (ids and image fingerprints) it was trained on."""

    name: str  # "full" or "fold_k"
    weights: Path
    sha256: str
    patients: frozenset[str]
    fingerprints: frozenset[str]

    def saw(self, fingerprints: tuple[str, ...]) -> bool:
        return bool(self.fingerprints & set(fingerprints))


@dataclass(frozen=True)
class SegmenterChoice:
    """The model that segments one patient, whether it is out-of-sample for that patient, and why."""

    patient_id: str
    model: SegmenterModel
    out_of_sample: bool | None  # None: the model's training patients are not known
    reason: str

    def as_row(self) -> dict[str, object]:
        return {"patient_id": self.patient_id, "model": self.model.name, "weights": self.model.weights.name,
                "sha256": self.model.sha256, "out_of_sample": self.out_of_sample, "reason": self.reason}


@dataclass(frozen=True)
class SegmenterSet:
    """The full model and its fold models (see the module doc)."""

    full: SegmenterModel
    folds: tuple[SegmenterModel, ...]

    def choose(self, patient_id: str, fingerprints: tuple[str, ...], *, strict: bool = True) -> SegmenterChoice:
        """The model for a patient with these image fingerprints. When every model saw the patient: strict
        raises LeakageError; otherwise the full model, marked in-sample (the caller must say so)."""
        if not self.full.saw(fingerprints):
            return SegmenterChoice(patient_id, self.full, True, "not in the training data of the full model")
        for fold in self.folds:
            if not fold.saw(fingerprints):
                return SegmenterChoice(patient_id, fold, True,
                                       f"in the full model's training data; {fold.name} never saw it")
        if strict:
            raise LeakageError(f"patient {patient_id}: every segmenter of the set was trained on its images; "
                               "no out-of-sample mask can be made")
        return SegmenterChoice(patient_id, self.full, False, "IN-SAMPLE: the full model was trained on this "
                                                             "patient and no fold model of the set left it out")


def load_segmenter_set(folder: str | Path) -> SegmenterSet:
    """The set described by `folder/folds.json`; DataError when it is missing or inconsistent (a weights
    file whose sha256 differs from the index)."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    try:
        data = json.loads(index.read_text())

        def model(name: str, d: dict) -> SegmenterModel:
            weights = folder / d["weights"]
            return SegmenterModel(name, weights, d["sha256"], frozenset(d["patients"]), frozenset(d["fingerprints"]))

        full = model("full", data["full"])
        folds = tuple(model(f"fold_{k}", d) for k, d in enumerate(data["folds"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(index, f"not a segmenter-set index ({type(exc).__name__}: {exc})") from exc
    for m in (full, *folds):
        if not m.weights.exists():
            raise DataError(m.weights, "segmenter weights listed in the index are missing")
    return SegmenterSet(full, folds)


def verify(seg_set: SegmenterSet) -> None:
    """Check every weights file against its sha256 (DataError naming the file)."""
    for m in (seg_set.full, *seg_set.folds):
        if file_sha256(m.weights) != m.sha256:
            raise DataError(m.weights, "weights differ from the sha256 in the segmenter-set index")


def write_segmenter_set(out: str | Path, cohort: Cohort, *, full_weights: str | Path,
                        cv_dir: str | Path | None = None, copy_full: bool = True) -> Path:
    """Copy the fold models of a `cmrprior segment train --folds K` run (`cv_dir/fold_k/model.safetensors`
    and `test_patients.json`) and the full model into `out`, with their index. `cohort` is the cohort they
    were trained on (fingerprints are computed from its images; expert masks are not read). copy_full=False
    indexes the full model where it is (a path relative to `out`) instead of copying it."""
    from cmrprior.segmentation.cv import FOLD_SPLIT_FILE, MODEL_FILE, read_fold_split  # the training stack

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prints = {r.patient_id: patient_fingerprints(r) for r in cohort.patients}

    def entry(weights: Path, name: str, patients: list[str], copy: bool = True) -> dict:
        missing = sorted(set(patients) - set(prints))
        if missing:
            raise DataError(weights, f"trained on patients not in the cohort: {missing[:5]}")
        if copy:
            for suffix in (".safetensors", ".json"):
                shutil.copyfile(weights.with_suffix(suffix), out / f"{name}{suffix}")
        rel = f"{name}.safetensors" if copy else os.path.relpath(weights.resolve(), out.resolve())
        return {"weights": rel, "sha256": file_sha256(out / rel),
                "patients": sorted(patients), "fingerprints": sorted(f for p in patients for f in prints[p])}

    folds = []
    fold_dirs = [] if cv_dir is None else sorted(Path(cv_dir).glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    for k, fold_dir in enumerate(fold_dirs):
        split = read_fold_split(fold_dir / FOLD_SPLIT_FILE)
        folds.append(entry(fold_dir / MODEL_FILE, f"fold_{k}", list(split.train)))
    if cv_dir is not None and len(folds) < 2:
        raise DataError(Path(cv_dir), "needs at least 2 finished folds (fold_k/model.safetensors)")
    full = entry(Path(full_weights), "full", [r.patient_id for r in cohort.patients], copy=copy_full)
    return atomic.write_json(out / INDEX_NAME, {"full": full, "folds": folds})


SHIPPED_SET = Path(__file__).resolve().parents[1] / "weights" / "set"


def fingerprint_cohort(cohort: Cohort) -> dict[str, tuple[str, str]]:
    """patient id -> (ED, ES) image fingerprints (images only; expert masks are not read)."""
    return {r.patient_id: patient_fingerprints(r) for r in cohort.patients}


def duplicate_images(prints: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """(kept id, duplicate id) for every patient whose ED or ES image has the pixels of an earlier patient's
    image (in cohort order): the same scan under two ids, which would put one patient on both sides of a split."""
    seen: dict[str, str] = {}
    out = []
    for pid, fps in prints.items():
        first = next((seen[f] for f in fps if f in seen), None)
        if first is not None:
            out.append((first, pid))
            continue
        for f in fps:
            seen[f] = pid
    return out


def indexed_model(weights: Path) -> SegmenterModel | None:
    """The weights file `weights` with the training patients that a segmenter-set index lists for it (matched by
    sha256, so a copy elsewhere is recognised): the index next to it, one in a folder beside it, or the shipped
    set's; None when no index knows the file. Indexes that cannot be read are passed over."""
    sha = file_sha256(weights)
    folders = [weights.parent, *sorted(p.parent for p in weights.parent.glob(f"*/{INDEX_NAME}")), SHIPPED_SET]
    for folder in dict.fromkeys(f.resolve() for f in folders):
        if not (folder / INDEX_NAME).is_file():
            continue
        try:
            seg_set = load_segmenter_set(folder)
        except DataError:
            continue
        for m in (seg_set.full, *seg_set.folds):
            if m.sha256 == sha:
                return SegmenterModel(m.name, weights, sha, m.patients, m.fingerprints)
    return None


def segmenter_chooser(model: str | Path | None = None) -> Callable[[str, tuple[str, ...]], SegmenterChoice]:
    """`(patient_id, image fingerprints) -> SegmenterChoice` for `model` (see `choose_segmenters`), with the set
    or the weights read once, for callers that meet patients one at a time."""
    if model is not None and not Path(model).exists():
        raise DataError(Path(model), "segmenter weights not found (a .safetensors file or a segmenter-set folder)")
    if model is not None and Path(model).is_file():
        weights = Path(model)
        m = indexed_model(weights)
        if m is None:
            given = SegmenterModel(weights.stem, weights, file_sha256(weights), frozenset(), frozenset())
            return lambda pid, fps: SegmenterChoice(pid, given, None, "given model (its training patients are not known)")
        return lambda pid, fps: (SegmenterChoice(pid, m, False, f"IN-SAMPLE: the given model ({m.name} of its set) was "
                                                               "trained on this patient") if m.saw(fps) else
                                 SegmenterChoice(pid, m, True, f"the given model ({m.name} of its set) never saw it"))
    seg_set = load_segmenter_set(SHIPPED_SET if model is None else Path(model))
    return lambda pid, fps: seg_set.choose(pid, fps, strict=False)


def choose_segmenters(prints: dict[str, tuple[str, str]], model: str | Path | None = None
                      ) -> dict[str, SegmenterChoice]:
    """The segmenter of every patient (`SegmenterSet.choose(strict=False)`): `model` None = the shipped set,
    a folder = the set indexed there, a weights file = that model for everyone: in-sample for the patients it
    was trained on where a set index lists the file (`indexed_model`), else training data unknown
    (`out_of_sample` None)."""
    choose = segmenter_chooser(model)
    return {pid: choose(pid, fps) for pid, fps in prints.items()}


def in_sample(choices: dict[str, SegmenterChoice]) -> list[str]:
    """Patients whose masks come from a model trained on them."""
    return sorted(pid for pid, c in choices.items() if c.out_of_sample is False)


def masks_statement(choices: dict[str, SegmenterChoice]) -> str:
    """One line for tables and the report: are the masks out-of-sample for every patient?"""
    inside = in_sample(choices)
    unknown = sum(c.out_of_sample is None for c in choices.values())
    if inside:
        return (f"IN-SAMPLE masks for {len(inside)} of {len(choices)} patients (the segmenter was trained on them, "
                "optimistic)")
    if unknown:
        return f"masks from a given segmenter whose training patients are not known ({unknown} patients)"
    return "masks: out-of-sample segmenter for every patient"


def all_out_of_sample(choices: dict[str, SegmenterChoice]) -> bool | None:
    """True: every patient's model never saw it; False: some were in-sample; None: not known for some."""
    if in_sample(choices):
        return False
    return None if any(c.out_of_sample is None for c in choices.values()) else True
