"""Plain-text summaries of a Cohort (records only) and of a PreparedCohort (arrays)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from cmrprior.data.prepared import PreparedCohort
from cmrprior.io.records import Cohort


def _class_counts(labels: list[str | None], classes: tuple[str, ...]) -> str:
    counts = Counter(labels)
    parts = [f"{c} {counts.get(c, 0)}" for c in classes]
    if counts.get(None):
        parts.append(f"unlabelled {counts[None]}")
    return ", ".join(parts) if parts else "none"


def _skipped_lines(skipped: tuple[tuple[str, str], ...]) -> list[str]:
    if not skipped:
        return []
    return [f"skipped:    {len(skipped)}"] + [f"  - {who}: {why}" for who, why in skipped]


def summarize_cohort(cohort: Cohort) -> str:
    """Patients per class, masks, metadata and skipped entries of a Cohort (no voxels read)."""
    n = len(cohort)
    masks = sum(p.has_masks for p in cohort.patients)
    hw = sum(p.height_cm is not None and p.weight_kg is not None for p in cohort.patients)
    cine = sum(p.cine is not None for p in cohort.patients)
    lines = [
        f"cohort:     {cohort.source}",
        f"patients:   {n}",
        f"classes:    {_class_counts(cohort.labels, cohort.classes)}",
        f"masks:      {masks}/{n} patients",
        f"height+weight: {hw}/{n} patients",
        f"4D cine:    {cine}/{n} patients",
    ]
    return "\n".join(lines + _skipped_lines(cohort.skipped))


def summarize(prepared: PreparedCohort) -> str:
    """Patients per class, slices, spacing, image shape, masks and skipped patients of a prepared cohort."""
    n_pat = len(prepared.patients)
    per_patient = np.array([p.n_slices for p in prepared.patients]) if n_pat else np.zeros(0)
    thick = sorted({round(p.slice_thickness_mm, 2) for p in prepared.patients})
    shape = tuple(prepared.ed.shape[1:])
    lines = [
        f"patients:   {n_pat}",
        f"classes:    {_class_counts([p.label for p in prepared.patients], prepared.classes)}",
        f"slices:     {len(prepared)} ED/ES pairs"
        + (f" ({per_patient.min()}-{per_patient.max()} per patient, mean {per_patient.mean():.1f})" if n_pat else ""),
        f"image:      {shape[0]} x {shape[1]} pixels at {prepared.pixel_spacing_mm:g} mm "
        f"(field of view {shape[0] * prepared.pixel_spacing_mm:g} mm), intensities in [0, 1]",
        f"slice thickness: {', '.join(f'{t:g}' for t in thick)} mm",
        f"masks:      {'yes' if prepared.ed_mask is not None else 'no'}",
        f"cache key:  {prepared.config_hash[:16] or '-'}",
    ]
    return "\n".join(lines + _skipped_lines(prepared.skipped))
