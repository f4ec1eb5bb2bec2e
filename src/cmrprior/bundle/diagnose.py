"""`cmrprior diagnose`: a bundle applied to new patients, each judged or refused with a reason.

For every patient of the cohort (ACDC folder, manifest CSV, NIfTI or DICOM, cines with ED/ES found by the
segmenter; labels not needed, expert masks never read), one at a time so that one bad patient cannot stop
the others:

0. a patient whose files are missing or unreadable when the cohort is opened is refused, the reason naming the
   file;
1. ED/ES frames of a cine (`resolve_cohort_phases`, the bundle's segmenter: a fold model that never saw the
   patient when the set knows it) -> `OUT/qc/phases.csv`;
2. the acquisition against the bundle's training domain (pixel and slice spacing, field of view);
3. the heart masks by the bundle's segmenter (a fold model that never saw the patient when the set knows
   it), written with the input's header to `OUT/masks/<patient>/<patient>_{ED,ES}_seg.nii.gz`;
4. segmentation plausibility: a phase without LV cavity, myocardium or RV anywhere refuses the patient (its
   measures would be meaningless); the flags of `cmrprior.segmentation.qc.mask_flags` are warnings (on ACDC's
   out-of-sample masks a mid-ventricular slice without RV at ES is flagged in 7 of 100 patients whose
   measures are sound);
5. the measures (`cmrprior.anatomy.measure.measure_patient`) -> `OUT/measures.csv`; a measure of the model
   (kinds anatomy and hybrid) far outside the training range refuses the patient;
6. the class probabilities: of the measures (anatomy); of the slice pairs prepared and scored exactly as the
   study's held-out patients were (`cmrprior.bundle.image`; image); of both, fused as the study's hybrid
   (hybrid); the measures that pushed the call (`Bundle.drivers`) and, for an image model, the Grad-CAM map
   of the call on the patient's page.

Outputs (never in the input folder, each written atomically): `diagnoses.csv` (patient_id, label when the
input has one, predicted_label, prob_<CLASS> for every class, status ok|refused, reason, top_measures,
ed_frame, es_frame, segmenter, seconds), `measures.csv`, the masks, `pages/<patient>.html` (one
self-contained page per patient) and `index.html` (the cohort), `run.json` (the bundle's sha256, the input's
fingerprint, versions, times).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import cmrprior
from cmrprior.anatomy.measure import measure_patient
from cmrprior.anatomy.measures_csv import MeasuresRow, write_measures_csv
from cmrprior.bundle.model import Bundle, Driver
from cmrprior.bundle.spec import Acquisition
from cmrprior.errors import CmrPriorError
from cmrprior.io.cohort import open_cohort
from cmrprior.io.load import load_patient
from cmrprior.io.nifti import write_nifti
from cmrprior.io.records import Cohort, PatientRecord, PatientVolumes
from cmrprior.segmentation.folds import segmenter_chooser
from cmrprior.segmentation.inference import SegInference
from cmrprior.segmentation.phases import PhaseSegmenters, cine_segmenters, resolve_cohort_phases
from cmrprior.segmentation.qc import mask_flags, write_csv
from cmrprior.segmentation.volumes import Locator, load_locator
from cmrprior.io.fingerprint import volume_fingerprint
from cmrprior.utils import atomic
from cmrprior.utils.filenames import mask_filename, patient_filename
from cmrprior.utils.runfolder_checks import check_out_dir, input_fingerprint
from cmrprior.vocab import LV_LABEL, MYO_LABEL, RV_LABEL

log = logging.getLogger(__name__)

OK, REFUSED = "ok", "refused"
STRUCTURES = {LV_LABEL: "LV cavity", MYO_LABEL: "myocardium", RV_LABEL: "RV"}


@dataclass
class PatientDiagnosis:
    """One patient's outcome. `probabilities` is empty when refused."""

    patient_id: str
    label: str | None
    status: str = REFUSED
    reason: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    parts: dict[str, dict[str, float]] = field(default_factory=dict)  # a hybrid's image and anatomy models' own
    drivers: tuple[Driver, ...] = ()
    measures: dict[str, float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    ed_frame: int | None = None
    es_frame: int | None = None
    segmenter: str = ""
    masks: tuple[Path, ...] = ()
    seconds: float = 0.0
    # kept for the patient's page only (not written elsewhere): the masks shown, an image model's saliency (PNG)
    # and its share of positive saliency inside the heart
    shown: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    saliency: bytes | None = field(default=None, repr=False)
    saliency_in_heart: float | None = None

    @property
    def predicted_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get) if self.probabilities else ""

    def row(self, classes: tuple[str, ...]) -> dict[str, object]:
        reason = "; ".join([self.reason] * bool(self.reason) + self.warnings)
        return {"patient_id": self.patient_id, "label": self.label or "", "predicted_label": self.predicted_label,
                **{f"prob_{c}": (f"{self.probabilities[c]:.6f}" if self.probabilities else "") for c in classes},
                "status": self.status, "reason": reason,
                "top_measures": "; ".join(f"{d.feature}={d.value:.4g} (p{d.percentile:.0f}, {d.effect:+.3f})"
                                          for d in self.drivers),
                "ed_frame": self.ed_frame or "", "es_frame": self.es_frame or "", "segmenter": self.segmenter,
                "seconds": f"{self.seconds:.2f}"}


