"""Report figures (PNG bytes; matplotlib `Figure`s of their own, no pyplot, so that the matplotlib backend of a
notebook that builds a report is left as it is): ROC curves per class and confusion matrices per configuration.

Inputs are the cells' test outputs (`cmrprior.runs.TestOutputs` of each `CellResult`). For a configuration
(backbone, init, images) the test patients of all its splits are pooled: ROC curves are one-vs-rest per
class on the pooled predicted probabilities (a patient tested in several splits counts once per split),
and the confusion matrix is the sum of the splits' matrices (rows: true class, columns: predicted =
argmax of the patient's mean probability).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from cmrprior.runs import TestOutputs
from cmrprior.utils.auc import binary_auc


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def pooled_predictions(results: Sequence[TestOutputs]) -> tuple[np.ndarray, np.ndarray]:
    """(labels int (P,), probabilities (P, K)) of the test patients of all given results, concatenated."""
    ys = [np.asarray(r.labels, dtype=np.int64) for r in results]
    ps = [np.asarray(r.probabilities, dtype=np.float64) for r in results]
    if not ys:
        return np.zeros(0, np.int64), np.zeros((0, 0))
    return np.concatenate(ys), np.concatenate(ps)


def roc_points(labels: np.ndarray, probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    """One-vs-rest ROC of class k: (fpr, tpr, auc), or None when class k or its complement is absent; the AUC
    is the tables' (`binary_auc`)."""
    positive = labels == k
    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, probs[:, k])
    return fpr, tpr, binary_auc(positive, probs[:, k])


def _grid(n: int, cell: float = 3.2):
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(cell * cols, cell * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def roc_grid_png(configs: Sequence[tuple[str, Sequence[TestOutputs]]], classes: Sequence[str]) -> bytes:
    """One subplot per configuration (title, results of its splits): ROC curve per class, AUC in the legend."""
    fig, axes = _grid(max(len(configs), 1))
    for ax, (title, results) in zip(axes, configs):
        y, p = pooled_predictions(results)
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        for k, name in enumerate(classes):
            pts = roc_points(y, p, k) if len(y) else None
            if pts is None:
                continue
            ax.plot(pts[0], pts[1], lw=1.2, label=f"{name} {pts[2]:.2f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=7, loc="lower right", title="class AUC", title_fontsize=7)
    return _png(fig)


def summed_confusion(results: Sequence[TestOutputs], n_classes: int) -> np.ndarray:
    """Sum over results of `metrics.confusion_matrix` (int (K, K)); recomputed from probabilities when a
    result's matrix is empty."""
    total = np.zeros((n_classes, n_classes), dtype=np.int64)
    for r in results:
        cm = r.metrics.confusion_matrix
        if not cm:
            y = np.asarray(r.labels, dtype=np.int64)
            pred = np.asarray(r.probabilities).argmax(axis=1)
            cm = np.zeros((n_classes, n_classes), dtype=np.int64)
            np.add.at(cm, (y, pred), 1)
        total += np.asarray(cm, dtype=np.int64)
    return total


def confusion_grid_png(configs: Sequence[tuple[str, Sequence[TestOutputs]]], classes: Sequence[str]) -> bytes:
    """One confusion matrix per configuration (summed over splits); colour = row share, text = counts."""
    k = len(classes)
    fig, axes = _grid(max(len(configs), 1), cell=2.6 + 0.25 * k)
    for ax, (title, results) in zip(axes, configs):
        cm = summed_confusion(results, k)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), classes, fontsize=7, rotation=45)
        ax.set_yticks(range(k), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(title, fontsize=9)
    return _png(fig)


def robustness_png(series: dict[str, Sequence[tuple[float, float]]], baseline: float | None) -> bytes:
    """Macro AUC against perturbation size, one line per perturbation; dashed: the unperturbed AUC."""
    fig = Figure(figsize=(4.6, 3.0))
    ax = fig.subplots()
    for name, points in series.items():
        pts = sorted(points)
        ax.plot([0] + [p[0] for p in pts], [baseline if baseline is not None else np.nan] + [p[1] for p in pts],
                marker="o", label=name)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="unperturbed")
    ax.set_xlabel("perturbation size (pixels or slices)", fontsize=8)
    ax.set_ylabel("macro AUC", fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize=7)
    return _png(fig)
