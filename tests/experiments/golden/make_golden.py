"""Run the tiny phantom study used by the refactor-equivalence test and print table hashes."""
import hashlib, sys, time
from pathlib import Path
from cmrprior.data.phantom import generate_phantom
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.study import run_study

out = Path(sys.argv[1])
t = time.time()
cohort = generate_phantom(out / "cohort", n_patients=18, seed=3, classes=("NOR", "DCM", "HCM"))
cfg = StudyConfig.from_dict({
    "name": "golden",
    "prepare": {"pixel_spacing_mm": 3.0, "size": 64},
    "masks": {"source": "ground_truth"},
    "protocol": {"n_splits": 2, "test_fraction": 0.34, "seed": 0, "cv_folds": 2, "val_fraction": 0.3},
    "pretrain": {"epochs": 1, "batch_sizes": [16], "patience": 1, "precision": "fp32"},
    "classifier": {"backbones": ["tiny"], "input_size": 32, "lrs": [0.01], "max_epochs": 3, "batch_size": 16},
    "evaluation": {"n_boot": 50},
})
run_study(cohort, out / "run", cfg, report=False)
for p in sorted((out / "run" / "tables").glob("*.json")):
    print(p.name, hashlib.sha256(p.read_bytes()).hexdigest()[:16])
print("wall", time.time() - t)
