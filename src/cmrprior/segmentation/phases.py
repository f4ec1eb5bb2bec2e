"""End-diastole and end-systole from a cine: segment every frame, ED = largest, ES = smallest LV cavity.

This is the usual clinical definition (e.g. the ACDC frames were chosen by LV volume). The frames are read
from the LV cavity volume of the mid-ventricular slices (`mid_ventricular_slices`), as a reader picks ES on
a mid-ventricular slice: the base moves through one or two slices of the stack over the cycle (the mitral
annulus descends by about `BASE_EXCURSION_MM` in systole), so the basal slices change between ventricle,
outflow tract and atrium, where a segmenter errs most and a 10 ml error on one slice moves the extremes of
the whole-heart curve by frames. The apical end is trimmed alike (partial volume of the apex cap); slices
where the LV cavity comes and goes are never used. The whole-heart curve is still recorded
(`PhaseDetection.lv_volume_ml`, the ejection fraction).

One frame that the segmenter gets badly wrong must not become ED or ES (`curve_extremes`): the extremes are
searched next to those of the curve's 3-frame running median, which ignores a single outlying frame but
keeps a sharp extremum and the steps of a slice leaving the stack (a fitted low-order Fourier series does
not: it rounds a sharp ES off by a frame or more, and a 3-4 slice stack's steps by several). The frame
acquired at trigger time zero (the ECG R wave, which starts the cine) is ED by the other common definition;
it is reported as a cross-check (`ed_matches_trigger`: within one frame, counted cyclically, since the
largest volume may be the last frame of the previous cycle).

Frames are 1-based, as in ACDC's Info.cfg and `PatientRecord`. Segmentation runs `predict_volume`: the heart
is found on the first frame and the same centre is used for the others, as `segment predict` does for a
cine. In a cohort (`resolve_cohort_phases`) each cine is segmented by a model that never saw the patient where
the segmenter set knows (`cmrprior.segmentation.folds.segmenter_chooser` on the fingerprints of every frame of
the cine, as the set's index holds those of its training patients' ED and ES frames): the shipped set, the set
folder `model_path`, or the weights file `model_path`. Tests inject `segment` instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from cmrprior.errors import DataError
from cmrprior.io.load import cine_frame_count, read_cine
from cmrprior.io.records import Cohort, PatientRecord, Volume
from cmrprior.io.fingerprint import volume_fingerprint
from cmrprior.segmentation.folds import INDEX_NAME, SHIPPED_SET, SegmenterChoice, segmenter_chooser
from cmrprior.segmentation.inference import SegInference, load_for_inference
from cmrprior.segmentation.predict import default_model_path
from cmrprior.segmentation.volumes import predict_volume
from cmrprior.utils.progress import Progress, format_duration
from cmrprior.vocab import LV_LABEL

log = logging.getLogger(__name__)

# labels uint8 (Z, H, W) of one frame, given the frame and its index (0-based) in the cine
Segmenter = Callable[[Volume, int], np.ndarray]

# Systolic descent of the base (mitral annular plane excursion, about 10-16 mm in adults): the slices within
# this distance of either end of the LV's extent are left out of the curve the frames are chosen from.
BASE_EXCURSION_MM = 15.0
MIN_MID_SLICES = 3
# A mid-ventricular curve that changes by less than this (% of its largest value) over the cycle says nothing
# about ED/ES: no heart ejects so little, so the segmenter did not follow the cavity. Flagged, not refused.
MIN_CURVE_CHANGE_PERCENT = 5.0
# A cine of one cardiac cycle has 12-50 frames (ACDC: 12-35). Many more is a real-time or multi-cycle series,
# whose largest and smallest volumes are not ED and ES of one beat; its search would also segment every frame
# for minutes and hold all of them in memory (500 frames: 2.5 GB). Refused before decoding, naming the cine.
MAX_CINE_FRAMES = 100
# While the frames of one cine are segmented, a progress line at least this often (seconds).
PROGRESS_INTERVAL_S = 20.0


@dataclass(frozen=True)
class PhaseDetection:
    """ED/ES frames (1-based) found from the LV cavity volume curve of the mid-ventricular slices.

    `lv_volume_ml`: the whole LV cavity per frame (ml); `mid_volume_ml`: that of the slices `mid_slices`
    (0-based indices of the stack) alone, the curve the frames were chosen from.
    """

    ed_frame: int
    es_frame: int
    lv_volume_ml: tuple[float, ...]
    trigger_zero_frame: int  # frame with the smallest trigger time (frame 1 when times are unknown)
    trigger_times_known: bool
    patient_id: str | None = None
    mid_volume_ml: tuple[float, ...] = ()
    mid_slices: tuple[int, ...] = ()
    segmenter: str | None = None  # the model of the set that segmented the frames ("full", "fold_k", a file stem)
    segmenter_out_of_sample: bool | None = None  # it never saw the patient (None: not known)

    @property
    def n_frames(self) -> int:
        return len(self.lv_volume_ml)

    @property
    def ed_matches_trigger(self) -> bool:
        """Detected ED within one frame (cyclically) of the trigger-time-zero frame."""
        d = abs(self.ed_frame - self.trigger_zero_frame)
        return min(d, self.n_frames - d) <= 1

    @property
    def curve_change_percent(self) -> float:
        """(largest - smallest) / largest of the curve the frames were chosen from, in %."""
        v = self.mid_volume_ml or self.lv_volume_ml
        return 100.0 * (max(v) - min(v)) / max(v) if max(v) > 0 else 0.0

    @property
    def reliable(self) -> bool:
        """False when the curve is too flat for its extremes to mean anything (`MIN_CURVE_CHANGE_PERCENT`)."""
        return self.curve_change_percent >= MIN_CURVE_CHANGE_PERCENT

    @property
    def ejection_fraction(self) -> float:
        """LV ejection fraction in % from the curve's extremes."""
        edv, esv = self.lv_volume_ml[self.ed_frame - 1], self.lv_volume_ml[self.es_frame - 1]
        return 100.0 * (edv - esv) / edv if edv > 0 else float("nan")

    def as_row(self) -> dict[str, object]:
        """A flat record for a CSV (units in the keys; the curve as ';'-separated ml values)."""
        return {"patient_id": self.patient_id, "ed_frame": self.ed_frame, "es_frame": self.es_frame,
                "n_frames": self.n_frames, "trigger_zero_frame": self.trigger_zero_frame,
                "ed_matches_trigger": self.ed_matches_trigger, "lvef_percent": round(self.ejection_fraction, 2),
                "curve_change_percent": round(self.curve_change_percent, 2), "reliable": self.reliable,
                "lv_volume_ml": ";".join(f"{v:.2f}" for v in self.lv_volume_ml),
                "mid_lv_volume_ml": ";".join(f"{v:.2f}" for v in self.mid_volume_ml),
                "mid_slices": ";".join(str(z) for z in self.mid_slices), "segmenter": self.segmenter,
                "segmenter_out_of_sample": self.segmenter_out_of_sample}


