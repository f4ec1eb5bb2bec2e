import numpy as np
import pytest

from cmrprior.bundle.export import export_anatomy_bundle
from cmrprior.bundle.spec import Acquisition
from cmrprior.classify.anatomy import fit_anatomy
from cmrprior.classify.config import AnatomyConfig

CLASSES = ("NOR", "DCM", "HCM")


def synthetic_measures(n: int = 30, seed: int = 0):
    """Measures of `n` patients whose LV EDV and wall thickness follow their class (values, labels)."""
    rng = np.random.default_rng(seed)
    labels = [CLASSES[i % 3] for i in range(n)]
    values = []
    for lab in labels:
        edv = {"NOR": 140, "DCM": 260, "HCM": 120}[lab] * rng.uniform(0.85, 1.15)
        wall = {"NOR": 8, "DCM": 7, "HCM": 15}[lab] * rng.uniform(0.85, 1.15)
        values.append({"lv_edv_ml": edv, "lvef": rng.uniform(35, 70), "max_wall_thickness_mm": wall})
    return values, labels


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """A bundle of an anatomy model fitted on synthetic measures (the shipped segmenter set by reference)."""
    values, labels = synthetic_measures()
    model = fit_anatomy(values, [CLASSES.index(x) for x in labels], n_classes=3,
                        config=AnatomyConfig(cs=(1.0,), n_trees=10, depths=(3,)), cv_folds=3, seed=0)
    acq = [Acquisition(1.4, 8.0, 300.0)] * len(values)
    path = tmp_path_factory.mktemp("bundles") / "small"
    export_anatomy_bundle(path, model, name="small", classes=CLASSES, train_values=values, train_labels=labels,
                          acquisitions=acq, segmenter=None, estimate={"macro_auc": 0.9}, made_by="test")
    return path, model, values
