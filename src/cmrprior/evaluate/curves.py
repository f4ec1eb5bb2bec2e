"""Figure 1 of the study: convergence of the diagnosis models.

For every backbone, two panels: validation macro AUC per epoch and validation loss per epoch, one line per
configuration (initialisation x training images), the mean over splits of each cell's `history`
(in linear mode: the mean over the CV folds of the training part for the chosen learning rate).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from cmrprior.runs import CellResult
from cmrprior.utils import atomic
from cmrprior.vocab import init_label, init_rank

# one colour per init, in the registry's order (`cmrprior.vocab.inits`): None grey, ImageNet orange, Full-SSCL
# blue, Segmented-SSCL green, then the other registered pretexts' inits
_PALETTE = ("tab:grey", "tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan")


def init_colour(init: str) -> str:
    return _PALETTE[init_rank(init) % len(_PALETTE)]


def mean_curves(results: list[CellResult]) -> dict:
    """{(backbone, init, images): {"val_auc": (E,), "val_loss": (E,)}} averaged over splits (NaN-aware)."""
    groups = defaultdict(list)
    for r in results:
        if r.ok and r.history:
            groups[r.key.config].append(r.history)
    out = {}
    for key, hs in groups.items():
        n = max(len(h) for h in hs)
        curves = {}
        for field in ("val_auc", "val_loss"):
            arr = np.full((len(hs), n), np.nan)
            for i, h in enumerate(hs):
                for row in h:
                    v = getattr(row, field)
                    if v is not None:
                        arr[i, row.epoch - 1] = v
            with np.errstate(all="ignore"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    curves[field] = np.nanmean(arr, axis=0)
        out[key] = curves
    return out


def write_figure1(results: list[CellResult], path: str | Path) -> Path | None:
    """Draw Figure 1 into `path` (PNG, atomic); None when no cell has a history."""
    # ~1.4 s to import: only when a figure is drawn; a Figure of its own, no pyplot, so that the user's (a notebook's)
    # matplotlib backend is left as it is
    from matplotlib.figure import Figure

    curves = mean_curves(results)
    if not curves:
        return None
    backbones = sorted({k[0] for k in curves})
    fig = Figure(figsize=(11, 3.8 * len(backbones)))
    axes = fig.subplots(len(backbones), 2, squeeze=False)
    for row, b in enumerate(backbones):
        ax_auc, ax_loss = axes[row]
        for (bb, init, images), c in sorted(curves.items()):
            if bb != b:
                continue
            style = "-" if images == "full" else "--"
            label = f"{init_label(init)}, {images} images"
            epochs = np.arange(1, len(c["val_auc"]) + 1)
            ax_auc.plot(epochs, c["val_auc"], style, color=init_colour(init), label=label)
            ax_loss.plot(epochs, c["val_loss"], style, color=init_colour(init), label=label)
        ax_auc.set(title=f"{b}: validation macro AUC", xlabel="epoch", ylabel="macro AUC")
        ax_loss.set(title=f"{b}: validation loss", xlabel="epoch", ylabel="cross-entropy")
        ax_auc.grid(alpha=0.3)
        ax_loss.grid(alpha=0.3)
        ax_auc.legend(fontsize=7, loc="lower right")
    fig.suptitle("Figure 1: convergence of the diagnosis models (mean over splits)")
    fig.tight_layout()
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