def shipped_segmenter(model_path: str | Path | None = None, inference: SegInference | None = None
                      ) -> Callable[[], Segmenter]:
    """A factory of per-cine `Segmenter`s running the U-Net at `model_path` (default: the shipped one)
    with `predict_volume`; the model is loaded once. Each segmenter finds the heart on frame 0 and reuses
    that centre for the later frames of its cine. `inference`: the engine (`SegInference`; default torch).

    Raises:
        WeightsUnavailableError: no model given and none shipped. DataError: unreadable model.
    """

    model, args, _, _ = load_for_inference(model_path if model_path is not None else default_model_path(), inference)
    return cine_segmenters(model, args.divisor)


def cine_segmenters(model: nn.Module, divisor: int) -> Callable[[], Segmenter]:
    """A factory of per-cine `Segmenter`s running an already loaded segmenter (`model`, its `divisor`) with
    `predict_volume` (`shipped_segmenter` without the loading: a caller that holds the model reuses it)."""

    def new_segmenter() -> Segmenter:
        state: dict[str, tuple[float, float] | None] = {"centre": None}

        def segment(frame: Volume, index: int) -> np.ndarray:
            pred = predict_volume(model, frame, divisor=divisor, centre=None if index == 0 else state["centre"])
            if index == 0:
                state["centre"] = None if pred.blank else pred.centre
            return pred.labels

        return segment

    return new_segmenter


