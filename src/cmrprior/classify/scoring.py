"""A trained diagnosis model's per-patient probabilities: how a study cell scores its test patients and how a
model bundle (`cmrprior.bundle.image`) scores a new patient, one function for both so that they agree.

* slice models (`pooling: slices`): the mean over a patient's slice pairs of the slice probabilities;
* patient-pooled models (`pooling: patient`): the output layer on the patient's pooled slice features
  (`cmrprior.classify.pooling.patient_descriptors`).

`linear` says how the cell computed the slice probabilities: frozen features first, then the output layer
(`extract_features` + `head_proba`, the linear mode's fast path), or the whole forward pass (`predict_proba`,
the fine-tuned mode). The two agree up to float rounding; each cell is scored again the way it was scored.
"""

from __future__ import annotations

import numpy as np

from cmrprior.classify.data import SliceSet
from cmrprior.classify.model import DiagnosisModel, PooledDiagnosisModel
from cmrprior.classify.pooling import patient_descriptors
from cmrprior.classify.train import extract_features, head_proba, predict_proba
from cmrprior.evaluate.metrics import patient_probabilities


def score_patients(model: DiagnosisModel, data: SliceSet, *, linear: bool, batch_size: int = 128) -> np.ndarray:
    """`(P, K)` float64 class probabilities of the `P = data.n_patients` patients of `data` (module docstring)."""
    if model.pooling == PooledDiagnosisModel.pooling:
        x = patient_descriptors(extract_features(model, data, batch_size=batch_size), data.patient_index,
                                data.n_patients, data.positions, model.position_bins)
        return patient_probabilities(head_proba(model.head, x), np.arange(data.n_patients), data.n_patients)
    if linear:
        slices = head_proba(model.head, extract_features(model, data, batch_size=batch_size))
    else:
        slices = predict_proba(model, data, batch_size=batch_size)
    return patient_probabilities(slices, data.patient_index, data.n_patients)