@dataclass(frozen=True)
class DiagnosisTable:
    classes: tuple[str, ...]
    patients: tuple[PatientDiagnosis, ...]
    out: Path | None

    @property
    def rows(self) -> list[dict[str, object]]:
        return [p.row(self.classes) for p in self.patients]

    def probabilities(self) -> np.ndarray:
        """`(P, n_classes)` probabilities, NaN rows for refused patients."""
        return np.array([[p.probabilities.get(c, np.nan) for c in self.classes] for p in self.patients])

    def to_frame(self):
        import pandas as pd  # optional: notebooks have it

        return pd.DataFrame(self.rows)


class _Segmenters:
    """The bundle's segmenter per patient, each weights file loaded once and shared by the ED/ES search of a cine
    and the patient's segmentation (both a fold model that never saw the patient where the set knows it)."""

    def __init__(self, model: Path, inference: SegInference | None) -> None:
        self.model, self.inference = model, inference
        self._choose = segmenter_chooser(model)
        self._loaded: dict[Path, Locator] = {}
        self.phases = PhaseSegmenters(model, inference, load=self._cine_segmenters)

    def _locator(self, weights: str | Path) -> Locator:
        path = Path(weights).resolve()
        if path not in self._loaded:
            self._loaded[path] = load_locator(path, self.inference)
        return self._loaded[path]

    def _cine_segmenters(self, weights: Path):
        loc = self._locator(weights)
        return cine_segmenters(loc.net, loc.divisor)

    def for_patient(self, rec: PatientRecord, prints: tuple[str, str]) -> tuple[Locator, str, bool | None]:
        choice = self._choose(rec.patient_id, prints)
        return self._locator(choice.model.weights), choice.model.name, choice.out_of_sample


def _judge(bundle: Bundle, one: Cohort, segs: _Segmenters, out: Path | None, d: PatientDiagnosis, explain: bool
           ) -> None:
    """Fill `d` for the one patient of `one` (steps 2-6 of the module docstring; `explain`: the saliency map of an
    image model's call); raises CmrPriorError on bad input."""
    (rec,) = one.patients
    volumes: PatientVolumes = load_patient(dataclasses.replace(rec, ed_mask=None, es_mask=None))
    acq = Acquisition.of(volumes.ed.shape, volumes.ed.spacing)
    outside = acq.outside(bundle.domain, bundle.limits)
    prints = (volume_fingerprint(volumes.ed), volume_fingerprint(volumes.es))  # as `patient_fingerprints`, no reread
    if bundle.trained_on(prints):
        d.warnings.append("IN-SAMPLE: this scan was in the bundle's training cohort; its call says nothing about "
                          "how the model does on new patients")
    locator, name, out_of_sample = segs.for_patient(rec, prints)
    d.segmenter = name + ("" if out_of_sample is not False else " (IN-SAMPLE: the segmenter was trained on this scan)")
    loc = locator.locate(volumes)
    if out is not None:
        stem = patient_filename(rec.patient_id)
        d.masks = tuple(write_nifti(lab, None, out / "masks" / stem / mask_filename(stem, phase), like=vol)
                        for phase, lab, vol in (("ED", loc.ed_labels, volumes.ed), ("ES", loc.es_labels, volumes.es)))
    d.shown = {"ED": (volumes.ed.array, loc.ed_labels), "ES": (volumes.es.array, loc.es_labels)}
    problems = []
    for phase, lab in (("ED", loc.ed_labels), ("ES", loc.es_labels)):
        absent = [name for value, name in STRUCTURES.items() if not (lab == value).any()]
        if absent:
            problems.append(f"segmentation failed at {phase}: no {', no '.join(absent)} found")
            continue
        flags = mask_flags(lab)
        if any(v is True for v in flags.values()):
            d.warnings.append(f"{phase} mask flagged: {flags['details']}")
    if outside:
        problems.append("acquisition outside the training domain: " + "; ".join(outside))
    if not problems:
        m = measure_patient(np.rint(loc.ed_labels).astype(np.int16), np.rint(loc.es_labels).astype(np.int16),
                            volumes.ed.spacing, height_cm=rec.height_cm, weight_kg=rec.weight_kg)
        d.measures = m.as_dict()
        problems += bundle.outside_measures(d.measures)
        missing = bundle.missing_measures(d.measures)
        if missing:
            d.warnings.append(f"measures unknown, replaced by the training median: {', '.join(missing)}")
    if problems:
        d.reason = "; ".join(problems)
        return
    image = None
    if bundle.image is not None:  # step 6 of an image model: the study's held-out preparation and scoring
        prepared = bundle.image.prepared(one, loc)
        slices = bundle.image.slices(prepared)
        image = bundle.image.predict_proba(slices)
    p = bundle.predict_proba([d.measures], image=image)[0]
    d.probabilities = {c: float(v) for c, v in zip(bundle.classes, p)}
    if bundle.fusion is not None:
        anatomy = bundle.predictor.predict_proba(bundle.matrix([d.measures]))[0]
        d.parts = {part: {c: float(v) for c, v in zip(bundle.classes, q)}
                   for part, q in (("image model", image[0]), ("anatomy model", anatomy))}
    d.drivers = tuple(bundle.drivers(d.measures, image=None if image is None else image[0]))
    d.status = OK
    if image is not None and explain:
        d.saliency, d.saliency_in_heart = bundle.image.saliency_png(prepared, slices, int(np.argmax(p)))


