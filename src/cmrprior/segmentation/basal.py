"""Basal-slice correction of one patient's ED/ES labels: what a reader leaves out at the base.

A 2D segmenter sees one slice, without its phase or its place in the stack. At end-systole the base of the
heart has descended, and the most basal slices of the stack show atrium and outflow tract, which look like
ventricular blood pool in one slice. On ACDC's out-of-sample masks (a 2-fold set of 96 px models) the expert RV
is absent from the most basal ES slice in 77 of 100 patients, and the network labelled RV there in 60 of those; at
the two most basal ES slices these false RV pixels were over half of the ES RV's false positives, and the RV
ejection fraction came out 8.5 points low on average. Two rules correct the pair of label stacks
(`correct_basal`); both need only the labels, never the images or an expert mask:

1. Open LV cavity: on any slice, LV cavity whose border touches myocardium along less than half its length
   (`MIN_MYO_COVER`) is removed. That blood pool is atrium: the usual short-axis convention counts a basal
   slice to the LV when at least half of its blood pool is surrounded by myocardium.
2. Basal slices: on the basal candidate slices (`CANDIDATES`: ED's first heart slice from the base, ES's first
   two), two logistic models (`SliceModel`, held by a `BasalModel`) of unitless label-area shares of that slice
   (`FEATURES`) decide
   - whether the slice's RV is kept (the RV of basal ES slices is often right atrium or outflow tract), and
   - whether its LV cavity and myocardium are kept: at ES the base has descended, and the network often draws
     a closed ring around atrium or outflow tract, which rule 1 cannot see. On the shipped 5-fold set's
     out-of-sample masks of ACDC, the most basal ES heart slice holds no expert LV in 26 of 100 patients, and
     removing the LV cavity of the whole slice where the expert has none would raise the ES LV Dice from
     0.910 to 0.933.
   Each feature is in [0, 1] so that no slice dominates the fit: a / (a + b) against the same slice in the
   other phase, against the next slice towards the apex and between structures of the slice; areas over the
   phase's largest slice of that structure; and the LV cavity's `myo_cover` (0 without cavity). The models are
   fitted on a segmenter's out-of-sample masks of its training cohort against the expert masks
   (`fit_basal_model`, `cmrprior segment fit-basal`) and stored beside the segmenter's weights (`basal_path`).
   A segmenter without a basal file gets rule 1 only; a file fitted before the LV decision existed decides the
   RV only.

Slices are counted from the base: the stack's own order, reversed when it is stored apex first
(`cmrprior.anatomy.thickness.base_is_first` on the ED LV cavity areas).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from cmrprior.anatomy.thickness import base_is_first
from cmrprior.errors import DataError, InputError
from cmrprior.utils import atomic
from cmrprior.vocab import LV_LABEL, MYO_LABEL, RV_LABEL

MIN_MYO_COVER = 0.5
CANDIDATES: tuple[tuple[str, int], ...] = (("ed", 0), ("es", 0), ("es", 1))  # (phase, heart slice from the base)
FEATURES: tuple[str, ...] = ("is_es", "position", "rv_share_vs_other_phase", "lv_share_vs_other_phase",
                             "myo_share_vs_other_phase", "rv_vs_largest_rv", "rv_share_vs_lv", "lv_myo_cover",
                             "rv_share_vs_next_slice", "lv_share_vs_next_slice", "myo_share_vs_lv",
                             "lv_vs_largest_lv")
BASAL_SUFFIX = ".basal.json"


def basal_path(weights: str | Path) -> Path:
    """Where a segmenter's basal model lives: beside its weights, `<stem>.basal.json`."""
    weights = Path(weights)
    return weights.with_name(weights.stem + BASAL_SUFFIX)


