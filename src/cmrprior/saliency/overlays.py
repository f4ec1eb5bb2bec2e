"""Saliency overlays: the heat map over the ED and ES images with the heart-mask outline (PNG; a matplotlib
`Figure` of its own, no pyplot, so that a notebook's matplotlib backend is left as it is).

A panel shows the image in grey, the saliency (normalised to [0, 1] per image, values below `floor` = 0.2
transparent, so the anatomy stays visible) in a heat colour map, and the outline of the dilated heart mask in cyan. A patient figure
has two panels (ED, ES); a grid has one row per configuration and two columns (ED, ES) per patient.
PNG files are written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cmrprior.utils import atomic


@dataclass(frozen=True, eq=False)
class OverlayPanel:
    """One image with its saliency: `image`, `saliency` float (H, W); `heart` bool (H, W) or None."""

    image: np.ndarray
    saliency: np.ndarray
    heart: np.ndarray | None
    title: str = ""


def _norm(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, None)
    peak = x.max() if x.size else 0.0
    return x / peak if peak > 0 else np.zeros_like(x)


def draw_panel(ax, panel: OverlayPanel, *, alpha: float = 0.45, floor: float = 0.2) -> None:
    """Draw one overlay on a matplotlib Axes (no ticks)."""
    img = np.asarray(panel.image, dtype=np.float64)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    heat = np.ma.masked_less(_norm(panel.saliency), floor)
    ax.imshow(heat, cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear")
    if panel.heart is not None and np.any(panel.heart) and not np.all(panel.heart):
        ax.contour(np.asarray(panel.heart, dtype=float), levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if panel.title:
        ax.set_title(panel.title, fontsize=8)


def grid_png(rows: Sequence[Sequence[OverlayPanel]], row_labels: Sequence[str] | None = None, *, cell_in: float = 1.8, dpi: int = 100) -> bytes:
    """PNG bytes of a grid: rows x columns of panels (rows may differ in length; missing cells blank)."""
    n_rows = max(len(rows), 1)
    n_cols = max((len(r) for r in rows), default=1) or 1
    fig = Figure(figsize=(cell_in * n_cols + (1.2 if row_labels else 0), cell_in * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i][j]
            if i < len(rows) and j < len(rows[i]):
                draw_panel(ax, rows[i][j])
            else:
                ax.axis("off")
        if row_labels and i < len(row_labels):
            axes[i][0].set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_grid(path: str | Path, rows: Sequence[Sequence[OverlayPanel]], row_labels: Sequence[str] | None = None, **kw) -> Path:
    """Write `grid_png(...)` to `path` atomically."""
    return atomic.write_bytes(path, grid_png(rows, row_labels, **kw))


def save_patient_overlay(path: str | Path, ed: OverlayPanel, es: OverlayPanel, *, title: str = "") -> Path:
    """One patient's ED and ES overlays side by side, written atomically as PNG."""
    return save_grid(path, [[ed, es]], [title] if title else None, cell_in=2.4)