def diagnose(bundle: Bundle, data: str | Path, out: str | Path | None = None, *,
             inference: SegInference | None = None, pages: bool = True) -> DiagnosisTable:
    """Apply `bundle` to every patient of the cohort at `data`; outputs into `out` when given (module
    docstring). Returns the table (refused patients included).

    Raises:
        BundleError: the bundle's segmenter differs from the one it was trained with.
        DataError: the cohort cannot be opened at all (no readable patient); a patient with missing or unreadable
            files, or bad data, is refused on its own row with the reason naming the file.
        ConfigError: `out` inside the input folder.
    """
    t0 = time.time()
    data = Path(data)
    out = None if out is None else check_out_dir(out, [data])
    # a patient whose files are missing or unreadable is refused on its own row, never the whole cohort
    cohort: Cohort = open_cohort(data, skip_bad=True)
    segs = _Segmenters(bundle.segmenter_model(), inference)
    results, detections, measured = [], [], []
    for rec in cohort.patients:
        t = time.time()
        d = PatientDiagnosis(rec.patient_id, rec.label)
        try:
            one, found = resolve_cohort_phases(dataclasses.replace(cohort, patients=(rec,)), segmenters=segs.phases)
            detections += found
            rec = one.patients[0]
            d.ed_frame, d.es_frame = rec.ed_frame, rec.es_frame
            _judge(bundle, one, segs, out, d, explain=out is not None and pages)
        except CmrPriorError as exc:
            d.reason = f"cannot be judged: {exc}"
        d.seconds = time.time() - t
        if d.measures:
            measured.append(MeasuresRow(rec.patient_id, rec.label, d.measures))
        log.info("diagnose %s: %s %s", rec.patient_id, d.status, d.predicted_label or d.reason)
        results.append(d)
    for pid, why in cohort.skipped:
        log.warning("diagnose %s: refused, unreadable: %s", pid, why)
        results.append(PatientDiagnosis(pid, None, reason=f"cannot be read: {why}"))
    table = DiagnosisTable(bundle.classes, tuple(results), out)
    if out is not None:
        _write_outputs(bundle, table, data, out, measured, detections, pages, t0)
    return table


def _write_outputs(bundle: Bundle, table: DiagnosisTable, data: Path, out: Path, measured: list[MeasuresRow],
                   detections: list, pages: bool, t0: float) -> None:
    write_csv(table.rows, out / "diagnoses.csv")
    if measured:
        write_measures_csv(measured, out / "measures.csv")
    if detections:
        write_csv([det.as_row() for det in detections], out / "qc" / "phases.csv")
    if pages:
        from cmrprior.bundle.pages import write_pages

        write_pages(bundle, table, out)
    atomic.write_json(out / "run.json", {
        "bundle": {"name": bundle.name, "path": str(bundle.root), "sha256": bundle.sha256,
                   "segmenter_sha256": bundle.segmenter.sha256},
        "data": str(data), "data_fingerprint": input_fingerprint(data),
        "n_patients": len(table.patients), "n_refused": sum(p.status != OK for p in table.patients),
        "versions": {"cmrprior": cmrprior.__version__, "python": platform.python_version(),
                     "numpy": np.__version__},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": time.time() - t0,
    })
