"""The run folder of `cmrprior study`: its layout, and the typed records written into it and read from it.

This module is the only place that knows where a study's pieces live. The study writes through it; the
saliency stage and the report read through it. The layout is versioned (`LAYOUT_VERSION`, recorded in
`RUN/run.json`); reading a folder of another version is refused with a clear error. The layout is
documented in `cmrprior/experiments/README.md`.

Records (JSON on disk, frozen dataclasses in memory): `RunInfo` (what every reader needs to rebuild a
cell's inputs without the study's config), `SplitSpec`, `PretrainRecord` (`done.json` of one SimCLR
run), `CellResult` (`result.json` of one trained and scored classifier).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cmrprior.errors import ConfigError, DataError
from cmrprior.utils import atomic
from cmrprior.utils.filenames import patient_filename
from cmrprior.vocab import ImageSpec, init_rank

LAYOUT_VERSION = 2
PHASES_CSV = "phases.csv"  # in the study's qc/ and in the --test cohort's
HOLDOUT = "holdout"  # split name of the model trained on the whole cohort and scored on the --test cohort
STATUSES = ("ok", "unavailable", "failed")


# ---- records ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """What readers of a run need besides the cells: classes, masks, image specs, the classifier input."""

    layout_version: int
    classes: tuple[str, ...]
    masks_source: str  # "segmenter" | "ground_truth"
    masks_note: str
    image_specs: tuple[ImageSpec, ...]
    input_size: int  # px, classifier input
    pixel_spacing_mm: float  # prepared grid
    masks_out_of_sample: bool | None = None  # every patient segmented by a model that never saw it (None: unknown/oracle)

    def spec(self, images: str) -> ImageSpec:
        for s in self.image_specs:
            if s.images == images:
                return s
        raise DataError(None, f"run has no {images!r} images (has {[s.images for s in self.image_specs]})")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RunInfo":
        return cls(layout_version=int(d["layout_version"]), classes=tuple(d["classes"]),
                   masks_source=d["masks_source"], masks_note=d["masks_note"],
                   image_specs=tuple(ImageSpec(**s) for s in d["image_specs"]), input_size=int(d["input_size"]),
                   pixel_spacing_mm=float(d["pixel_spacing_mm"]), masks_out_of_sample=d.get("masks_out_of_sample"))


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
class CellResult:
    """One cell's `result.json`. `status` "ok" cells have `test`; the others have `reason`.

    `hyperparameters` and `search` are what the training chose and tried (shown, never computed on).
    `seen_patient_ids`: stage -> patient ids that stage saw (checked disjoint from the test patients).
    """

    key: CellKey
    status: str
    seed: int
    classes: tuple[str, ...]
    masks_source: str
    masks_note: str
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

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        d = asdict(self)
        key = d.pop("key")
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
                masks_source=d["masks_source"], masks_note=d.get("masks_note", ""), image_mode=d["image_mode"],
                input_size=int(d["input_size"]), mode=d["mode"], reason=d.get("reason"),
                traceback=d.get("traceback"), hyperparameters=d.get("hyperparameters") or {},
                search=d.get("search") or {}, history=tuple(EpochRecord(**h) for h in d.get("history") or ()),
                history_source=d.get("history_source"), final_train_loss=d.get("final_train_loss"),
                test=None if test is None else TestOutputs(test["patient_ids"], test["labels"], test["probabilities"],
                                                           TestMetrics(**test["metrics"])),
                seen_patient_ids=d.get("seen_patient_ids") or {}, checkpoint=d.get("checkpoint"),
                pretrain_checkpoint=d.get("pretrain_checkpoint"), wall_s=float(d.get("wall_s", 0.0)),
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


# ---- the folder ---------------------------------------------------------------------------------------
def _at(name: str) -> property:
    """A RunFolder property: the path `name` in the run folder."""
    return property(lambda self: self.root / name)


class RunFolder:
    """Paths and typed reads/writes of one study run folder (see the module doc)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # fixed files and folders (paths relative to the run folder)
    config_yaml = _at("config.yaml")
    run_json = _at("run.json")
    study_json = _at("study.json")
    log = _at("log.txt")
    splits_json = _at("splits.json")
    cache = _at("cache")
    qc = _at("qc")
    tables = _at("tables")
    figures = _at("figures")
    saliency = _at("saliency")
    report = _at("report")
    inputs_json = _at("inputs.json")

    def prepared(self, cohort: str = "study") -> Path:
        """Prepared cohort folder: the study cohort, or `holdout` for the --test cohort."""
        return self.root / HOLDOUT / "prepared" if cohort == HOLDOUT else self.root / "prepared"

    def split_dir(self, split: str) -> Path:
        return self.root / HOLDOUT if split == HOLDOUT else self.root / "splits" / f"split_{split}"

    def pretrain_dir(self, split: str, images: str, backbone: str, batch_size: int) -> Path:
        return self.split_dir(split) / "pretrain" / images / backbone / f"bs{batch_size}"

    def cell_dir(self, key: CellKey) -> Path:
        return self.split_dir(key.split) / "cells" / key.backbone / f"{key.init}__{key.images}"

    def bind_inputs(self, inputs: dict[str, tuple[str, str] | None]) -> None:
        """Tie the folder to its inputs: role -> (path, fingerprint) or None. The first call records them;
        a later call with a different input (another fingerprint) raises ConfigError naming both."""
        now = {k: None if v is None else {"path": v[0], "fingerprint": v[1]} for k, v in inputs.items()}
        if not self.inputs_json.exists():
            atomic.write_json(self.inputs_json, now)
            return
        old = _read_json(self.inputs_json)
        for role, item in now.items():
            before = old.get(role)
            if (before is None) != (item is None) or (item and before["fingerprint"] != item["fingerprint"]):
                was = "nothing" if before is None else before["path"]
                raise ConfigError(f"{self.root}: this run folder was made from {role} {was}, not "
                                  f"{'nothing' if item is None else item['path']} (different files); use a new --out")

    # run info and layout version
    def write_info(self, info: RunInfo) -> None:
        atomic.write_json(self.run_json, info.to_json())

    def info(self) -> RunInfo:
        """The run's RunInfo; DataError when the folder is not a run of this layout version."""
        if not self.run_json.exists():
            if self.config_yaml.exists():
                raise DataError(self.root, f"run folder of an older layout (no run.json); this cmrprior reads layout "
                                           f"version {LAYOUT_VERSION}: re-run the study into a new folder")
            raise DataError(self.root, "not a study run folder (run.json missing)")
        d = _read_json(self.run_json)
        if d.get("layout_version") != LAYOUT_VERSION:
            raise DataError(self.run_json, f"layout version {d.get('layout_version')}, this cmrprior reads "
                                           f"{LAYOUT_VERSION}: re-run the study into a new folder")
        return RunInfo.from_json(d)

    # splits
    def write_splits(self, splits: list[SplitSpec]) -> None:
        atomic.write_json(self.splits_json, [{"index": int(s.name), "seed": s.seed, "train": list(s.train),
                                              "test": list(s.test)} for s in splits])

    def splits(self) -> list[SplitSpec] | None:
        if not self.splits_json.exists():
            return None
        return [SplitSpec(str(r["index"]), int(r["seed"]), tuple(r["train"]), tuple(r["test"]))
                for r in _read_json(self.splits_json)]

    # pre-training
    def write_pretrain(self, folder: Path, record: PretrainRecord, extra: dict) -> None:
        atomic.write_json(folder / "done.json", {**asdict(record), **extra})

    def read_pretrain(self, folder: Path) -> PretrainRecord | None:
        path = folder / "done.json"
        return PretrainRecord.from_json(_read_json(path), path) if path.exists() else None

    # cells
    def write_cell(self, result: CellResult) -> Path:
        return atomic.write_json(self.cell_dir(result.key) / "result.json", result.to_json())

    def read_cell(self, key: CellKey) -> CellResult | None:
        path = self.cell_dir(key) / "result.json"
        return CellResult.from_json(_read_json(path), path) if path.exists() else None

    def model_path(self, key: CellKey) -> Path:
        return self.cell_dir(key) / "model.pt"

    def cells(self, *, holdout: bool = False) -> list[CellResult]:
        """Every cell result on disk (repeated splits, or the holdout cells), in table order."""
        pattern = f"{HOLDOUT}/cells/*/*/result.json" if holdout else "splits/split_*/cells/*/*/result.json"
        out = [CellResult.from_json(_read_json(p), p) for p in self.root.glob(pattern)]
        return sorted(out, key=lambda r: r.key.table_order())

    def iter_scored(self, *, holdout: bool = True) -> Iterator[CellResult]:
        """Finished cells with a saved model (repeated splits, then holdout when asked)."""
        for r in self.cells() + (self.cells(holdout=True) if holdout else []):
            if r.ok and self.model_path(r.key).exists():
                yield r

    # written by the study or the saliency stage, read by the report
    @property
    def mask_flags_csv(self) -> Path:
        """Mask plausibility flags per patient and phase (`cmrprior.segmentation.qc.write_mask_flags`)."""
        return self.qc / "mask_flags.csv"

    @property
    def phases_csv(self) -> Path:
        """ED/ES frames found from cines, one row per patient given as a cine (`PhaseDetection.as_row`)."""
        return self.qc / PHASES_CSV

    @property
    def segmentation_summary_csv(self) -> Path:
        """Segmenter Dice / Hausdorff (mm) against ground truth, per phase and metric (cohorts with ground truth)."""
        return self.qc / "data" / "segmentation_summary.csv"

    @property
    def saliency_settings_json(self) -> Path:
        return self.saliency / "settings.json"

    def saliency_cell_dir(self, key: CellKey) -> Path:
        """A cell's `scores.json` (written last: the done marker) and `panels_{method}.npz` (overlay arrays)."""
        return self.saliency / "cells" / key.split / key.backbone / f"{key.init}__{key.images}"

    def saliency_overlay(self, method: str, key: CellKey, patient_id: str) -> Path:
        return (self.saliency / "overlays" / method / key.backbone / f"{key.init}__{key.images}" / f"split_{key.split}"
                / f"{patient_filename(patient_id)}.png")

    def saliency_grid(self, method: str, backbone: str, split: str, patient_id: str) -> Path:
        return self.saliency / "grids" / method / backbone / f"split_{split}__{patient_filename(patient_id)}.png"

    def saliency_grids(self) -> list[SaliencyGrid]:
        """Every saliency grid PNG on disk (`saliency_grid`), sorted by method, backbone, file name."""
        return [SaliencyGrid(p.parents[1].name, p.parent.name, *p.stem[len("split_"):].split("__", 1), p)
                for p in sorted(self.saliency.glob("grids/*/*/split_*__*.png"))]


@dataclass(frozen=True)
class SaliencyGrid:
    """One saliency grid image of one test patient: rows = configurations, columns ED, ES."""

    method: str
    backbone: str
    split: str
    patient_id: str
    path: Path


def _read_json(path: Path) -> Any:
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

