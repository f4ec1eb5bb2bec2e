"""The classifier's input images: full or segmented slice pairs of a prepared cohort at the input size.

One function makes them for the study, for its `--test` cohort and for readers of a finished run (saliency),
so a cell is always explained on exactly the images it was scored on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmrprior.anatomy.heart import apply_image_mode
from cmrprior.classify.data import SliceSet, resize_labels, resize_stack
from cmrprior.classify.pooling import base_to_apex
from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import DataError
from cmrprior.runs import HOLDOUT, CellResult, RunFolder, labels_in_order
from cmrprior.vocab import ImageSpec


def image_stacks(prepared: PreparedCohort, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """ED and ES images float32 `(N, S, S)`, made as `spec` says: mode "full" = the images as acquired
    (`prepared.ed_full`: whole field of view, not centred on the heart; `prepared.ed` for cohorts prepared
    before full images existed, which is what their runs were scored on); other modes restrict the
    heart-centred crop (`prepared.ed`) to the heart.

    Raises DataError when segmented images are asked of a cohort without masks.
    """
    if spec.mode == "full":
        if prepared.ed_full is not None and prepared.es_full is not None:
            return prepared.ed_full, prepared.es_full
        return prepared.ed, prepared.es
    if prepared.ed_mask is None or prepared.es_mask is None:
        raise DataError(None, f"{spec.images} images need heart masks and the prepared cohort has none")
    kw = dict(mode=spec.mode, margin_mm=spec.margin_mm, pixel_spacing_mm=prepared.pixel_spacing_mm,
              groups=prepared.patient_index)
    return apply_image_mode(prepared.ed, prepared.ed_mask, **kw), apply_image_mode(prepared.es, prepared.es_mask, **kw)


def mask_stacks(prepared: PreparedCohort, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The study's ED and ES heart masks uint8 `(N, S, S)` on the pixels of `image_stacks(prepared, spec)`, or
    None when the cohort has none there (no masks; full images of a cohort prepared before full images had
    masks) or the mode moves pixels (`crop` modes resample each slice's heart box)."""
    if spec.mode == "full":
        if prepared.ed_full is not None:
            masks = (prepared.ed_full_mask, prepared.es_full_mask)
        else:
            masks = (prepared.ed_mask, prepared.es_mask)
    elif spec.mode == "mask":
        masks = (prepared.ed_mask, prepared.es_mask)
    else:
        return None
    return None if masks[0] is None or masks[1] is None else masks


def build_slice_set(prepared: PreparedCohort, spec: ImageSpec, input_size: int, *, labels: bool = True) -> SliceSet:
    """Slice pairs of every patient at `input_size` px, labels in the cohort's class order, with their masks
    at the same size where `mask_stacks` has them, and their positions from base to apex (`base_to_apex`, by
    the study's ED masks where the cohort has masks).

    labels=True: every patient must have a known label (DataError naming them otherwise); labels=False:
    unknown labels stay -1 (readers that relabel in another class order).
    """
    if labels and (prepared.patient_labels < 0).any():
        bad = [p.patient_id for p, lab in zip(prepared.patients, prepared.patient_labels) if lab < 0][:5]
        raise DataError(None, f"patients without a known label: {bad}")
    ed, es = image_stacks(prepared, spec)
    masks = mask_stacks(prepared, spec)
    return SliceSet(
        ed=np.ascontiguousarray(resize_stack(ed.astype(np.float32), input_size)),
        es=np.ascontiguousarray(resize_stack(es.astype(np.float32), input_size)),
        labels=prepared.slice_labels.astype(np.int64),
        patient_index=prepared.patient_index.astype(np.int64),
        patient_ids=tuple(prepared.patient_ids),
        ed_mask=None if masks is None else resize_labels(masks[0], input_size),
        es_mask=None if masks is None else resize_labels(masks[1], input_size),
        positions=base_to_apex(prepared.slice_position, prepared.patient_index,
                               None if prepared.ed_mask is None else (prepared.ed_mask > 0).sum(axis=(1, 2))),
    )


# Readers of a finished run ask for the same cohort's images cell after cell (saliency: every cell of a run):
# the last prepared cohort and its slice sets are kept, keyed by the folder's files (name, size, mtime), so a
# rewritten folder is read again. Callers only read them (subsets are copies).
_PREPARED: dict[tuple, PreparedCohort] = {}
_SLICES: dict[tuple, SliceSet] = {}


def _cohort_slices(folder: Path, spec: ImageSpec, input_size: int) -> tuple[PreparedCohort, SliceSet]:
    stamp = (str(folder.resolve()),) + tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                            for f in sorted(folder.iterdir()) if f.is_file())
    if stamp not in _PREPARED:
        _PREPARED.clear()
        _SLICES.clear()
        _PREPARED[stamp] = PreparedCohort.load(folder)
    prepared = _PREPARED[stamp]
    key = (stamp, spec, input_size)
    if key not in _SLICES:
        if len(_SLICES) >= 2:
            _SLICES.pop(next(iter(_SLICES)))
        _SLICES[key] = build_slice_set(prepared, spec, input_size, labels=False)
    return prepared, _SLICES[key]


def load_cell_test_inputs(run: RunFolder, result: CellResult) -> tuple[SliceSet, PreparedCohort, np.ndarray]:
    """The exact test slice pairs a finished cell was scored on (labels in the cell's class order), rebuilt
    from the run's prepared cohort and `RunInfo`; with that PreparedCohort and the rows of those slices in it.

    Raises DataError when the cell has no test outputs or its patients are not in the prepared cohort.
    """
    if result.test is None:
        raise DataError(run.cell_dir(result.key), "cell has no test outputs")
    info = run.info()
    prepared, full = _cohort_slices(run.prepared(HOLDOUT if result.key.split == HOLDOUT else "study"),
                                    info.spec(result.key.images), info.input_size)
    ids = list(result.test.patient_ids)
    pos = {p: i for i, p in enumerate(full.patient_ids)}
    missing = [p for p in ids if p not in pos]
    if missing:
        raise DataError(run.cell_dir(result.key), f"test patients not in the prepared cohort: {missing[:5]}")
    rows = np.concatenate([np.flatnonzero(full.patient_index == pos[p]) for p in ids])
    names = [prepared.patients[prepared.patient_index[r]].label for r in rows]
    test = full.subset_patients(ids).with_labels(labels_in_order(names, result.classes, run.cell_dir(result.key)))
    return test, prepared, rows
