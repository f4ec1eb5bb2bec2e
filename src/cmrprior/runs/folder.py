"""`RunFolder`: every path of a study run folder, and typed reads and writes through it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from cmrprior.errors import ConfigError, DataError
from cmrprior.runs.records import (
    HOLDOUT,
    LAYOUT_VERSION,
    PHASES_CSV,
    CellKey,
    CellResult,
    PretrainRecord,
    RunInfo,
    SaliencyGrid,
    SplitSpec,
    read_json,
)
from cmrprior.utils import atomic
from cmrprior.utils.filenames import patient_filename
from cmrprior.utils.runfolder_checks import FINGERPRINT_PREFIX
from cmrprior.vocab import ANATOMY, Pretext, get_pretext, hybrid_base, pretexts


def _at(name: str) -> property:
    """A RunFolder property: the path `name` in the run folder."""
    return property(lambda self: self.root / name)


class RunFolder:
    """Paths and typed reads/writes of one study run folder (see the package doc, `cmrprior.runs`)."""

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
    input_hashes = _at("input_hashes.json")  # cache of whole-file sha256 of the inputs (`utils.file_hashes`)
    models = _at("models")  # exported model bundles (`cmrprior.bundle`), one folder each
    recommended_json = _at("models/recommended.json")  # which bundle the config's rule recommends, and why

    pieces = _at("pieces")  # the study's pieces run as jobs (`experiments.pieces`): lock and records of each
    jobs = _at("jobs")  # cluster jobs' logs, one folder per job id (`experiments.executors`)

    def piece_dir(self, piece: str) -> Path:
        """Lock, submission and state records of one piece of the study (its id: a path-like name)."""
        return self.pieces / piece

    def bundle_dir(self, name: str) -> Path:
        return self.models / name

    def prepared(self, cohort: str = "study") -> Path:
        """Prepared cohort folder: the study cohort, or `holdout` for the --test cohort."""
        return self.root / HOLDOUT / "prepared" if cohort == HOLDOUT else self.root / "prepared"

    def split_dir(self, split: str) -> Path:
        return self.root / HOLDOUT if split == HOLDOUT else self.root / "splits" / f"split_{split}"

    def pretrain_dir(self, split: str, images: str, backbone: str, pretext: str, batch_size: int | None = None) -> Path:
        """The run of a registered pretext (`cmrprior.vocab.pretexts`) on one split, kind of images and backbone:
        `pretrain/<images>/<backbone>/<folder>_bs<batch_size>` (a pretext with a batch-size grid) or `<folder>`,
        its folder named by its registry entry, so two methods never share a run.

        A run that an older cmrprior wrote under the pretext's `legacy_folder` (SimCLR's `bs<B>`) is that run's
        folder while the new one does not exist: finished runs of earlier studies are reused, not redone.
        Raises ConfigError for an unknown pretext, or a batch size given to a pretext without a grid (or none
        to one with a grid).
        """
        p = get_pretext(pretext)
        if (batch_size is None) == p.batch_grid:
            raise ConfigError(f"pretext {pretext!r}: " + ("a batch size of its grid is needed" if p.batch_grid else
                                                          "it has no batch-size grid"))
        base = self.split_dir(split) / "pretrain" / images / backbone
        name, legacy = _run_folder_names(p, batch_size)
        folder = base / name
        if legacy is not None and not folder.exists() and (base / legacy).exists():
            return base / legacy
        return folder

    def cell_dir(self, key: CellKey) -> Path:
        if key.init == ANATOMY:  # the "Anatomy" model (vocab.ANATOMY), outside cells/: it is not an image model
            return self.split_dir(key.split) / "anatomy"
        if hybrid_base(key.images) is not None:  # image model + measures, outside cells/ (not an image model)
            return self.split_dir(key.split) / "hybrid" / key.backbone / f"{key.init}__{key.images}"
        return self.split_dir(key.split) / "cells" / key.backbone / f"{key.init}__{key.images}"

    def bind_inputs(self, inputs: dict[str, tuple[str, str] | None]) -> None:
        """Tie the folder to its inputs: role -> (path, fingerprint) or None. The first call records them;
        a later call with a different input (another fingerprint) raises ConfigError naming both."""
        now = {k: None if v is None else {"path": v[0], "fingerprint": v[1]} for k, v in inputs.items()}
        if not self.inputs_json.exists():
            atomic.write_json(self.inputs_json, now)
            return
        old = read_json(self.inputs_json)
        for role, item in now.items():
            before = old.get(role)
            if (before is None) != (item is None) or (item and before["fingerprint"] != item["fingerprint"]):
                was = "nothing" if before is None else before["path"]
                if item is not None and was == item["path"] and not str(before["fingerprint"]).startswith(
                        FINGERPRINT_PREFIX) and str(item["fingerprint"]).startswith(FINGERPRINT_PREFIX):
                    raise ConfigError(f"{self.root}: this run folder was tied to {role} {was} by an older cmrprior, "
                                      "which hashed only part of each file; whether the files changed since cannot "
                                      "be told: use a new --out")
                if item is not None and was == item["path"]:
                    raise ConfigError(f"{self.root}: the files of {role} {was} changed since this run folder was "
                                      "made from them (an image, mask or the list itself differs); use a new --out")
                raise ConfigError(f"{self.root}: this run folder was made from {role} {was}, not "
                                  f"{'nothing' if item is None else item['path']} (different files); use a new --out")

    def bound_input(self, role: str) -> str | None:
        """The path recorded for input `role` by `bind_inputs` ("data", "test_data"), None when there is none."""
        if not self.inputs_json.exists():
            return None
        item = read_json(self.inputs_json).get(role)
        return None if item is None else str(item["path"])

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
        d = read_json(self.run_json)
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
                for r in read_json(self.splits_json)]

    # pre-training
    def write_pretrain(self, folder: Path, record: PretrainRecord, extra: dict) -> None:
        atomic.write_json(folder / "done.json", {**asdict(record), **extra})

    def read_pretrain(self, folder: Path) -> PretrainRecord | None:
        path = folder / "done.json"
        return PretrainRecord.from_json(read_json(path), path) if path.exists() else None

    def pretrain_runs(self) -> list[tuple[str, PretrainRecord]]:
        """Every finished pre-training run on disk (the repeated splits' and the held-out model's), as (the name of
        its registered pretext, its record), in path order; a folder no registered pretext names keeps its
        folder's name."""
        out = []
        for path in sorted(self.root.glob(f"{HOLDOUT}/pretrain/*/*/*/done.json")) + sorted(
                self.root.glob("splits/split_*/pretrain/*/*/*/done.json")):
            record = PretrainRecord.from_json(read_json(path), path)
            out.append((_pretext_of(path.parent.name, record.batch_size), record))
        return out

    # cells
    def write_cell(self, result: CellResult) -> Path:
        return atomic.write_json(self.cell_dir(result.key) / "result.json", result.to_json())

    def read_cell(self, key: CellKey) -> CellResult | None:
        path = self.cell_dir(key) / "result.json"
        return CellResult.from_json(read_json(path), path) if path.exists() else None

    def model_path(self, key: CellKey) -> Path:
        return self.cell_dir(key) / "model.pt"

    def cells(self, *, holdout: bool = False) -> list[CellResult]:
        """Every cell result on disk (repeated splits, or the holdout cells), in table order."""
        pattern = f"{HOLDOUT}/cells/*/*/result.json" if holdout else "splits/split_*/cells/*/*/result.json"
        out = [CellResult.from_json(read_json(p), p) for p in self.root.glob(pattern)]
        return sorted(out, key=lambda r: r.key.table_order())

    def iter_scored(self, *, holdout: bool = True) -> Iterator[CellResult]:
        """Finished cells with a saved model (repeated splits, then holdout when asked)."""
        for r in self.cells() + (self.cells(holdout=True) if holdout else []):
            if r.ok and self.model_path(r.key).exists():
                yield r

    def anatomy_measures_csvs(self, cohort: str = "study") -> tuple[Path, Path]:  # "Anatomy" model's inputs
        return tuple((self.prepared(cohort).parent / "anatomy" / f) for f in ("measures.csv", "perturbed_measures.csv"))

    def anatomy_results(self, *, holdout: bool = False) -> list[CellResult]:
        pattern = f"{HOLDOUT}/anatomy/result.json" if holdout else "splits/split_*/anatomy/result.json"
        return sorted((CellResult.from_json(read_json(p), p) for p in self.root.glob(pattern)), key=lambda r: r.key.table_order())

    def hybrid_results(self, *, holdout: bool = False) -> list[CellResult]:
        """Results of the hybrids (image model + measures; `vocab.hybrid_base` of their key's images)."""
        pattern = f"{HOLDOUT}/hybrid/*/*/result.json" if holdout else "splits/split_*/hybrid/*/*/result.json"
        return sorted((CellResult.from_json(read_json(p), p) for p in self.root.glob(pattern)), key=lambda r: r.key.table_order())

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


def _run_folder_names(p: Pretext, batch_size: int | None) -> tuple[str, str | None]:
    """The folder name of pretext `p`'s run at `batch_size` (None for a pretext without a batch-size grid), and its
    older name (`legacy_folder`), None when it has none."""
    name = f"{p.folder}_bs{batch_size}" if p.batch_grid else p.folder
    return name, None if p.legacy_folder is None else p.legacy_folder.format(batch_size=batch_size)


def _pretext_of(folder: str, batch_size: int) -> str:
    """The registered pretext whose run at `batch_size` (its record's) is named `folder`, else `folder`."""
    for p in pretexts():
        if folder in _run_folder_names(p, batch_size if p.batch_grid else None):
            return p.name
    return folder
