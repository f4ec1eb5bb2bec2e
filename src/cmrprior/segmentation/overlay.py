"""Overlay images for a person to check masks: contours of RV, MYO and LV drawn over a few slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmrprior.utils import atomic

COLOURS = {1: "tab:blue", 2: "tab:green", 3: "tab:red"}


def pick_slices(labels: np.ndarray, n: int) -> list[int]:
    """`n` slice indices spread evenly over the slices that have a heart label (over all slices if none)."""
    z = labels.shape[0]
    has = np.flatnonzero((labels > 0).reshape(z, -1).any(axis=1))
    pool = has if has.size else np.arange(z)
    if pool.size <= n:
        return pool.tolist()
    return pool[np.linspace(0, pool.size - 1, n).round().astype(int)].tolist()


def save_overlay(shown: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, n_slices: int = 3,
                 title: str = "") -> Path:
    """One PNG: a row per phase (`shown[phase] = (image (Z, H, W), labels (Z, H, W))`), `n_slices` columns,
    mask contours (RV blue, MYO green, LV red) over the grey image. Written atomically."""
    # ~1.4 s to import: only when an overlay is drawn; a Figure of its own, no pyplot, so that the user's (a notebook's)
    # matplotlib backend is left as it is
    from matplotlib.figure import Figure

    phases = list(shown)
    fig = Figure(figsize=(2.2 * n_slices, 2.2 * len(phases)))
    axes = fig.subplots(len(phases), n_slices, squeeze=False)
    for r, phase in enumerate(phases):
        image, labels = shown[phase]
        idx = pick_slices(labels, n_slices)
        for c in range(n_slices):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            k = idx[c]
            ax.imshow(image[k], cmap="gray", interpolation="nearest")
            for value, colour in COLOURS.items():
                if (labels[k] == value).any():
                    ax.contour(labels[k] == value, levels=[0.5], colors=colour, linewidths=0.8)
            ax.set_title(f"{phase} z={k}", fontsize=7)
            rows, cols = np.nonzero(labels.any(axis=0)) if labels.any() else ([], [])
            if len(rows):  # zoom on the heart (all slices' labels) with a margin of 25% of the image
                m = max(labels.shape[1:]) // 4
                ax.set_xlim(max(min(cols) - m, 0) - 0.5, min(max(cols) + m, labels.shape[2] - 1) + 0.5)
                ax.set_ylim(min(max(rows) + m, labels.shape[1] - 1) + 0.5, max(min(rows) - m, 0) - 0.5)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return Path(path)
