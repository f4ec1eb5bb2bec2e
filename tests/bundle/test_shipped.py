"""The shipped ACDC bundle: it loads (every file checked), its segmenter is the shipped set, the package's model
card names its sha256, and it predicts from its own training ranges without refusing them."""

import re
from pathlib import Path

import numpy as np

from cmrprior.bundle import load_bundle
from cmrprior.bundle.format import bundle_sha256
from cmrprior.bundle.model import SHIPPED_DIR
from cmrprior.bundle.segmenter import shipped_set

CARD = Path(__file__).resolve().parents[2] / "src" / "cmrprior" / "weights" / "MODEL_CARD.md"


def test_shipped_bundle_loads_and_its_card_names_its_sha256():
    b = load_bundle("acdc")
    assert b.root == SHIPPED_DIR / "acdc" and b.kind == "anatomy"
    assert b.classes == ("DCM", "HCM", "MINF", "NOR", "RV")
    assert b.segmenter_model() == shipped_set()
    assert b.domain.n_patients == 99 and sum(b.domain.class_counts.values()) == 99
    card = CARD.read_text()
    section = card[card.index("## Shipped ACDC diagnosis bundle"):]
    assert re.search(rf"sha256 `{bundle_sha256(b.root)}`", section), "MODEL_CARD.md names another bundle"
    est = b.estimate
    assert f"{est['macro_auc']:.3f}" in section and f"{est['accuracy']:.3f}" in section
    assert 0 <= est["macro_auc_interval"][0] <= est["macro_auc"] <= est["macro_auc_interval"][1] <= 1


def test_shipped_bundle_judges_its_training_medians():
    b = load_bundle("acdc")
    values = dict(zip(b.features, b.medians))
    assert not b.outside_measures(values) and not b.missing_measures(values)
    p = b.predict_proba([values])
    assert p.shape == (1, 5) and np.isclose(p.sum(), 1.0)
