"""The tiny phantom study whose tables are the golden files of this folder (see README.md).

    .venv/bin/python tests/experiments/golden/make_golden.py OUT    # prints a hash per table
"""

import hashlib
import sys
import time
from pathlib import Path

from cmrprior.data.phantom import generate_phantom
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.study import run_study

CONFIG = {
    "name": "golden",
    "prepare": {"pixel_spacing_mm": 3.0, "size": 64},
    "masks": {"source": "ground_truth"},
    "protocol": {"n_splits": 2, "test_fraction": 0.34, "seed": 0, "cv_folds": 2, "val_fraction": 0.3},
    "pretrain": {"epochs": 1, "batch_sizes": [16], "patience": 1, "precision": "fp32"},
    "classifier": {"backbones": ["tiny"], "input_size": 32, "lrs": [0.01], "max_epochs": 3, "batch_size": 16},
    "evaluation": {"n_boot": 50},
}


def run_golden_study(out: Path) -> Path:
    """Generate the phantom and run the study into `out`; returns the tables folder."""
    cohort = generate_phantom(out / "cohort", n_patients=18, seed=3, classes=("NOR", "DCM", "HCM"))
    run_study(cohort, out / "run", StudyConfig.from_dict(CONFIG), report=False)
    return out / "run" / "tables"


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # as the equivalence test runs it (convolution sums depend on the thread split)
    t = time.time()
    tables = run_golden_study(Path(sys.argv[1]))
    for p in sorted(tables.glob("*.json")):
        print(p.name, hashlib.sha256(p.read_bytes()).hexdigest()[:16])
    print("wall", time.time() - t)
