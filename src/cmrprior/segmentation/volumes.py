"""Segment whole volumes in their own geometry, and a cohort into a run folder (`cmrprior segment predict`).

Per volume `(Z, H, W)` with in-plane spacing `(sy, sx)` mm:
1. Intensity normalised per volume (1st/99th percentiles) and resampled in-plane to the network's
   1.5 mm grid, exactly as `cmrprior.data.prepare` does for training.
2. Localisation: the network runs on the whole field of view; the centroid of the largest 3D connected
   component of its heart labels (RV, myocardium and LV cavity together) gives the heart centre (image
   centre when nothing is found). Not the per-structure post-processing: on ACDC a false "LV cavity" on a
   bright abdominal organ can be larger than the true cavity, but the heart, three touching structures, is
   the largest blob (2 of 100 ACDC patients were mislocalised that way). A caller may pass the centre
   (cine frames reuse the ED centre).
3. Segmentation: the network runs on a `crop` x `crop` window around that centre (the training view);
   class probabilities outside the window are background.
4. Probabilities are resampled bilinearly back to the input pixel grid (pixel-centre aligned, the inverse
   of step 1's mapping), the argmax taken, and the labels post-processed (largest 3D component per
   structure, holes filled). The output has the input's shape and is written with the input's affine.

`locate_heart` runs steps 1-4 on a patient's ED frame and, with ED's centre, on its ES frame, then
corrects the pair's basal slices (`cmrprior.segmentation.basal`: open LV cavities, and the basal RV by the
segmenter's basal model where it has one): the `HeartLocation` (crop centre in source pixels, heart slices, labels) that `cmrprior.data.prepare` crops
and masks with, so each frame is segmented once and no expert mask is needed.

Bad input: a tiny field of view (less than `MIN_FOV_MM` on a side) raises `DataError`; a constant (e.g.
all-zero) image gives an empty mask and a `blank_image` flag in the QC table, with a logged warning.
"""

from __future__ import annotations

from collections.abc import Mapping

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from torch import nn

from cmrprior.data.intensity import normalise_percentile
from cmrprior.data.prepare import heart_slices, mask_centre
from cmrprior.data.prepared import HeartLocation
from cmrprior.data.resample import crop_or_pad, resample_inplane
from cmrprior.errors import DataError
from cmrprior.io.checks import MIN_FIELD_OF_VIEW_MM, check_field_of_view
from cmrprior.io.load import load_patient
from cmrprior.io.records import Cohort, PatientRecord, PatientVolumes, Volume
from cmrprior.segmentation.basal import BasalModel, basal_model_for, correct_basal
from cmrprior.segmentation.inference import SegInference, load_for_inference
from cmrprior.segmentation.postprocess import largest_component, postprocess_labels
from cmrprior.segmentation.predict import file_sha256, predict_probabilities
from cmrprior.utils.processes import map_in_processes, set_torch_threads
from cmrprior.utils.progress import track
from cmrprior.vocab import LV_LABEL, MYO_LABEL

log = logging.getLogger(__name__)

NET_SPACING_MM = 1.5
CROP_PX = 128
MIN_FOV_MM = MIN_FIELD_OF_VIEW_MM  # the one minimum, shared with `prepare` (cmrprior.io.checks)
# Fewer patients than this are located in the calling process whatever `workers` says: starting a worker process
# (importing torch, loading the segmenters) took about 10 s on a 2-core CPU, and a patient 0.67 s, so two workers
# only pay from about 30 patients (measured: 20 ACDC patients 11 s in one process, 15 s in two; 79 patients 53 s
# and 37 s)
MIN_PATIENTS_FOR_WORKERS = 32


@dataclass(frozen=True)
class VolumePrediction:
    labels: np.ndarray  # uint8 (Z, H, W) in the input geometry
    centre: tuple[float, float]  # heart centre (row, col) on the 1.5 mm grid
    blank: bool


