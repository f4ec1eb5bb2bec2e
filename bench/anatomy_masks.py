"""The Anatomy model on the same splits with two kinds of measures: those a study run wrote (its masks, e.g.
out-of-sample segmenter masks) and those of the expert masks (the oracle). The gap says how much of the
Anatomy model's error comes from the masks rather than from the classifier.

    python bench/anatomy_masks.py RUN DATA

RUN: a finished study folder (its `anatomy/measures.csv` and `splits.json`); DATA: the same cohort with its
expert masks (`_gt` files). Prints macro AUC and accuracy per split and their means for both.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cmrprior.anatomy.measure import measure_cohort
from cmrprior.anatomy.measures_csv import read_measures_csv
from cmrprior.classify.anatomy import fit_anatomy
from cmrprior.classify.config import AnatomyConfig
from cmrprior.evaluate.metrics import macro_auc
from cmrprior.experiments.config import load_config
from cmrprior.io.cohort import open_cohort
from cmrprior.io.load import load_patient
from cmrprior.runs import RunFolder
from cmrprior.utils.seeding import derive_seed


def _score(values: dict[str, dict], labels: dict[str, str], run: RunFolder, config: AnatomyConfig, cv_folds: int,
           classes: list[str]) -> list[tuple[float, float]]:
    lut = {c: i for i, c in enumerate(classes)}
    out = []
    for split in run.splits():
        model = fit_anatomy([values[p] for p in split.train], [lut[labels[p]] for p in split.train],
                            n_classes=len(classes), config=config, cv_folds=cv_folds,
                            seed=derive_seed(split.seed, "anatomy"), train_ids=split.train)
        y = np.array([lut[labels[p]] for p in split.test])
        p = model.predict_proba([values[q] for q in split.test])
        out.append((macro_auc(y, p), float(np.mean(p.argmax(1) == y))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("data")
    args = ap.parse_args()
    run = RunFolder(args.run)
    config = load_config(run.root / "config.yaml")
    classes = list(run.info().classes)
    study = {r.patient_id: r for r in read_measures_csv(run.anatomy_measures_csvs()[0])}
    t0 = time.time()
    wanted = set(study)
    expert = {r["patient_id"]: {k: v for k, v in r.items() if k not in ("patient_id", "label")}
              for r in measure_cohort(load_patient(rec) for rec in open_cohort(args.data).patients
                                      if rec.patient_id in wanted)}
    print(f"measured {len(expert)} patients' expert masks in {time.time() - t0:.1f} s")
    labels = {p: r.label for p, r in study.items()}
    for name, values in (("run's masks", {p: r.values for p, r in study.items()}), ("expert masks", expert)):
        rows = _score(values, labels, run, config.anatomy, config.protocol.cv_folds, classes)
        per = ", ".join(f"{a:.3f}/{c:.2f}" for a, c in rows)
        print(f"{name:13s} macro AUC {np.mean([a for a, _ in rows]):.3f}, accuracy {np.mean([c for _, c in rows]):.3f}"
              f"  (per split AUC/acc: {per})")


if __name__ == "__main__":
    main()