def lv_slice_volumes_ml(frames: Sequence[Volume], segment: Segmenter, *, clock: Callable[[], float] = time.monotonic
                        ) -> np.ndarray:
    """LV cavity volume (ml) per frame and slice, float64 `(T, Z)`: voxels labelled 3 x voxel volume
    (spacing product, mm^3) / 1000. Logs a progress line every `PROGRESS_INTERVAL_S` (a slow CPU)."""
    out = []
    start = last = clock()
    for t, frame in enumerate(frames):
        labels = np.asarray(segment(frame, t))
        if labels.shape != frame.shape:
            raise ValueError(f"segmenter returned shape {labels.shape} for a frame of shape {frame.shape}")
        per_slice = np.count_nonzero(labels == LV_LABEL, axis=(1, 2))
        out.append(per_slice.astype(np.float64) * float(np.prod(frame.spacing)) / 1000.0)
        now = clock()
        if now - last >= PROGRESS_INTERVAL_S and t + 1 < len(frames):
            last = now
            log.info("%s: ED/ES search: %d/%d frames segmented, %s elapsed", frame.path, t + 1, len(frames),
                     format_duration(now - start))
    if len({v.shape for v in out}) > 1:
        raise ValueError("the frames of a cine have different numbers of slices")
    return np.stack(out)


def mid_ventricular_slices(per_slice_ml: np.ndarray, slice_spacing_mm: float) -> np.ndarray:
    """0-based slice indices whose LV volumes choose ED and ES, from per-slice volumes `(T, Z)`.

    The longest run of adjacent slices with LV cavity in every frame, less the slices within
    `BASE_EXCURSION_MM` of either end (at least one each), trimmed less where fewer than `MIN_MID_SLICES`
    would remain. A stack with no such slice gives every slice (the whole-heart curve).
    """
    v = np.asarray(per_slice_ml, dtype=np.float64)
    always = np.concatenate([(v > 0).all(axis=0), [False]])
    best, start = (0, 0), None
    for z, present in enumerate(always):
        if present and start is None:
            start = z
        elif not present and start is not None:
            if z - start > best[1] - best[0]:
                best = (start, z)
            start = None
    if best[1] == best[0]:
        return np.arange(v.shape[1])
    trim = max(1, math.ceil(BASE_EXCURSION_MM / slice_spacing_mm - 1e-9))
    while trim > 0 and best[1] - best[0] - 2 * trim < MIN_MID_SLICES:
        trim -= 1
    return np.arange(best[0] + trim, best[1] - trim)


def curve_extremes(volumes: Sequence[float]) -> tuple[int, int]:
    """(ED, ES) frames, 1-based, of an LV volume curve over one cycle: the largest / smallest measured volume
    within one frame (cyclically) of where the 3-frame running median of the curve is largest / smallest.

    The running median leaves a rising or falling run and its steps (a basal slice leaving the stack)
    unchanged and flattens a single outlying frame, so on a curve with one maximum and one minimum the result
    is the raw largest / smallest frame, and one mis-segmented frame away from them cannot win. Curves of
    fewer than 3 frames use the raw extremes. Ties go to the earliest frame.
    """
    v = np.asarray(volumes, dtype=np.float64)
    if v.size < 3:
        return int(np.argmax(v)) + 1, int(np.argmin(v)) + 1
    median = np.median(np.stack([np.roll(v, 1), v, np.roll(v, -1)]), axis=0)

    def pick(centres: np.ndarray, sign: float) -> int:
        window = sorted({(int(c) + d) % v.size for c in centres for d in (-1, 0, 1)})
        return window[int(np.argmax(sign * v[window]))] + 1

    return pick(np.flatnonzero(median == median.max()), 1.0), pick(np.flatnonzero(median == median.min()), -1.0)


