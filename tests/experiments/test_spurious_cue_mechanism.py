"""The phantom's spurious cue survives preparation of full images and is visible to a pooled model: fixed
oriented filters, rectified and averaged over the whole image (what a global-average-pooled CNN can
compute), then a logistic regression, separate the classes with the cue and not without it (same cohort,
same seed). The slow study-level check is `test_spurious_cue.py`."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from cmrprior.data.phantom import generate_phantom
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.data.prepare import PrepareConfig, prepare_cohort
from cmrprior.io.cohort import open_cohort

CLASSES = ("NOR", "DCM", "HCM")
PHANTOM = PhantomConfig(n_slices=(3, 3), cue_probability=1.0)


def _pooled_features(images: np.ndarray) -> list[float]:
    """Mean over `(N, H, W)` images of |second differences| along x, y and the mixed xy difference."""
    dxx = images[:, :, 2:] - 2 * images[:, :, 1:-1] + images[:, :, :-2]
    dyy = images[:, 2:] - 2 * images[:, 1:-1] + images[:, :-2]
    dxy = images[:, 1:, 1:] - images[:, 1:, :-1] - images[:, :-1, 1:] + images[:, :-1, :-1]
    return [float(np.abs(d).mean()) for d in (dxx, dyy, dxy)]


def _prepared(tmp_path, cue: bool):
    cohort = generate_phantom(tmp_path / f"cue{cue}", n_patients=12, seed=5, classes=CLASSES, spurious_cue=cue,
                              config=PHANTOM)
    return prepare_cohort(open_cohort(cohort), PrepareConfig(size=64, pixel_spacing_mm=2.0), progress=False)


def test_cue_survives_preparation_and_a_pooled_model_separates_classes_only_with_it(tmp_path):
    auc, marker = {}, {}
    for cue in (True, False):
        prepared = _prepared(tmp_path, cue)
        y = np.array([CLASSES.index(p.label) for p in prepared.patients])
        x = np.array([_pooled_features(np.concatenate([prepared.ed_full[prepared.patient_index == i],
                                                       prepared.es_full[prepared.patient_index == i]]))
                      for i in range(len(y))])
        x = (x - x.mean(axis=0)) / x.std(axis=0)
        p = cross_val_predict(LogisticRegression(C=10.0, max_iter=5000), x, y, method="predict_proba",
                              cv=StratifiedKFold(4, shuffle=True, random_state=0))
        auc[cue] = roc_auc_score(y, p, multi_class="ovr")
        marker[cue] = prepared
    print("pooled-feature macro AUC (cue -> AUC):", auc)
    # the marker reaches every prepared full image, below the clip (its stripes blur into a mid grey at 64 px)
    on, off = marker[True], marker[False]
    diff = np.abs(on.ed_full - off.ed_full)
    assert (diff.max(axis=(1, 2)) > 0.2).all()
    bright = diff > 0.2
    level = np.array([np.median(on.ed_full[on.patient_index == i][bright[on.patient_index == i]])
                      for i in range(len(on.patients))])
    print("marker level:", np.round(level, 3), "change below the band: max", diff[:, 16:].max())
    assert (level > 0.2).all() and (level < 0.9).all()
    # the window moves a little where the marker displaces bright tissue, never by much
    assert diff[:, 16:].max() < 0.15
    assert auc[True] >= 0.9 and auc[False] <= 0.75
