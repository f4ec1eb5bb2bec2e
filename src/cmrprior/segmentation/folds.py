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

A set is renewed one model at a time (`cmrprior.segmentation.set_pieces`: one fold per session). Each entry may
record the `recipe` that trained it (`config.recipe_digest`) and a `generation` tag, and fold entries their
`held_out` patients; the index then names the generation being built and whether the set is `mixed` (some
models of another generation or recipe) and which models are `new`, and each fold's JSON beside its weights
carries its own entry (`set_entry`, with the held-out patients' fingerprints). A mixed set still gives every
patient a model that never saw it, but whatever reports it says it is mixed (`SegmenterSet.describe`); an index
whose status or fold JSON disagrees with its entries is refused. Indexes without these keys (older sets) read as
one unrecorded generation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cmrprior.errors import DataError, LeakageError
from cmrprior.io.fingerprint import patient_fingerprints
from cmrprior.io.records import Cohort
from cmrprior.segmentation.predict import file_sha256

INDEX_NAME = "folds.json"
SET_ENTRY_KEY = "set_entry"  # a model's own index entry, in the JSON beside its weights
_ENTRY_FACTS = ("sha256", "patients", "fingerprints", "recipe", "generation")  # must agree with the index


@dataclass(frozen=True)
class SegmenterModel:
    """One segmenter and the patients (ids and image fingerprints) it was trained on."""

    name: str  # "full" or "fold_k"
    weights: Path
    sha256: str
    patients: frozenset[str]
    fingerprints: frozenset[str]
    recipe: str | None = None  # `config.recipe_digest` of its training config (None: not recorded)
    generation: str | None = None  # the tag it was shipped under (None: not recorded)

    def saw(self, fingerprints: tuple[str, ...]) -> bool:
        return bool(self.fingerprints & set(fingerprints))

    @property
    def lineage(self) -> str:
        """Its generation and recipe in words."""
        gen = f"generation {self.generation}" if self.generation else "an unrecorded generation"
        return gen + (f" (recipe {self.recipe[:12]})" if self.recipe else "")


@dataclass(frozen=True)
class SegmenterChoice:
    """The model that segments one patient, whether it is out-of-sample for that patient, and why."""

    patient_id: str
    model: SegmenterModel
    out_of_sample: bool | None  # None: the model's training patients are not known
    reason: str
    set_note: str | None = None  # `SegmenterSet.describe()` when the model comes from a mixed set

    def as_row(self) -> dict[str, object]:
        return {"patient_id": self.patient_id, "model": self.model.name, "weights": self.model.weights.name,
                "sha256": self.model.sha256, "out_of_sample": self.out_of_sample, "reason": self.reason,
                "generation": self.model.generation or ""}


@dataclass(frozen=True)
class SegmenterSet:
    """The full model and its fold models (see the module doc)."""

    full: SegmenterModel
    folds: tuple[SegmenterModel, ...]
    generation: str | None = None  # the generation being built (the index's `generation`); None: not recorded

    @property
    def models(self) -> tuple[SegmenterModel, ...]:
        return (self.full, *self.folds)

    @property
    def mixed(self) -> bool:
        """Some model is of another generation than the set's, or a fold of another recipe than the others (the
        full model may train longer than its folds: only its generation counts)."""
        return (any(m.generation != self.generation for m in self.models)
                or len({m.recipe for m in self.folds}) > 1)

    def new_models(self) -> tuple[str, ...]:
        """Names of the models of the set's generation, when the set is mixed (none when it is whole)."""
        if self.generation is None or all(m.generation == self.generation for m in self.models):
            return ()  # whole, or mixed by the folds' recipes only
        return tuple(m.name for m in self.models if m.generation == self.generation)

    def describe(self) -> str:
        """One line for outputs: the set's generation, or, when it is mixed, which models are new and which not."""
        if not self.mixed:
            return (f"segmenter set of {(self.folds[0] if self.folds else self.full).lineage}: the full model and "
                    f"{len(self.folds)} fold models")
        groups: dict[str, list[str]] = {}
        for m in self.models:
            groups.setdefault(m.lineage, []).append(m.name)
        new = set(self.new_models())
        parts = [f"{', '.join(names)} of {lineage}{' (new)' if new & set(names) else ''}"
                 for lineage, names in groups.items()]
        what = f"{len(new)} of {len(self.models)} models new" if new else "folds of different recipes"
        return f"MIXED segmenter set ({what}): " + "; ".join(parts)

    def choose(self, patient_id: str, fingerprints: tuple[str, ...], *, strict: bool = True) -> SegmenterChoice:
        """The model for a patient with these image fingerprints. When every model saw the patient: strict
        raises LeakageError; otherwise the full model, marked in-sample (the caller must say so). A mixed set's
        choices carry its `describe()` line."""
        note = self.describe() if self.mixed else None
        if not self.full.saw(fingerprints):
            return SegmenterChoice(patient_id, self.full, True, "not in the training data of the full model", note)
        for fold in self.folds:
            if not fold.saw(fingerprints):
                return SegmenterChoice(patient_id, fold, True,
                                       f"in the full model's training data; {fold.name} never saw it", note)
        if strict:
            raise LeakageError(f"patient {patient_id}: every segmenter of the set was trained on its images; "
                               "no out-of-sample mask can be made")
        return SegmenterChoice(patient_id, self.full, False, "IN-SAMPLE: the full model was trained on this "
                                                             "patient and no fold model of the set left it out", note)


def load_segmenter_set(folder: str | Path) -> SegmenterSet:
    """The set described by `folder/folds.json`; DataError when it is missing or inconsistent: a weights file
    that is missing, a fold's JSON whose `set_entry` disagrees with the index (or is absent where the index records
    a generation), an index whose status (mixed, new models) does not follow from its entries. sha256 of the
    weights: `verify`."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    try:
        data = json.loads(index.read_text())
        seg_set, entries = set_from_index(folder, data)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(index, f"not a segmenter-set index ({type(exc).__name__}: {exc})") from exc
    for m in seg_set.models:
        check_model_files(m, entries[m.name])
    status = data.get("status")
    if status is not None and (status.get("mixed") != seg_set.mixed or
                               list(status.get("new", [])) != list(seg_set.new_models())):
        raise DataError(index, f"its status (mixed {status.get('mixed')}, new {status.get('new')}) does not follow "
                               f"from its models ({seg_set.describe()}); rebuild it with `cmrprior segment "
                               "ship-fold` or `index-folds`")
    return seg_set


def set_from_index(folder: Path, data: dict) -> tuple[SegmenterSet, dict[str, dict]]:
    """The set that the parsed index `data` of `folder` describes, and its entries by model name (KeyError,
    TypeError on a malformed index; files are not read)."""
    def model(name: str, d: dict) -> SegmenterModel:
        return SegmenterModel(name, folder / d["weights"], d["sha256"], frozenset(d["patients"]),
                              frozenset(d["fingerprints"]), d.get("recipe"), d.get("generation"))

    entries = {"full": data["full"], **{f"fold_{k}": d for k, d in enumerate(data["folds"])}}
    full, *folds = (model(name, d) for name, d in entries.items())
    return SegmenterSet(full, tuple(folds), data.get("generation")), entries


def check_model_files(m: SegmenterModel, entry: dict) -> None:
    """`m`'s weights must exist, and the JSON beside them must carry the index's `entry` of `m` where it carries
    one; a fold of a recorded generation must carry one (DataError naming the file)."""
    if not m.weights.exists():
        raise DataError(m.weights, "segmenter weights listed in the index are missing")
    meta = m.weights.with_suffix(".json")
    try:
        own = json.loads(meta.read_text()).get(SET_ENTRY_KEY) if meta.is_file() else None
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(meta, f"unreadable segmenter JSON ({type(exc).__name__}: {exc})") from exc
    if own is None:
        if m.name != "full" and entry.get("generation") is not None:
            raise DataError(meta, f"the index records {m.name} as {m.lineage}, but this JSON carries no "
                                  f"'{SET_ENTRY_KEY}': the weights beside it were not shipped with that entry")
        return
    differ = [k for k in _ENTRY_FACTS if _comparable(own.get(k)) != _comparable(entry.get(k))]
    if own.get("name") != m.name:
        differ.insert(0, "name")
    if differ:
        raise DataError(meta, f"disagrees with the set index {INDEX_NAME} on {', '.join(differ)} of {m.name} (a fold "
                              "shipped half-way, or files of two sets mixed by hand): ship the fold again")


def _comparable(value: object) -> object:
    return sorted(value) if isinstance(value, list) else value


def verify(seg_set: SegmenterSet) -> None:
    """Check every weights file against its sha256 (DataError naming the file)."""
    for m in seg_set.models:
        if file_sha256(m.weights) != m.sha256:
            raise DataError(m.weights, "weights differ from the sha256 in the segmenter-set index")


def write_segmenter_set(out: str | Path, cohort: Cohort, *, full_weights: str | Path,
                        cv_dir: str | Path | None = None, copy_full: bool = True, generation: str | None = None) -> Path:
    """Copy the fold models of a `cmrprior segment train --folds K` run (`cv_dir/fold_k/model.safetensors`
    and `test_patients.json`) and the full model into `out`, with their index. `cohort` is the cohort they
    were trained on (fingerprints are computed from its images; expert masks are not read). copy_full=False
    indexes the full model where it is (a path relative to `out`) instead of copying it. `generation`: the tag
    of every model (`cmrprior.segmentation.set_pieces.write_set`)."""
    from cmrprior.segmentation.set_pieces import write_set  # the training stack (cv) is imported there

    return write_set(out, cohort, full_weights=full_weights, cv_dir=cv_dir, copy_full=copy_full,
                     generation=generation)


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
                return dataclasses.replace(m, weights=weights)
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
    """One line for tables and the report: are the masks out-of-sample for every patient? Followed by the set's
    `describe()` line when the models come from a mixed set."""
    inside = in_sample(choices)
    unknown = sum(c.out_of_sample is None for c in choices.values())
    if inside:
        line = (f"IN-SAMPLE masks for {len(inside)} of {len(choices)} patients (the segmenter was trained on them, "
                "optimistic)")
    elif unknown:
        line = f"masks from a given segmenter whose training patients are not known ({unknown} patients)"
    else:
        line = "masks: out-of-sample segmenter for every patient"
    notes = sorted({c.set_note for c in choices.values() if c.set_note})
    return "; ".join([line, *notes])


def all_out_of_sample(choices: dict[str, SegmenterChoice]) -> bool | None:
    """True: every patient's model never saw it; False: some were in-sample; None: not known for some."""
    if in_sample(choices):
        return False
    return None if any(c.out_of_sample is None for c in choices.values()) else True