@dataclass(frozen=True)
class SliceModel:
    """Standardised logistic model of P(the expert labels a structure on a candidate slice | `FEATURES`)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    n_slices: int  # candidate slices it was fitted on

    def __post_init__(self) -> None:
        if not len(self.mean) == len(self.scale) == len(self.coef) == len(FEATURES):
            raise ValueError("mean, scale and coef need one value per feature")

    def keep_probability(self, x: np.ndarray) -> np.ndarray:
        """P(present) for rows `(N, len(FEATURES))`."""
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    @classmethod
    def from_json(cls, d: dict) -> "SliceModel":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class BasalModel:
    """The basal-slice decisions of one segmenter: keep the RV (`rv`), keep the LV cavity and myocardium
    (`lv`; None in files fitted before that decision existed, or when the fit had one class only)."""

    rv: SliceModel
    lv: SliceModel | None
    n_patients: int
    segmenter_sha256: str = ""  # the weights whose masks it corrects ("" when not tied to one)

    def save(self, path: str | Path) -> Path:
        atomic.write_text(Path(path), json.dumps({"features": list(FEATURES), **asdict(self)}, indent=1) + "\n")
        return Path(path)


def load_basal_model(path: str | Path) -> BasalModel:
    """A saved `BasalModel`; DataError when the file is unreadable or made for other features. A file of the
    earlier layout (the RV model's fields at the top level) loads with `lv` None."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        if tuple(d.pop("features")) != FEATURES:
            raise ValueError(f"features {d.get('features')} are not {list(FEATURES)}")
        rv = d.pop("rv") if "rv" in d else {f.name: d.pop(f.name) for f in fields(SliceModel)}
        lv = d.pop("lv", None)
        model = BasalModel(SliceModel.from_json(rv), None if lv is None else SliceModel.from_json(lv), **d)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(path, f"not a basal-slice model ({type(exc).__name__}: {exc})") from exc
    return model


def basal_model_for(weights: str | Path, weights_sha256: str) -> BasalModel | None:
    """The basal model stored beside `weights` (whose sha256 is given), or None when there is none.

    Raises DataError when it was fitted on the masks of other weights (a stale file beside new weights).
    """
    path = basal_path(weights)
    if not path.exists():
        return None
    model = load_basal_model(path)
    if model.segmenter_sha256 and model.segmenter_sha256 != weights_sha256:
        raise DataError(path, f"fitted for segmenter weights {model.segmenter_sha256[:12]}..., but {Path(weights).name} "
                              f"is {weights_sha256[:12]}...; refit it (`cmrprior segment fit-basal`) or remove it")
    return model


def myo_cover(slice_labels: np.ndarray) -> float:
    """Fraction of the LV cavity's border pixels (cavity pixels with a non-cavity 4-neighbour) that touch
    myocardium (8-neighbourhood); NaN without cavity."""
    cavity = slice_labels == LV_LABEL
    if not cavity.any():
        return math.nan
    border = cavity & ~ndimage.binary_erosion(cavity, border_value=0)
    touch = border & ndimage.binary_dilation(slice_labels == MYO_LABEL, structure=np.ones((3, 3), bool))
    return float(touch.sum()) / float(border.sum())


def close_open_cavities(labels: np.ndarray) -> np.ndarray:
    """Rule 1 on one `(Z, H, W)` stack: a copy without the LV cavity of slices where `myo_cover` is below
    `MIN_MYO_COVER`."""
    out = np.array(labels, copy=True)
    for z in range(out.shape[0]):
        if myo_cover(out[z]) < MIN_MYO_COVER:
            out[z][out[z] == LV_LABEL] = 0
    return out


def _areas(labels: np.ndarray, value: int) -> np.ndarray:
    return (labels == value).sum(axis=(1, 2)).astype(np.float64)


def _share(a: float, b: float) -> float:
    """a / (a + b), 0.5 when both are 0."""
    return 0.5 if a + b == 0 else float(a) / float(a + b)


def _base_order(ed: np.ndarray) -> np.ndarray:
    """Stack indices ordered base first (module docstring)."""
    lv = _areas(ed, LV_LABEL)
    order = np.arange(ed.shape[0])
    return order if base_is_first(lv[lv > 0]) else order[::-1]


def candidate_slices(ed: np.ndarray, es: np.ndarray, holding: int = RV_LABEL) -> list[tuple[str, int, np.ndarray]]:
    """`(phase, stack index, features)` of every candidate slice (`CANDIDATES`) that holds label `holding`."""
    _check(ed, es)
    order = [int(z) for z in _base_order(ed)]
    stacks = {"ed": ed, "es": es}
    areas = {ph: tuple(_areas(s, v) for v in (RV_LABEL, LV_LABEL, MYO_LABEL)) for ph, s in stacks.items()}
    out = []
    for phase, position in CANDIDATES:
        this = stacks[phase]
        (rv, lv, myo), (o_rv, o_lv, o_myo) = areas[phase], areas["es" if phase == "ed" else "ed"]
        heart = [z for z in order if this[z].any()]
        if position >= len(heart):
            continue
        z = heart[position]
        if not (this[z] == holding).any():
            continue
        k = order.index(z)
        nxt = order[k + 1] if k + 1 < len(order) else z  # the apical end compares with itself
        cover = myo_cover(this[z])
        x = np.array([float(phase == "es"), float(position), _share(rv[z], o_rv[z]), _share(lv[z], o_lv[z]),
                      _share(myo[z], o_myo[z]), rv[z] / max(rv.max(), 1.0), _share(rv[z], lv[z]),
                      0.0 if math.isnan(cover) else cover, _share(rv[z], rv[nxt]), _share(lv[z], lv[nxt]),
                      _share(myo[z], lv[z]), lv[z] / max(lv.max(), 1.0)])
        out.append((phase, z, x))
    return out


def correct_basal(ed: np.ndarray, es: np.ndarray, model: BasalModel | None) -> tuple[np.ndarray, np.ndarray]:
    """Both rules (module docstring) on one patient's ED and ES label stacks `(Z, H, W)`; new arrays.

    Every basal decision is made on the labels as given (the RV's, then the LV's: a slice may lose both), then
    rule 1 is applied. Raises InputError for stacks of different shapes or not 3D.
    """
    stacks = {"ed": np.array(ed, copy=True), "es": np.array(es, copy=True)}
    if model is not None:
        decisions = [(model.rv, RV_LABEL, (RV_LABEL,))]
        if model.lv is not None:
            decisions.append((model.lv, LV_LABEL, (LV_LABEL, MYO_LABEL)))
        for slice_model, holding, removed in decisions:
            for phase, z, x in candidate_slices(ed, es, holding):
                if slice_model.keep_probability(x[None])[0] < 0.5:
                    s = stacks[phase]
                    s[z][np.isin(s[z], removed)] = 0
    return close_open_cavities(stacks["ed"]), close_open_cavities(stacks["es"])


def _fit_slice_model(predicted: Sequence[tuple[np.ndarray, np.ndarray]],
                     expert: Sequence[tuple[np.ndarray, np.ndarray]], holding: int, c: float) -> SliceModel | None:
    """One decision's logistic model: a row per candidate slice holding `holding` in the prediction, target 1
    where the expert labels `holding` there; None when the rows hold a single class."""
    from sklearn.linear_model import LogisticRegression

    rows, target = [], []
    for (ped, pes), (ged, ges) in zip(predicted, expert, strict=True):
        truth = {"ed": ged, "es": ges}
        for phase, z, x in candidate_slices(ped, pes, holding):
            rows.append(x)
            target.append(int((truth[phase][z] == holding).any()))
    if len(set(target)) < 2:
        return None
    x = np.array(rows)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    lr = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, np.array(target))
    return SliceModel(tuple(mean.tolist()), tuple(scale.tolist()), tuple(lr.coef_[0].tolist()),
                      float(lr.intercept_[0]), len(target))


def fit_basal_model(predicted: Sequence[tuple[np.ndarray, np.ndarray]], expert: Sequence[tuple[np.ndarray, np.ndarray]],
                    *, segmenter_sha256: str = "", c: float = 1.0) -> BasalModel:
    """Fit both basal decisions on patients' predicted `(ed, es)` label stacks and their expert `(ed, es)` masks
    (same shapes). The LV decision is left out (None) when its candidate slices hold a single class.

    Raises InputError when the RV rows hold a single class (nothing to learn) or shapes differ.
    """
    for (ped, pes), (ged, ges) in zip(predicted, expert, strict=True):
        _check(ped, ged)
        _check(pes, ges)
    rv = _fit_slice_model(predicted, expert, RV_LABEL, c)
    if rv is None:
        raise InputError("basal model: the candidate slices with RV are all of one class; nothing to fit")
    return BasalModel(rv, _fit_slice_model(predicted, expert, LV_LABEL, c), len(predicted), segmenter_sha256)


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if np.ndim(a) != 3 or np.shape(a) != np.shape(b):
        raise InputError(f"ED/ES label stacks must be (Z, H, W) of one shape, got {np.shape(a)} and {np.shape(b)}")
