"""The best image configuration chosen inside each split, by the inner CV of its training part.

Picking the configuration with the highest mean TEST AUC of the grid and quoting its interval is optimistic:
the maximum of about ten noisy estimates is chosen on the very patients it is scored on. Here each split
chooses for itself, among its finished image cells, the one whose k-fold CV inside the split's training part
scored best (`CellResult.search["cv_auc"]`: mean inner-validation macro AUC of the chosen lr and epochs; every
cell of a split uses the same inner folds), and the split scores the chosen cell's test predictions. The choice
is then part of the training procedure each split evaluates, so the corrected resampled t across splits is an
interval for "train the grid, keep the inner-CV winner", with no test patient in the choice.

The held-out cohort's split ("holdout") chooses by the inner CV of its cells, which ran on the study cohort:
nothing is chosen on the held-out cohort.

The chosen cells are returned as `CellResult`s of the pseudo configuration `selected_key(images)`, so that
`cmrprior.evaluate.tables.summarise_cells` and `compare_cells` treat them as one more configuration.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from cmrprior.runs import CellKey, CellResult

SELECTED = "by_inner_cv"  # backbone and init of the pseudo configuration; its images are the kind or ANY_IMAGES
ANY_IMAGES = "any"


def selected_key(images: str) -> tuple[str, str, str]:
    """(backbone, init, images) of the per-split inner-CV choice among the cells on `images` (or ANY_IMAGES)."""
    return (SELECTED, SELECTED, images)


def is_selected(key: Sequence[str]) -> bool:
    return tuple(key[:2]) == (SELECTED, SELECTED)


def inner_cv_score(r: CellResult) -> float | None:
    """The cell's mean inner-CV macro AUC (None when the cell did not record a finite one)."""
    v = (r.search or {}).get("cv_auc")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def select_by_inner_cv(results: Sequence[CellResult], images: str = ANY_IMAGES) -> list[CellResult]:
    """Per split, the finished cell on `images` (every kind for ANY_IMAGES) with the highest inner-CV score, as a
    result of `selected_key(images)`; ties go to the first cell in table order. Its hyperparameters say which
    cell was chosen, with what score, among how many. Splits without a scored candidate are left out."""
    by_split: dict[str, list[CellResult]] = defaultdict(list)
    for r in results:
        if r.ok and r.test is not None and inner_cv_score(r) is not None and not is_selected(r.key.config) \
                and (images == ANY_IMAGES or r.key.images == images):
            by_split[r.key.split].append(r)
    out = []
    for split in sorted(by_split):
        cands = sorted(by_split[split], key=lambda r: r.key.table_order())
        best = max(cands, key=inner_cv_score)  # max keeps the first of equal scores
        out.append(dataclasses.replace(
            best, key=CellKey(split, *selected_key(images)),
            hyperparameters={"selected": "/".join(best.key.config), "inner_cv_auc": inner_cv_score(best),
                             "n_candidates": len(cands), **best.hyperparameters}))
    return out


def chosen_counts(selected: Sequence[CellResult]) -> list[tuple[str, int]]:
    """[(backbone/init/images, number of splits that chose it)], most often chosen first."""
    counts = Counter(r.hyperparameters.get("selected", "?") for r in selected)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
