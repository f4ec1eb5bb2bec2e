"""Copies of an ACDC-layout cohort as users meet them: symlinks to the image files only (no `_gt` masks),
patients renamed, or labels removed. The source is only read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np


def acdc_copy(src: Path, dst: Path, *, rename: str | None = None, keep_gt: bool = False, labels: bool = True,
              only: tuple[str, ...] | None = None) -> Path:
    """`dst` with one folder per patient of `src` (those in `only`, if given), images symlinked.

    rename: new id prefix ("holdout" -> holdout001, ...); keep_gt: link the `_gt` files too; labels=False:
    Info.cfg without Group (an unlabelled cohort, as the ACDC testing set). Returns `dst`.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for i, folder in enumerate(sorted(d for d in src.iterdir() if d.is_dir() and d.name.startswith("patient"))):
        if only is not None and folder.name not in only:
            continue
        pid = folder.name if rename is None else f"{rename}{i + 1:03d}"
        out = dst / pid
        out.mkdir(exist_ok=True)
        for f in sorted(folder.iterdir()):
            if not f.name.endswith((".nii.gz", ".nii")) or ("_gt." in f.name and not keep_gt):
                continue
            link = out / f.name.replace(folder.name, pid, 1)
            if not link.exists():
                link.symlink_to(f.resolve())
        info = (folder / "Info.cfg").read_text()
        if not labels:
            info = re.sub(r"(?m)^Group:.*\n?", "", info)
        (out / "Info.cfg").write_text(info)
    return dst


def array_digests(prepared) -> dict[str, str]:
    """sha256 of every array of a PreparedCohort (images, masks, full images, indices)."""
    names = ("ed", "es", "ed_mask", "es_mask", "ed_full", "es_full", "ed_full_mask", "es_full_mask",
             "patient_index", "slice_index", "slice_position")
    out = {}
    for n in names:
        a = getattr(prepared, n)
        out[n] = "none" if a is None else hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
    return out
