"""Controlled errors in ACDC-labelled masks, to test how a model built on anatomy measures degrades when the
masks it is measured from are wrong (a segmenter's typical errors: boundaries off by a few pixels, a basal
or apical slice missed).

Masks are integer `(Z, H, W)` with ACDC labels (0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity);
z = 0 is the first slice as stored, basal in ACDC. Perturbations (`PERTURBATIONS`), size N:

* `dilate`: each cavity (LV, then RV) grows by N pixels in-plane (3x3 cross, per slice) into myocardium and
  background, never into the other cavity: cavity volumes rise, the myocardium loses its inner rim.
* `erode`: each cavity shrinks by N pixels in-plane; the LV rim becomes myocardium (the endocardial border
  moves inwards), the RV rim becomes background.
* `drop_basal` / `drop_apical`: the N most basal / apical slices that hold any heart label (at ED or at ES)
  are cleared in both phases.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cmrprior.errors import ConfigError

PERTURBATIONS: tuple[str, ...] = ("dilate", "erode", "drop_basal", "drop_apical")
PIXEL_PERTURBATIONS: tuple[str, ...] = ("dilate", "erode")  # size in pixels; the others in slices
_RV, _MYO, _LV = 1, 2, 3
_IN_PLANE = ndimage.generate_binary_structure(3, 1) * np.array([0, 1, 0], bool)[:, None, None]


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    out = mask.copy()
    for label, other in ((_LV, _RV), (_RV, _LV)):
        grown = ndimage.binary_dilation(out == label, structure=_IN_PLANE, iterations=n)
        out[grown & (out != other)] = label
    return out


def _erode(mask: np.ndarray, n: int) -> np.ndarray:
    out = mask.copy()
    for label, freed in ((_LV, _MYO), (_RV, 0)):
        cavity = mask == label
        kept = ndimage.binary_erosion(cavity, structure=_IN_PLANE, iterations=n, border_value=1)
        out[cavity & ~kept] = freed
    return out


def _heart_slices(ed: np.ndarray, es: np.ndarray) -> np.ndarray:
    z = max(ed.shape[0], es.shape[0])
    has = np.zeros(z, bool)
    has[: ed.shape[0]] |= (ed > 0).reshape(ed.shape[0], -1).any(1)
    has[: es.shape[0]] |= (es > 0).reshape(es.shape[0], -1).any(1)
    return np.flatnonzero(has)


def perturb_masks(ed_mask: np.ndarray, es_mask: np.ndarray, kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ED and ES masks with perturbation `kind` of `size` (pixels or slices, see module doc); new arrays.

    Raises:
        ConfigError: unknown kind or a size < 1.
    """
    if kind not in PERTURBATIONS:
        raise ConfigError(f"unknown mask perturbation {kind!r}; expected one of {list(PERTURBATIONS)}")
    if int(size) < 1:
        raise ConfigError(f"perturbation size must be >= 1, got {size}")
    ed, es, n = np.asarray(ed_mask), np.asarray(es_mask), int(size)
    if kind == "dilate":
        return _dilate(ed, n), _dilate(es, n)
    if kind == "erode":
        return _erode(ed, n), _erode(es, n)
    slices = _heart_slices(ed, es)
    gone = slices[:n] if kind == "drop_basal" else slices[-n:]
    ed, es = ed.copy(), es.copy()
    ed[gone[gone < ed.shape[0]]] = 0
    es[gone[gone < es.shape[0]]] = 0
    return ed, es
