"""Write a phantom cohort in the ACDC layout, atomically per patient, resumable.

Layout (what `cmrprior.io.acdc.read_acdc` reads)::

    OUT/phantom.json                               generator parameters (identifies the cohort)
    OUT/patientNNN/Info.cfg                        ED, ES, Group, Height, NbFrame, Weight
    OUT/patientNNN/patientNNN_frame01.nii.gz       ED image, int16 NIfTI (X, Y, Z), gzip
    OUT/patientNNN/patientNNN_frame01_gt.nii.gz    ED mask, uint8 (0 BG, 1 RV, 2 MYO, 3 LV cavity)
    OUT/patientNNN/patientNNN_frameXX[_gt].nii.gz  ES image and mask, XX = ES frame
    OUT/patientNNN/phantom_truth.json              drawn targets, measured values, whether the cue is on

With `output_format="dicom"` each patient is a short-axis cine DICOM series instead, and `OUT/manifest.csv`
lists the cines (see `cmrprior.data.phantom.dicom_writer`).

Each patient is written into a hidden temporary folder next to its final place and renamed when complete,
so a killed run leaves no half patient; a re-run with the same parameters keeps finished patients and
writes the missing ones. Files are byte-identical for the same parameters (gzip without a time stamp).
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np

from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.data.phantom.physiology import KNOWN_CLASSES
from cmrprior.data.phantom.render import RenderedPatient, render_patient
from cmrprior.errors import ConfigError, DataError
from cmrprior.io.records import ACDC_CLASSES
from cmrprior.utils import atomic

log = logging.getLogger(__name__)

MANIFEST = "phantom.json"
FORMAT_VERSION = 1
_TMP_PREFIX = ".partial-"
FORMATS = ("nifti", "dicom")


def nifti_bytes(array_zyx: np.ndarray, spacing_zyx: tuple[float, float, float]) -> bytes:
    """A gzip-compressed NIfTI-1 file (deterministic bytes) for a `(Z, H, W)` array.

    Data are stored as (X, Y, Z) = array.transpose(2, 1, 0); the affine is diag(-x, -y, z) (ACDC's
    orientation, scaled by the voxel size) centred on the volume; units mm; qform and sform set.
    """
    dz, dy, dx = (float(s) for s in spacing_zyx)
    data = np.ascontiguousarray(array_zyx.transpose(2, 1, 0))
    nx, ny, nz = data.shape
    affine = np.diag([-dx, -dy, dz, 1.0])
    affine[:3, 3] = [dx * (nx - 1) / 2, dy * (ny - 1) / 2, -dz * (nz - 1) / 2]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def info_cfg_text(p: RenderedPatient) -> str:
    """Info.cfg in ACDC's format ("Key: value" lines)."""
    return (f"ED: 1\nES: {p.es_frame}\nGroup: {p.label}\nHeight: {p.height_cm:.1f}\n"
            f"NbFrame: {p.n_frames}\nWeight: {p.weight_kg:.1f}\n")


def _truth(p: RenderedPatient) -> dict[str, object]:
    return {
        "physiology": p.physiology.summary(),
        "measured": {k: (None if v is None else round(float(v), 4)) for k, v in p.measures.as_dict().items()},
        "spurious_cue": p.cue,
        "attempts": p.attempts,
        "spacing_zyx_mm": list(p.spacing),
    }