def check_cine_length(n_frames: int, where: str | Path | None) -> None:
    """Refuse a cine of more than `MAX_CINE_FRAMES` frames for the ED/ES search.

    Raises:
        DataError: naming the cine and what to do instead.
    """
    if n_frames > MAX_CINE_FRAMES:
        raise DataError(where, f"cine of {n_frames} frames: ED and ES are searched over one cardiac cycle (usually "
                               f"12-50 frames; at most {MAX_CINE_FRAMES} accepted). A real-time or multi-cycle "
                               "series? Give ed_frame and es_frame, or a cine of one cycle")


def detect_phases(
    frames: Sequence[Volume],
    *,
    model_path: str | Path | None = None,
    segment: Segmenter | None = None,
    trigger_times_ms: Sequence[float] | None = None,
    patient_id: str | None = None,
) -> PhaseDetection:
    """ED (largest) and ES (smallest LV cavity) frames of a cine given as T >= 2 frames `(Z, H, W)`.

    Frames are chosen by `curve_extremes` on the mid-ventricular slices' curve (`mid_ventricular_slices`; a
    single mis-segmented frame cannot win). `segment` replaces the
    segmenter (tests, other models); else the model at `model_path` (default: shipped) is used. `trigger_times_ms` (one per frame) gives the cross-check frame.

    Raises:
        DataError: fewer than two or more than `MAX_CINE_FRAMES` frames, or no LV cavity found in any frame
            (the curve says nothing).
        WeightsUnavailableError: no model given and none shipped.
    """
    where = frames[0].path if frames else None
    if len(frames) < 2:
        raise DataError(where, f"a cine needs at least 2 frames to find ED and ES, got {len(frames)}")
    check_cine_length(len(frames), where)
    seg = segment if segment is not None else shipped_segmenter(model_path)()
    per_slice = lv_slice_volumes_ml(frames, seg)
    vols = per_slice.sum(axis=1)
    if vols.max() <= 0:
        raise DataError(where, f"no LV cavity found in any of the {len(frames)} frames: ED/ES cannot be found; "
                               "give ed_frame and es_frame")
    mid = mid_ventricular_slices(per_slice, float(frames[0].spacing[0]))
    mid_vols = per_slice[:, mid].sum(axis=1)
    ed, es = curve_extremes(mid_vols)
    known = trigger_times_ms is not None and len(trigger_times_ms) == len(frames)
    zero = int(np.argmin(trigger_times_ms)) + 1 if known else 1
    return PhaseDetection(ed_frame=ed, es_frame=es, lv_volume_ml=tuple(float(x) for x in vols),
                          trigger_zero_frame=zero, trigger_times_known=known, patient_id=patient_id,
                          mid_volume_ml=tuple(float(x) for x in mid_vols), mid_slices=tuple(int(z) for z in mid))


class PhaseSegmenters:
    """Per cine, a `Segmenter` of the model that `segmenter_chooser(model_path)` picks for the patient from the
    fingerprints of all its frames (a fold model that never saw it where the set knows); each model is loaded
    once. `model_path` None: the shipped set when it is there, else the shipped model."""

    def __init__(self, model_path: str | Path | None, inference: SegInference | None,
                 load: Callable[[Path], Callable[[], Segmenter]] | None = None) -> None:
        if model_path is None and not (SHIPPED_SET / INDEX_NAME).is_file():
            model_path = default_model_path()
        self._choose = segmenter_chooser(model_path)
        # `load`: a caller that already holds the models (diagnose) lends them instead of a second copy
        self._load = load or (lambda weights: shipped_segmenter(weights, inference))
        self._loaded: dict[Path, Callable[[], Segmenter]] = {}

    def __call__(self, patient_id: str, frames: Sequence[Volume]) -> tuple[Segmenter, SegmenterChoice]:
        choice = self._choose(patient_id, tuple(volume_fingerprint(f) for f in frames))
        if choice.out_of_sample is False:
            log.warning("patient %s: ED/ES searched with a segmenter trained on it (%s): no model of the set left "
                        "it out", patient_id, choice.model.name)
        weights = Path(choice.model.weights).resolve()
        if weights not in self._loaded:
            self._loaded[weights] = self._load(weights)
        return self._loaded[weights](), choice


