"""The "Anatomy" model in the study: per split, a tabular classifier on the training patients' cardiac
measures (`cmrprior.classify.anatomy`), scored on the test patients' measures, written as a `CellResult`
(`RUN/splits/split_i/anatomy/result.json`, key `vocab.ANATOMY`), then Table 4 and the robustness check
(`cmrprior.evaluate.anatomy_table`).

The measures come from the same masks as the segmented images (`cmrprior.experiments.anatomy_data`). The
model's CV search and fit see the training patients only; the robustness check scores the model trained on
unperturbed training measures on the test patients' perturbed measures.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from cmrprior.anatomy.measures_csv import MeasuresRow
from cmrprior.anatomy.perturb import PIXEL_PERTURBATIONS
from cmrprior.classify.anatomy import AnatomyModel, fit_anatomy
from cmrprior.classify.config import AnatomyConfig
from cmrprior.data.splits import assert_disjoint
from cmrprior.errors import ConfigError, LeakageError
from cmrprior.evaluate.metrics import classification_metrics, macro_auc
from cmrprior.runs import CellKey, CellResult, MasksOrigin, RunFolder, SplitSpec, TestMetrics, TestOutputs
from cmrprior.utils.seeding import derive_seed
from cmrprior.vocab import ANATOMY, ANATOMY_INPUTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnatomyInputs:
    """Measures by patient id, plain and perturbed ((perturbation, size) -> patient id -> row)."""

    measures: dict[str, MeasuresRow]
    perturbed: dict[tuple[str, int], dict[str, MeasuresRow]]

    @classmethod
    def from_rows(cls, plain: tuple[MeasuresRow, ...], perturbed: tuple[MeasuresRow, ...]) -> "AnatomyInputs":
        by_kind: dict[tuple[str, int], dict[str, MeasuresRow]] = defaultdict(dict)
        for r in perturbed:
            by_kind[(r.perturbation, r.size)][r.patient_id] = r
        return cls({r.patient_id: r for r in plain}, dict(by_kind))

    def merged(self, other: "AnatomyInputs") -> "AnatomyInputs":
        kinds = set(self.perturbed) | set(other.perturbed)
        return AnatomyInputs({**self.measures, **other.measures},
                             {k: {**self.perturbed.get(k, {}), **other.perturbed.get(k, {})} for k in kinds})


def anatomy_key(split: str) -> CellKey:
    return CellKey(split, ANATOMY, ANATOMY, ANATOMY_INPUTS)


def run_anatomy_split(run: RunFolder, split: SplitSpec, inputs: AnatomyInputs, config: AnatomyConfig, *,
                      classes: tuple[str, ...], cv_folds: int, masks: MasksOrigin
                      ) -> tuple[CellResult, list[dict], AnatomyModel | None]:
    """Fit on `split.train`, score `split.test` (plain and perturbed); writes and returns the result, the
    robustness rows (split, perturbation, size, macro AUC, accuracy) and the fitted model (None on failure).
    A failure is recorded, not raised (except leakage)."""
    base = dict(key=anatomy_key(split.name), seed=split.seed, classes=classes, masks=masks,
                image_mode=ANATOMY_INPUTS, input_size=0)
    t0 = time.time()
    model = None
    try:
        assert_disjoint("anatomy model", split.train, split.test)
        missing = [p for p in (*split.train, *split.test) if p not in inputs.measures]
        if missing:
            raise ConfigError(f"no anatomy measures for patients {missing[:5]} ({len(missing)} in all)")
        lut = {c: i for i, c in enumerate(classes)}
        y_train = [lut[inputs.measures[p].label] for p in split.train]
        model = fit_anatomy([inputs.measures[p].values for p in split.train], y_train, n_classes=len(classes),
                            config=config, cv_folds=cv_folds, seed=derive_seed(split.seed, "anatomy"),
                            train_ids=split.train, class_names=list(classes))
        y_test = np.array([lut[inputs.measures[p].label] for p in split.test], dtype=np.int64)
        probs = model.predict_proba([inputs.measures[p].values for p in split.test])
        result = CellResult(**base, status="ok", mode=model.chosen.family, test=TestOutputs(
            list(split.test), y_test.tolist(), probs.tolist(), TestMetrics(**classification_metrics(y_test, probs, classes))),
            hyperparameters={"model": model.chosen.describe(), **model.chosen.params}, search=_search(model, cv_folds),
            seen_patient_ids={"train": list(split.train), "search": list(split.train)}, wall_s=time.time() - t0)
        robustness = _robustness(split, model, inputs, y_test, probs)
    except LeakageError:
        raise
    except Exception as exc:  # the anatomy model must not stop the image study
        result = CellResult(**base, status="failed", mode="", reason=f"{type(exc).__name__}: {exc}",
                            traceback=traceback.format_exc(limit=8), wall_s=time.time() - t0)
        robustness, model = [], None
        log.error("anatomy model on split %s failed: %s", split.name, result.reason)
    run.write_cell(result)
    if result.ok:
        log.info("anatomy model, split %s: %s, macro AUC %.3f", split.name, result.hyperparameters["model"],
                 result.test.metrics.macro_auc)
    return result, robustness, model


def _search(model: AnatomyModel, cv_folds: int) -> dict:
    return {"cv_folds": cv_folds, "candidates": list(model.search), "features": list(model.features),
            "importance": model.importance, "importance_method": model.importance_method}


def _robustness(split: SplitSpec, model: AnatomyModel, inputs: AnatomyInputs, y_test: np.ndarray,
                probs: np.ndarray) -> list[dict]:
    def row(kind: str, size: int, p: np.ndarray) -> dict:
        px = kind in PIXEL_PERTURBATIONS
        return {"split": split.name, "perturbation": kind, "size_px": size if px else "",
                "size_slices": "" if px or kind == "none" else size, "macro_auc": macro_auc(y_test, p),
                "accuracy": float(np.mean(p.argmax(1) == y_test)), "n_patients": len(y_test)}

    rows = [row("none", 0, probs)]
    for (kind, size), by_id in sorted(inputs.perturbed.items()):
        if all(p in by_id for p in split.test):
            rows.append(row(kind, size, model.predict_proba([by_id[p].values for p in split.test])))
    return rows
