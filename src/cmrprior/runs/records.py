"""Typed records of a study run folder (JSON on disk, frozen dataclasses in memory) and the layout version.

The folder's paths are in `cmrprior.runs.folder.RunFolder`; see the package doc.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from cmrprior.errors import DataError
from cmrprior.vocab import ImageSpec, init_rank

LAYOUT_VERSION = 2
PHASES_CSV = "phases.csv"  # in the study's qc/ and in the --test cohort's
HOLDOUT = "holdout"  # split name of the model trained on the whole cohort and scored on the --test cohort
STATUSES = ("ok", "unavailable", "failed")
# Key of a comparison record (tables/comparisons.json, table4.json) that holds its test (interval, p, method).
PAIRED_TEST_KEY = "paired_test"
# the confidence level of a study's intervals and the 1 - level of its tests (`evaluation.level`), where a run's
# config.yaml does not say: the default of `EvaluationConfig`, read by the report from here
DEFAULT_LEVEL = 0.95
_OLD_PAIRED_TEST_KEY = "paired_bootstrap"  # the same record's key in tables written before the paired t


def paired_test_of(record: dict) -> dict:
    """The test of a stored comparison record (`PAIRED_TEST_KEY`; older run folders' `paired_bootstrap`);
    {} when it has none."""
    for key in (PAIRED_TEST_KEY, _OLD_PAIRED_TEST_KEY):
        if isinstance(record.get(key), dict):
            return record[key]
    return {}


# ---- records ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MasksOrigin:
    """Where the heart masks behind a cohort's segmented images come from. `source`: "segmenter" | "ground_truth"
    (oracle); `note`: one line for tables and the report; `out_of_sample`: every patient's masks came from a model
    that never saw it (None: oracle masks, or a given model of unknown training data).

    On disk (run.json, study.json, result.json, the prepared cohort's masks.json) as the keys `masks_source`,
    `masks_note`, `masks_out_of_sample` (`to_keys`, `from_keys`)."""

    source: str
    note: str = ""
    out_of_sample: bool | None = None

    def to_keys(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}masks_source": self.source, f"{prefix}masks_note": self.note,
                f"{prefix}masks_out_of_sample": self.out_of_sample}

    @classmethod
    def from_keys(cls, d: dict[str, Any]) -> "MasksOrigin":
        """From a record's keys (`masks_note` and `masks_out_of_sample` may be absent in older ones)."""
        return cls(d["masks_source"], d.get("masks_note") or "", d.get("masks_out_of_sample"))

    def with_test(self, test: "MasksOrigin") -> "MasksOrigin":
        """The masks of a model trained on this cohort and scored on the `test` cohort: the test cohort's source,
        each cohort's note (one when they say the same), out-of-sample when both are (False when either is not)."""
        note = self.note if self.note == test.note else (
            f"training patients (study cohort): {self.note}; test patients (held-out cohort): {test.note}")
        both = (self.out_of_sample, test.out_of_sample)
        out_of_sample = False if False in both else (True if both == (True, True) else None)
        return MasksOrigin(test.source, note, out_of_sample)


@dataclass(frozen=True)
class RunInfo:
    """What readers of a run need besides the cells: classes, masks, image specs, the classifier input.
    `test_masks`: those of the --test cohort (None: no --test cohort); run.json holds its note and out-of-sample
    flag (`test_masks_note`, `test_masks_out_of_sample`), its source is the study's."""

    layout_version: int
    classes: tuple[str, ...]
    masks: MasksOrigin
    image_specs: tuple[ImageSpec, ...]
    input_size: int  # px, classifier input
    pixel_spacing_mm: float  # prepared grid
    test_masks: MasksOrigin | None = None

    def spec(self, images: str) -> ImageSpec:
        for s in self.image_specs:
            if s.images == images:
                return s
        raise DataError(None, f"run has no {images!r} images (has {[s.images for s in self.image_specs]})")

    def to_json(self) -> dict:
        test = self.test_masks
        return {"layout_version": self.layout_version, "classes": self.classes, **self.masks.to_keys(),
                "image_specs": [asdict(s) for s in self.image_specs], "input_size": self.input_size,
                "pixel_spacing_mm": self.pixel_spacing_mm,
                "test_masks_note": None if test is None else test.note,
                "test_masks_out_of_sample": None if test is None else test.out_of_sample}

    @classmethod
    def from_json(cls, d: dict) -> "RunInfo":
        masks = MasksOrigin(d["masks_source"], d["masks_note"], d.get("masks_out_of_sample"))
        test = None if d.get("test_masks_note") is None else MasksOrigin(masks.source, d["test_masks_note"],
                                                                         d.get("test_masks_out_of_sample"))
        return cls(layout_version=int(d["layout_version"]), classes=tuple(d["classes"]), masks=masks,
                   image_specs=tuple(ImageSpec(**s) for s in d["image_specs"]), input_size=int(d["input_size"]),
                   pixel_spacing_mm=float(d["pixel_spacing_mm"]), test_masks=test)


@dataclass(frozen=True)
class SplitSpec:
    """One evaluation unit: train on `train` ids, score on `test` ids (`name`: "0", "1", ..., "holdout")."""

    name: str
    seed: int
    train: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True, order=True)
class CellKey:
    """One cell of the grid on one split."""

    split: str
    backbone: str
    init: str
    images: str

    @property
    def config(self) -> tuple[str, str, str]:
        """The configuration, without the split: (backbone, init, images)."""
        return (self.backbone, self.init, self.images)

    def table_order(self) -> tuple:
        """Sort key of the tables and the report: backbone, training images, init in the study's order."""
        return (self.backbone, self.images, init_rank(self.init), _split_rank(self.split))


def _split_rank(split: str) -> tuple[int, str]:
    return (0, f"{int(split):09d}") if split.isdigit() else (1, split)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float | None
    val_loss: float | None
    val_auc: float | None


@dataclass(frozen=True)
class TestMetrics:
    """Per-patient metrics of one cell (`cmrprior.evaluate.metrics.classification_metrics`)."""

    macro_auc: float | None
    per_class_auc: dict[str, float | None]
    accuracy: float | None
    balanced_accuracy: float | None
    confusion_matrix: list[list[int]]
    n_patients: int


@dataclass(frozen=True)
class TestOutputs:
    """The test patients of a cell, their labels (class index), probabilities `(P, K)` and metrics."""

    patient_ids: list[str]
    labels: list[int]
    probabilities: list[list[float]]
    metrics: TestMetrics


@dataclass(frozen=True)
class OutOfFold:
    """Training patients' out-of-fold probabilities `(P, K)`: each from the CV fold model that left it out
    (`folds`: the index of the CV fold where the patient was a validation patient)."""

    patient_ids: list[str]
    labels: list[int]
    probabilities: list[list[float]]
    folds: list[int]


@dataclass(frozen=True)
class CellResult:
    """One cell's `result.json`. `status` "ok" cells have `test`; the others have `reason`.

    `hyperparameters` and `search` are what the training chose and tried (shown, never computed on).
    `seen_patient_ids`: stage -> patient ids that stage saw (checked disjoint from the test patients).
    """

    key: CellKey
    status: str
    seed: int
    classes: tuple[str, ...]
    masks: MasksOrigin  # result.json: masks_source, masks_note (and masks_out_of_sample when known)
    image_mode: str
    input_size: int
    mode: str
    reason: str | None = None
    traceback: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    history: tuple[EpochRecord, ...] = ()
    history_source: str | None = None
    final_train_loss: float | None = None
    test: TestOutputs | None = None
    seen_patient_ids: dict[str, list[str]] = field(default_factory=dict)
    checkpoint: str | None = None
    pretrain_checkpoint: str | None = None
    wall_s: float = 0.0
    train_oof: OutOfFold | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        d = asdict(self)
        key = d.pop("key")
        d.pop("masks")
        d = {**self.masks.to_keys(), **d}
        d["classes"] = list(self.classes)
        d["history"] = [asdict(h) for h in self.history]
        return {**key, **{k: v for k, v in d.items() if v is not None or k in _KEEP_NONE}}

    @classmethod
    def from_json(cls, d: dict, where: Path | None = None) -> "CellResult":
        try:
            test = d.get("test")
            return cls(
                key=CellKey(str(d["split"]), d["backbone"], d["init"], d["images"]),
                status=d["status"], seed=int(d["seed"]), classes=tuple(d["classes"]),
                masks=MasksOrigin.from_keys(d), image_mode=d["image_mode"],
                input_size=int(d["input_size"]), mode=d["mode"], reason=d.get("reason"),
                traceback=d.get("traceback"), hyperparameters=d.get("hyperparameters") or {},
                search=d.get("search") or {}, history=tuple(EpochRecord(**h) for h in d.get("history") or ()),
                history_source=d.get("history_source"), final_train_loss=d.get("final_train_loss"),
                test=None if test is None else TestOutputs(test["patient_ids"], test["labels"], test["probabilities"],
                                                           TestMetrics(**test["metrics"])),
                seen_patient_ids=d.get("seen_patient_ids") or {}, checkpoint=d.get("checkpoint"),
                pretrain_checkpoint=d.get("pretrain_checkpoint"), wall_s=float(d.get("wall_s", 0.0)),
                train_oof=None if d.get("train_oof") is None else OutOfFold(**d["train_oof"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(where, f"not a cell result of layout version {LAYOUT_VERSION} ({type(exc).__name__}: {exc})") from exc


_KEEP_NONE = {"final_train_loss", "pretrain_checkpoint"}


@dataclass(frozen=True)
class PretrainRecord:
    """`done.json` of one SimCLR run: the encoder checkpoint and which patients it saw."""

    checkpoint: str
    backbone: str
    batch_size: int
    images: str
    patient_ids: list[str]
    val_patient_ids: list[str]
    n_train_images: int
    n_val_images: int
    seed: int
    wall_s: float
    best_val_loss: float | None = None
    epochs_run: int | None = None
    # what the run computed in ("fp32" | "bf16" | "fp16") and whether in channels-last layout; None in a record
    # written before records held them. "auto" may choose differently on another CPU, and a bf16 run's encoder
    # differs from a float32 one's, so the report says which.
    precision: str | None = None
    channels_last: bool | None = None

    @property
    def seen(self) -> list[str]:
        return sorted(set(self.patient_ids) | set(self.val_patient_ids))

    @classmethod
    def from_json(cls, d: dict, where: Path | None = None) -> "PretrainRecord":
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:
            raise DataError(where, f"not a pre-training record ({exc})") from exc


@dataclass(frozen=True)
class SaliencyGrid:
    """One saliency grid image of one test patient: rows = configurations, columns ED, ES."""

    method: str
    backbone: str
    split: str
    patient_id: str
    path: Path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable ({exc})") from exc


def labels_in_order(names: list[str | None], classes: tuple[str, ...], where: Path | None = None) -> np.ndarray:
    """Class indices of label names in the order `classes`; DataError for a name not in it."""
    lut = {c: i for i, c in enumerate(classes)}
    bad = sorted({str(n) for n in names if n not in lut})
    if bad:
        raise DataError(where, f"labels {bad} are not among the classes {list(classes)}")
    return np.array([lut[n] for n in names], dtype=np.int64)