def needs_frames(rec: PatientRecord) -> bool:
    """Whether the record's ED or ES image is its cine and that frame is not given (the segmenter finds it)."""
    if rec.cine is None:
        return False
    cine = Path(rec.cine)
    return ((Path(rec.ed_image) == cine and rec.ed_frame is None)
            or (Path(rec.es_image) == cine and rec.es_frame is None))


def resolve_cohort_phases(
    cohort: Cohort,
    *,
    model_path: str | Path | None = None,
    segment: Segmenter | None = None,
    inference: SegInference | None = None,
    segmenters: "PhaseSegmenters | None" = None,
) -> tuple[Cohort, list[PhaseDetection]]:
    """Fill `ed_frame`/`es_frame` of records whose ED or ES image is their cine and whose frame is missing.

    Each cine is segmented by the model `PhaseSegmenters(model_path, inference)` picks for its patient (or
    `segmenters`, made once by a caller that resolves patients one at a time; `segment`: one segmenter for
    all, tests); the detections name it.

    Given frames win: only a missing frame is taken from the detection. Records with separate ED/ES files,
    or with both frames given, are returned unchanged and not segmented. Returns the new cohort and one
    `PhaseDetection` per detected patient (the chosen frames and the LV volume curve, to be recorded).

    Raises:
        DataError: unreadable cine, a cine of more than `MAX_CINE_FRAMES` frames (a 4D NIfTI is refused from
            its header, before decoding), or a cine in which no LV is found (naming the cine).
        WeightsUnavailableError: no model given and none shipped.
    """

    todo = [r for r in cohort.patients if needs_frames(r)]
    if not todo:
        return cohort, []
    choose = None if segment is not None else segmenters or PhaseSegmenters(model_path, inference)
    records: list[PatientRecord] = []
    detections: list[PhaseDetection] = []
    progress = Progress("ED/ES from cines (segmenter on every frame)", len(todo), log, unit="patients", lines=10,
                        bar=True)
    for rec in cohort.patients:
        if not needs_frames(rec):
            records.append(rec)
            continue
        n_frames = cine_frame_count(rec.cine)  # type: ignore[arg-type]
        if n_frames is not None:  # a 4D NIfTI: refused from its header, before 500 frames are decoded
            check_cine_length(n_frames, rec.cine)
        cine = read_cine(rec.cine)  # type: ignore[arg-type]
        seg, choice = (segment, None) if choose is None else choose(rec.patient_id, cine.frames)
        det = detect_phases(cine.frames, segment=seg, trigger_times_ms=cine.trigger_times_ms, patient_id=rec.patient_id)
        if choice is not None:
            det = dataclasses.replace(det, segmenter=choice.model.name, segmenter_out_of_sample=choice.out_of_sample)
        ed = rec.ed_frame if rec.ed_frame is not None else det.ed_frame
        es = rec.es_frame if rec.es_frame is not None else det.es_frame
        if ed == es:
            raise DataError(rec.cine, f"patient {rec.patient_id}: ED and ES would be the same frame ({ed}); "
                                      "give both ed_frame and es_frame")
        if not det.reliable and (rec.ed_frame is None or rec.es_frame is None):
            log.warning("%s: patient %s: the mid-ventricular LV volume changes by only %.1f %% over the cine, so "
                        "the segmenter did not follow the cavity; ED %d / ES %d are unreliable: check them or give "
                        "ed_frame and es_frame", rec.cine, rec.patient_id, det.curve_change_percent, ed, es)
        records.append(dataclasses.replace(rec, ed_frame=ed, es_frame=es, n_frames=cine.n_frames))
        detections.append(det)
        progress.done()
    return dataclasses.replace(cohort, patients=tuple(records)), detections