def _to_net_grid(array: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:

    norm = normalise_percentile(array)
    return np.clip(resample_inplane(norm, spacing_yx, target_mm=NET_SPACING_MM), 0.0, 1.0)


def _input_coords(n_in: int, spacing: float, n_net: int) -> np.ndarray:
    """Net-grid coordinate of each of `n_in` input pixels along one axis: `(i + 0.5) * s / 1.5 - 0.5`
    (the inverse of the prepare mapping), clamped to the net grid's edge."""
    return np.clip((np.arange(n_in) + 0.5) * spacing / NET_SPACING_MM - 0.5, 0, n_net - 1)


def _interpolate(prob: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples `(Z, C, len(rows), len(cols))` of `(Z, C, h, w)` at net-grid coordinates."""
    h, w = prob.shape[2:]
    r0 = np.floor(rows).astype(int)
    c0 = np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    p = prob
    top = p[..., r0, :][..., c0] * (1 - fc) + p[..., r0, :][..., c1] * fc
    bot = p[..., r1, :][..., c0] * (1 - fc) + p[..., r1, :][..., c1] * fc
    return top * (1 - fr) + bot * fr


def _back_to_input(prob: np.ndarray, in_hw: tuple[int, int], spacing_yx: tuple[float, float]) -> np.ndarray:
    """`(Z, C, h, w)` probabilities on the 1.5 mm grid -> `(Z, C, H, W)` on the input grid (bilinear).

    Input pixel i lies at net-grid coordinate `(i + 0.5) * s / 1.5 - 0.5` (the inverse of the prepare
    mapping); coordinates outside the net grid are clamped to its edge.
    """
    h, w = prob.shape[2:]
    return _interpolate(prob, _input_coords(in_hw[0], spacing_yx[0], h), _input_coords(in_hw[1], spacing_yx[1], w))


def _touching(coords: np.ndarray, n_net: int, lo: int, hi: int) -> slice:
    """The input pixels (a run: `coords` never decrease) whose bilinear samples read a net-grid index in
    [lo, hi)."""
    r0 = np.floor(coords).astype(int)
    r1 = np.minimum(r0 + 1, n_net - 1)
    hit = np.flatnonzero(((r0 >= lo) & (r0 < hi)) | ((r1 >= lo) & (r1 < hi)))
    return slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0)


def net_grid(volume: Volume) -> tuple[np.ndarray, tuple[float, float]] | None:
    """Step 1: `volume` normalised and resampled to the network's grid `(Z, h, w)` in [0, 1], and its
    in-plane spacing `(sy, sx)` mm; None for a constant image (logged).

    Raises:
        DataError: not 3D, or a field of view under `MIN_FOV_MM` mm on a side.
    """
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise DataError(volume.path, f"expected a 3D volume (Z, H, W), got shape {arr.shape}")
    sy, sx = float(volume.spacing[1]), float(volume.spacing[2])
    check_field_of_view(volume)
    if float(arr.max()) == float(arr.min()):
        log.warning("%s: constant image, no heart can be found", volume.path)
        return None
    return _to_net_grid(arr, (sy, sx)), (sy, sx)


def find_centre(model: nn.Module, grid: np.ndarray, *, divisor: int = 16) -> tuple[float, float]:
    """Step 2: heart centre (row, col) on the net grid from a pass over the whole field of view `grid`
    `(Z, h, w)` (batches of 32 slices: a whole ACDC volume): centroid of the 3D heart-label component with
    the most myocardium touching LV cavity in-plane; the largest component when no such contact exists;
    the image centre when nothing is labelled.

    Why contact and not size: on whole fields of view the network's false positives are blood-like organs
    read as one label ("RV" vessels and bowel, "LV" stomach or liver), and such a blob can outgrow the heart;
    a cavity inside a myocardial ring is what only the heart has.

    A model with a `locator` (an ensemble: its first member) runs that network for this pass."""
    coarse = predict_probabilities(getattr(model, "locator", model), grid, divisor=divisor).argmax(axis=1)
    h, w = grid.shape[1:]
    lab, n = ndimage.label(coarse > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return (h - 1) / 2, (w - 1) / 2
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = True
    contact = (coarse == MYO_LABEL) & ndimage.binary_dilation(coarse == LV_LABEL, structure=in_plane)
    score = np.bincount(lab[contact], minlength=n + 1)
    score[0] = 0
    heart = lab == int(score.argmax()) if score.max() > 0 else largest_component(coarse > 0)
    return tuple(ndimage.center_of_mass(heart)[1:])


def crop_probabilities(model: nn.Module, grid: np.ndarray, centre: tuple[float, float], *, divisor: int = 16,
                       crop: int = CROP_PX) -> np.ndarray:
    """Step 3: class probabilities `(Z, C, h, w)` on the net grid from a pass on the `crop` x `crop` window
    around `centre` (batches of 32 slices); background (probability 1) outside the window."""
    z, h, w = grid.shape
    window = crop_or_pad(grid, centre, size=crop)
    prob_win = predict_probabilities(model, window, divisor=divisor)
    prob = np.zeros((z, prob_win.shape[1], h, w), np.float32)
    prob[:, 0] = 1.0
    r0 = int(round(centre[0] - (crop - 1) / 2))
    c0 = int(round(centre[1] - (crop - 1) / 2))
    sr0, sr1 = max(r0, 0), min(r0 + crop, h)
    sc0, sc1 = max(c0, 0), min(c0 + crop, w)
    prob[:, :, sr0:sr1, sc0:sc1] = prob_win[:, :, sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0]
    return prob


def labels_in_input(prob: np.ndarray, in_hw: tuple[int, int], spacing_yx: tuple[float, float]) -> np.ndarray:
    """Step 4: uint8 labels `(Z, H, W)` on the input grid: probabilities resampled back, argmax,
    post-processed (largest 3D component per structure, holes filled).

    Only the input pixels that sample the box of net-grid pixels with a background probability under 1 (the
    heart window) are resampled: elsewhere every sample is background with probability 1, whose argmax is
    background, so the labels are those of resampling the whole grid at a fraction of the cost."""
    z, _, h, w = prob.shape
    labels = np.zeros((z, *in_hw), np.uint8)
    window = (prob[:, 0] < 1.0).any(axis=0)
    rows, cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
    if rows.size:
        r_in, c_in = _input_coords(in_hw[0], spacing_yx[0], h), _input_coords(in_hw[1], spacing_yx[1], w)
        rs, cs = _touching(r_in, h, rows[0], rows[-1] + 1), _touching(c_in, w, cols[0], cols[-1] + 1)
        labels[:, rs, cs] = _interpolate(prob, r_in[rs], c_in[cs]).argmax(axis=1)
    return postprocess_labels(labels)


def predict_volume(
    model: nn.Module, volume: Volume, *, divisor: int = 16, centre: tuple[float, float] | None = None,
    crop: int = CROP_PX,
) -> VolumePrediction:
    """Labels uint8 `(Z, H, W)` for one volume, in its own geometry (module docstring; steps 1-4 are
    `net_grid`, `find_centre`, `crop_probabilities`, `labels_in_input`). `model` is the U-Net or any module
    of the same call signature (`cmrprior.segmentation.inference.load_for_inference`).

    Raises:
        DataError: not 3D, or a field of view under `MIN_FOV_MM` mm on a side.
    """
    prepared = net_grid(volume)
    if prepared is None:
        return VolumePrediction(np.zeros(np.shape(volume.array), np.uint8), (0.0, 0.0), True)
    grid, spacing = prepared
    if centre is None:
        centre = find_centre(model, grid, divisor=divisor)
    prob = crop_probabilities(model, grid, centre, divisor=divisor, crop=crop)
    labels = labels_in_input(prob, np.shape(volume.array)[1:], spacing)
    return VolumePrediction(labels, (float(centre[0]), float(centre[1])), False)


def locate_heart(model: nn.Module, volumes: PatientVolumes, *, divisor: int = 16, model_path: str | None = None,
                 model_sha256: str | None = None, basal: BasalModel | None = None, correct: bool = True
                 ) -> HeartLocation:
    """Where the heart is in one patient's ED/ES frames, and its labels, from the segmenter alone.

    ED: localisation pass on the whole field of view, then the crop pass (`predict_volume`); ES: the crop
    pass around ED's centre. The crop centre is the centroid of the ED labels in source pixels (ES when ED
    is empty, the image centre when both are). Then the basal correction (`correct_basal` with `basal`;
    `correct=False` keeps the network's labels, for fitting a basal model). `volumes`' expert masks, if
    loaded, are not used.

    Raises:
        DataError: see `predict_volume`; ED and ES of different shapes.
    """

    if volumes.ed.shape != volumes.es.shape:
        raise DataError(volumes.es.path, f"ES shape {volumes.es.shape} differs from ED shape {volumes.ed.shape}")
    ed = predict_volume(model, volumes.ed, divisor=divisor)
    es = predict_volume(model, volumes.es, divisor=divisor, centre=None if ed.blank else ed.centre)
    ed_labels, es_labels = correct_basal(ed.labels, es.labels, basal) if correct else (ed.labels, es.labels)
    centre = mask_centre(ed_labels) or mask_centre(es_labels)
    if centre is None:
        log.warning("%s: the segmenter finds no heart; crop centred on the image", volumes.record.patient_id)
        centre = ((ed_labels.shape[1] - 1) / 2, (ed_labels.shape[2] - 1) / 2)
    return HeartLocation(centre=centre, slices=heart_slices(ed_labels, es_labels), ed_labels=ed_labels,
                         es_labels=es_labels, model=model_path, model_sha256=model_sha256)


@dataclass(frozen=True, eq=False)
class Locator:
    """A segmenter loaded once for `locate_heart`: its network, divisor, weights path and sha256, basal model."""

    net: nn.Module
    divisor: int
    path: Path
    sha256: str
    basal: BasalModel | None

    def locate(self, volumes: PatientVolumes, *, correct: bool = True) -> HeartLocation:
        return locate_heart(self.net, volumes, divisor=self.divisor, model_path=str(self.path),
                            model_sha256=self.sha256, basal=self.basal, correct=correct)


def load_locator(weights: str | Path, inference: SegInference | None = None) -> Locator:
    """The segmenter at `weights` run by the engine of `inference`, with its basal model (`basal_model_for`).

    Raises:
        DataError: unreadable weights or basal file. WeightsUnavailableError: no model shipped.
    """
    path = Path(weights).resolve()
    net, args, _, _ = load_for_inference(path, inference)
    sha = file_sha256(path)
    return Locator(net, args.divisor, path, sha, basal_model_for(path, sha))


def locate_cohort(cohort: Cohort, *, models: Mapping[str, Path], progress: bool = False,
                  inference: SegInference | None = None, correct: bool = True,
                  workers: int = 1) -> dict[str, HeartLocation]:
    """`locate_heart` for every patient, each with the segmenter weights `models[patient_id]`
    (`cmrprior.segmentation.folds.choose_segmenters` decides them), run by the engine of `inference`
    (`cmrprior.segmentation.inference`; default eager PyTorch), with each weights' basal model
    (`cmrprior.segmentation.basal.basal_model_for`; `correct=False`: no basal correction), in `workers`
    processes (`cmrprior.utils.processes`; each loads the segmenters it needs once and runs on this process's
    torch threads shared out among the workers; the labels do not depend on the thread count; with one worker, or
    fewer than `MIN_PATIENTS_FOR_WORKERS` patients, everything runs here, on this process's threads).

    The records' mask paths are ignored (their masks are never read). Returns patient id -> location.

    Raises:
        DataError: unreadable images or weights, bad volumes. WeightsUnavailableError: no model shipped.
    """
    import torch

    threads = max(1, torch.get_num_threads() // max(1, workers))
    jobs = [_LocateJob(replace(rec, ed_mask=None, es_mask=None), Path(models[rec.patient_id]).resolve(),
                       inference, correct) for rec in cohort.patients]
    try:
        done = track(map_in_processes(_locate_one, jobs, workers, min_jobs=MIN_PATIENTS_FOR_WORKERS,
                                      initializer=set_torch_threads, initargs=(threads,)),
                     "locate heart (segmenter on ED/ES frames)", len(jobs), log, unit="patients")
        return {job.record.patient_id: location for job, location in zip(jobs, done)}
    finally:
        _LOCATORS.clear()  # the next call reads the weights again: a file may have been replaced meanwhile


@dataclass(frozen=True)
class _LocateJob:
    record: PatientRecord  # without mask paths
    weights: Path
    inference: SegInference | None
    correct: bool


# the segmenters of one `locate_cohort` call, each loaded once (in each worker process, or here)
_LOCATORS: dict[tuple[Path, SegInference | None], Locator] = {}


def _locate_one(job: _LocateJob) -> HeartLocation:
    """One patient's location (its errors reach the caller whole from a worker process: `DataError` pickles)."""
    key = (job.weights, job.inference)
    if key not in _LOCATORS:
        _LOCATORS[key] = load_locator(job.weights, job.inference)
    return _LOCATORS[key].locate(load_patient(job.record), correct=job.correct)
