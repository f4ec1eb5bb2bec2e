"""Preparation of the ACDC training set the study's way (segmenter localisation, no expert masks read), and
the same on a copy without `_gt` files: prints the wall times and whether the prepared arrays hash the same.

    PYTHONPATH=src .venv/bin/python bench/prepare_locate.py /work/shared/data/acdc/training /tmp/acdc_blind
"""

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from cmrprior.data.prepare import PrepareConfig, prepare_cohort
from cmrprior.experiments.cohort_data import images_only
from cmrprior.io.cohort import open_cohort
from cmrprior.segmentation.volumes import locate_cohort


def blind_copy(src: Path, dst: Path) -> Path:
    """Symlinks to the image files and Info.cfg only (no `_gt` masks); `src` is only read."""
    for folder in sorted(d for d in src.iterdir() if d.is_dir() and d.name.startswith("patient")):
        out = dst / folder.name
        out.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            if ("_gt." in f.name) or not (f.name.endswith((".nii.gz", ".nii")) or f.name == "Info.cfg"):
                continue
            if not (out / f.name).exists():
                (out / f.name).symlink_to(f.resolve())
    return dst


def digest(prepared) -> str:
    h = hashlib.sha256()
    for name in ("ed", "es", "ed_mask", "es_mask", "ed_full", "es_full", "ed_full_mask", "es_full_mask", "slice_index"):
        h.update(np.ascontiguousarray(getattr(prepared, name)).tobytes())
    return h.hexdigest()


def run(data: Path) -> tuple[str, float, float, int]:
    cohort = images_only(open_cohort(data))
    t0 = time.time()
    from cmrprior.segmentation.folds import choose_segmenters, fingerprint_cohort

    choices = choose_segmenters(fingerprint_cohort(cohort))
    locations = locate_cohort(cohort, models={pid: c.model.weights for pid, c in choices.items()})
    t1 = time.time()
    prepared = prepare_cohort(cohort, PrepareConfig(), locations=locations)
    t2 = time.time()
    return digest(prepared), t1 - t0, t2 - t1, len(prepared)


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    blind_copy(src, dst)
    for name, path in (("with _gt", src), ("without _gt", dst)):
        h, t_loc, t_prep, n = run(path)
        print(f"{name}: locate {t_loc:.1f} s, prepare {t_prep:.1f} s, {n} slices, sha256 {h[:16]}")