def write_patient(out: Path, patient_id: str, p: RenderedPatient, *, output_format: str = "nifti",
                  seed_key: str = "") -> Path:
    """Write one patient folder atomically (temporary hidden folder, then rename). Returns the folder.

    `output_format`: "nifti" (ACDC layout) or "dicom" (cine series, `p` rendered with `cine=True`;
    `seed_key` makes its UIDs unique per cohort and deterministic).
    """
    final = out / patient_id
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{patient_id}-", dir=out))
    try:
        truth = _truth(p)
        if output_format == "dicom":
            from cmrprior.data.phantom.dicom_writer import CINE_FOLDER, write_cine_dicom

            times = write_cine_dicom(tmp / CINE_FOLDER, patient_id, p, seed_key=seed_key)
            truth.update(ed_frame=1, es_frame=p.es_frame, n_frames=p.n_frames,
                         trigger_times_ms=[round(float(t), 3) for t in times],
                         lv_volume_ml=[round(v, 3) for v in p.cine_lv_ml or ()])
        else:
            (tmp / "Info.cfg").write_text(info_cfg_text(p), encoding="utf-8")
            for frame, image, mask in ((1, p.ed_image, p.ed_mask), (p.es_frame, p.es_image, p.es_mask)):
                stem = f"{patient_id}_frame{frame:02d}"
                (tmp / f"{stem}.nii.gz").write_bytes(nifti_bytes(image, p.spacing))
                (tmp / f"{stem}_gt.nii.gz").write_bytes(nifti_bytes(mask.astype(np.uint8), p.spacing))
        (tmp / "phantom_truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
        for f in (f for f in tmp.rglob("*") if f.is_file()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _manifest(n_patients: int, seed: int, spurious_cue: bool, classes: tuple[str, ...], cfg: PhantomConfig,
              output_format: str = "nifti") -> dict:
    extra = {} if output_format == "nifti" else {"format": output_format}  # NIfTI phantoms keep their manifest
    return {
        **extra,
        "generator": "cmrprior.data.phantom",
        "format_version": FORMAT_VERSION,
        "n_patients": n_patients,
        "seed": seed,
        "spurious_cue": spurious_cue,
        "classes": list(classes),
        "config": json.loads(json.dumps(asdict(cfg))),
    }


def _prepare_folder(out: Path, manifest: dict) -> None:
    """Create `out`, or accept it when empty or a phantom with the same parameters; else raise DataError."""
    if out.exists() and not out.is_dir():
        raise DataError(out, "phantom output exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / MANIFEST
    if mpath.is_file():
        try:
            existing = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(mpath, f"unreadable phantom manifest ({exc})") from exc
        if existing != manifest:
            diff = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k))
            raise DataError(out, f"holds a phantom with other parameters ({', '.join(diff)} differ); "
                                 "choose another --out or delete it")
        for stale in out.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        return
    if any(out.iterdir()):
        raise DataError(out, "folder is not empty and is not a phantom cohort; refusing to write into it")
    atomic.write_json(mpath, manifest)


def generate_phantom(
    out: str | Path,
    n_patients: int,
    seed: int,
    spurious_cue: bool = False,
    classes: tuple[str, ...] = ACDC_CLASSES,
    config: PhantomConfig | None = None,
    workers: int = 1,
    output_format: str = "nifti",
    first_patient: int = 1,
) -> Path:
    """Generate a synthetic CMR cohort in the ACDC layout (or as DICOM cines) and return `out`.

    Patients `patient001..` are assigned classes round-robin (balanced); patient i is drawn from
    SeedSequence([seed, i]) alone, so any patient can be regenerated independently and resumed runs equal
    uninterrupted ones.

    Args:
        out: output folder; created, or resumed if it holds a phantom with identical parameters.
        n_patients: number of patients (>= 1).
        seed: master seed.
        spurious_cue: add the class-dependent marker outside the heart (see `render`), off by default.
        classes: class names, a subset of NOR, DCM, HCM, MINF, RV (e.g. two for a binary task).
        config: acquisition and noise ranges (`PhantomConfig()` by default).
        workers: processes rendering patients in parallel (the files do not depend on it).
        output_format: "nifti" (ACDC layout) or "dicom" (one short-axis cine DICOM series per patient and
            `OUT/manifest.csv`; ED/ES images are the same as in the NIfTI cohort).
        first_patient: number of the first patient: patients `first_patient .. first_patient + n_patients - 1`
            are exactly those patients of a larger phantom with the same seed (a separate held-out cohort of new
            patients: `generate_phantom(out2, 20, seed, first_patient=61)` next to a 60-patient one).
    Raises:
        ConfigError: bad n_patients, workers, class names or output format. DataError: `out` is a non-phantom or different phantom.
    """
    cfg = config or PhantomConfig()
    classes = tuple(classes)
    if n_patients < 1 or first_patient < 1:
        raise ConfigError(f"n_patients and first_patient must be >= 1, got {n_patients}, {first_patient}")
    unknown = [c for c in classes if c not in KNOWN_CLASSES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise ConfigError(f"phantom classes must be distinct names from {', '.join(KNOWN_CLASSES)}, got {classes}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if output_format not in FORMATS:
        raise ConfigError(f"phantom output format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    out = Path(out)
    manifest = _manifest(n_patients, int(seed), bool(spurious_cue), classes, cfg, output_format)
    if first_patient != 1:  # a 1-based phantom keeps the manifest it always had
        manifest["first_patient"] = int(first_patient)
    _prepare_folder(out, manifest)
    numbers = range(first_patient - 1, first_patient - 1 + n_patients)
    width = max(3, len(str(numbers[-1] + 1)))
    todo = [(i, f"patient{i + 1:0{width}d}") for i in numbers]
    todo = [(i, pid) for i, pid in todo if not (out / pid).is_dir()]
    jobs = [(out, pid, i, classes, cfg, int(seed), bool(spurious_cue), output_format) for i, pid in todo]
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            _make_patient(*job)
    else:
        # spawn (not fork): the caller may hold torch threads; results do not depend on the worker count
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            for fut in as_completed([pool.submit(_make_patient, *job) for job in jobs]):
                fut.result()
    if output_format == "dicom":
        _write_cine_manifest(out, [f"patient{i + 1:0{width}d}" for i in numbers])
    return out


def _write_cine_manifest(out: Path, patient_ids: list[str]) -> None:
    """`OUT/manifest.csv` of a DICOM phantom: label, cine folder and body size per patient."""
    from cmrprior.data.phantom.dicom_writer import CINE_FOLDER

    lines = ["patient_id,label,cine,height_cm,weight_kg"]
    for pid in patient_ids:
        truth = json.loads((out / pid / "phantom_truth.json").read_text(encoding="utf-8"))
        phys = truth["physiology"]
        lines.append(f"{pid},{phys['label']},{pid}/{CINE_FOLDER},{phys['height_cm']},{phys['weight_kg']}")
    atomic.write_text(out / "manifest.csv", "\n".join(lines) + "\n")


def _make_patient(out: Path, pid: str, i: int, classes: tuple[str, ...], cfg: PhantomConfig, seed: int,
                  spurious_cue: bool, output_format: str = "nifti") -> Path:
    """Render patient i (class round-robin, SeedSequence([seed, i])) and write it atomically."""
    k = i % len(classes)
    patient = render_patient(classes[k], k, len(classes), cfg, np.random.SeedSequence([seed, i]),
                             spurious_cue=spurious_cue, cine=output_format == "dicom")
    folder = write_patient(out, pid, patient, output_format=output_format, seed_key=f"{seed}-{spurious_cue}")
    log.debug("phantom %s (%s) written", pid, classes[k])
    return folder
