"""Coverage of the table intervals and false-positive rate of the paired tests when the model is RETRAINED on
every split (training variance included), on synthetic cohorts of ACDC size and larger.

    PYTHONPATH=src nice -n 10 .venv/bin/python bench/coverage_retrain.py [--reps 400] [--sizes 20 60]
        [--noise-features 16 --c 10]       (a high-variance learner: more noise features, weak regularisation)

Population: 5 classes, 8 Gaussian features with unit variance (4 carry the class, 4 are noise); class means
fixed by `--separation` (the default gives a true macro AUC near 0.85-0.9, about the study's best cells).
Model ("training procedure"): standardisation + multinomial logistic regression (C = 1) fitted on the
training patients with seeded Gaussian jitter of their features (a data augmentation), so two seeds give two
different models of the same expected quality (the null of the paired tests).

Per simulated cohort (`n_per_class` patients per class): the study's outer splits
(`cmrprior.data.splits.protocol_splits`, 5 stratified 70/30 splits, seed = cohort index), model A (seed 1)
and model B (seed 2) retrained on each split's training part and scored on its test part. Then the intervals
for A (the tables' corrected resampled t; the plain t and the pooled patient bootstrap the tables printed
before) and the paired tests of A vs B (the tables' `splits_paired_t`; the patient paired bootstrap, the
fully corrected paired t and DeLong per split that they printed before, and the plain paired t).

Truth: the expected macro AUC of the training procedure on a training part of the same size (70 % of the
cohort, stratified), estimated by training on `--truth-cohorts` fresh training cohorts and scoring each on
a large independent test set (`--truth-test` patients per class). An interval covers when it holds it. Also
printed: coverage of the AUC of the procedure trained on the whole cohort (the exported model's).
Prints coverage (nominal 95 %) and false-positive rates (nominal 5 %), each with its Monte-Carlo standard
error; prints figures, asserts nothing (tests/evaluate/test_coverage_retrain.py runs a reduced version).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from cmrprior.data.splits import ProtocolConfig, protocol_splits
from cmrprior.evaluate.ci import pooled_bootstrap_draws
from cmrprior.utils.intervals import t_interval
from cmrprior.evaluate.compare import delong_test, paired_draws, paired_t, splits_paired_t
from cmrprior.evaluate.metrics import macro_auc

N_CLASSES = 5
N_INFORMATIVE = 4
N_NOISE = 4
JITTER = 0.5
LEVEL = 0.95


@dataclass(frozen=True)
class Population:
    """Class means `(K, F)` of unit-variance Gaussian features."""

    means: np.ndarray

    @classmethod
    def make(cls, separation: float, n_noise: int = N_NOISE, seed: int = 12345) -> "Population":
        rng = np.random.default_rng(seed)
        means = np.zeros((N_CLASSES, N_INFORMATIVE + n_noise))
        means[:, :N_INFORMATIVE] = separation * rng.normal(size=(N_CLASSES, N_INFORMATIVE))
        return cls(means)

    def draw(self, n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Features `(K n, F)` and labels `(K n,)` of n patients per class."""
        y = np.repeat(np.arange(N_CLASSES), n_per_class)
        return self.means[y] + rng.normal(size=(y.size, self.means.shape[1])), y


def train(x: np.ndarray, y: np.ndarray, seed: int, c: float = 1.0):
    """The training procedure: seeded feature jitter (augmentation, 2 copies) + standardise + logistic
    regression; returns a function features -> probabilities `(P, K)`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    xa = np.concatenate([x + JITTER * rng.normal(size=x.shape) for _ in range(2)])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    model.fit(xa, np.concatenate([y, y]))
    return model.predict_proba


def true_auc(pop: Population, n_train_per_class: int, *, cohorts: int, test_per_class: int, c: float = 1.0,
             seed: int = 99) -> tuple[float, float]:
    """(mean, Monte-Carlo SE) of the population macro AUC of the procedure trained on fresh training parts."""
    rng = np.random.default_rng(seed)
    xt, yt = pop.draw(test_per_class, rng)
    aucs = []
    for _ in range(cohorts):
        x, y = pop.draw(n_train_per_class, rng)
        aucs.append(macro_auc(yt, train(x, y, seed=1, c=c)(xt)))
    a = np.asarray(aucs)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


@dataclass
class Replicate:
    """One simulated cohort: each interval's (low, high) for A, each paired test's p-values (A vs B)."""

    intervals: dict[str, tuple[float, float]]
    p_values: dict[str, list[float]]


# today's table intervals and tests first, then the ones the tables use now
INTERVALS = ("corrected_t", "plain_t", "patient_bootstrap")
TESTS = ("patient_paired_bootstrap", "corrected_paired_t", "delong_per_split", "plain_paired_t", "splits_paired_t")


@dataclass(frozen=True)
class Scenario:
    """The population and the learner: `n_noise` uninformative features, logistic regression's C."""

    separation: float = 0.9
    n_noise: int = N_NOISE
    c: float = 1.0

    def population(self) -> Population:
        return Population.make(self.separation, n_noise=self.n_noise)


def replicate(pop: Population, scenario: Scenario, n_per_class: int, rep: int, *, n_boot: int,
              protocol: ProtocolConfig) -> Replicate:
    rng = np.random.default_rng(10_000 + rep)
    x, y = pop.draw(n_per_class, rng)
    ids = [f"p{i:04d}" for i in range(y.size)]
    index = {p: i for i, p in enumerate(ids)}
    proto = dataclasses.replace(protocol, seed=rep)
    per_a, per_pair, aucs = [], [], []
    for s in protocol_splits(ids, y.tolist(), proto):
        tr = np.array([index[p] for p in s.train])
        te = np.array([index[p] for p in s.test])
        pa = train(x[tr], y[tr], seed=1, c=scenario.c)(x[te])
        pb = train(x[tr], y[tr], seed=2, c=scenario.c)(x[te])
        per_a.append((list(s.test), y[te], pa))
        per_pair.append((list(s.test), y[te], pa, pb))
        aucs.append(macro_auc(y[te], pa))
    ratio = proto.test_train_ratio
    # one set of draws per cohort, the seed the library functions take: `patient_bootstrap_ci(seed=rep)` and
    # `patient_paired_bootstrap(seed=rep)` draw exactly these (their percentile / p are recomputed here, as
    # the library computes them, so the bootstrap runs once instead of twice)
    draws = pooled_bootstrap_draws(per_a, n_boot=n_boot, seed=rep)
    boot_mean = np.nanmean(draws, axis=0)
    intervals = {"corrected_t": t_interval(aucs, ratio, LEVEL)[1:],
                 "plain_t": t_interval(aucs, 0.0, LEVEL)[1:],
                 "patient_bootstrap": tuple(np.nanquantile(boot_mean, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))}
    diffs, diff_draws = paired_draws(per_pair, n_boot=n_boot, seed=rep)
    d_mean = np.nanmean(diff_draws, axis=0)
    p_values = {"patient_paired_bootstrap": [min(1.0, 2 * min(np.mean(d_mean <= 0), np.mean(d_mean >= 0)))],
                "corrected_paired_t": [paired_t(list(diffs), test_train_ratio=ratio).p_value],
                "delong_per_split": [delong_test(yy, a, b).p_value for _, yy, a, b in per_pair],
                "plain_paired_t": [paired_t(list(diffs)).p_value],
                "splits_paired_t": [splits_paired_t(list(diffs), ratio).p_value]}
    return Replicate(intervals, p_values)


def simulate(n_per_class: int, reps: int, *, scenario: Scenario = Scenario(), n_boot: int = 500,
             truth_cohorts: int = 400, truth_test: int = 2000, protocol: ProtocolConfig | None = None) -> dict:
    """{"truth", "truth_se", "coverage": {interval: share}, "fpr": {test: share}, ...} for one cohort size."""
    protocol = protocol or ProtocolConfig()
    pop = scenario.population()
    n_train = n_per_class - int(math.ceil(protocol.test_fraction * n_per_class - 1e-9))
    truth, truth_se = true_auc(pop, n_train, cohorts=truth_cohorts, test_per_class=truth_test, c=scenario.c)
    # secondary: the model trained on the whole cohort (what the study exports), for which the splits'
    # mean is pessimistic (fewer training patients)
    truth_full, _ = true_auc(pop, n_per_class, cohorts=truth_cohorts, test_per_class=truth_test, c=scenario.c)
    hits = {k: 0 for k in INTERVALS}
    hits_full = {k: 0 for k in INTERVALS}
    rejections = {k: [0, 0] for k in TESTS}
    for rep in range(reps):
        r = replicate(pop, scenario, n_per_class, rep, n_boot=n_boot, protocol=protocol)
        for k, (lo, hi) in r.intervals.items():
            hits[k] += bool(lo <= truth <= hi)
            hits_full[k] += bool(lo <= truth_full <= hi)
        for k, ps in r.p_values.items():
            rejections[k][0] += sum(p < 0.05 for p in ps)
            rejections[k][1] += len(ps)
    return {"truth": truth, "truth_se": truth_se, "truth_full": truth_full, "reps": reps, "n_per_class": n_per_class,
            "coverage": {k: v / reps for k, v in hits.items()},
            "coverage_full": {k: v / reps for k, v in hits_full.items()},
            "fpr": {k: a / max(n, 1) for k, (a, n) in rejections.items()},
            "fpr_n": {k: n for k, (_, n) in rejections.items()}}


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="simulated cohorts per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 60], help="patients per class (5 classes)")
    ap.add_argument("--separation", type=float, default=0.9, help="scale of the class means")
    ap.add_argument("--noise-features", type=int, default=N_NOISE, help="uninformative features")
    ap.add_argument("--c", type=float, default=1.0, help="inverse regularisation of the logistic regression")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--truth-cohorts", type=int, default=400)
    ap.add_argument("--truth-test", type=int, default=2000, help="test patients per class for the truth")
    args = ap.parse_args()
    results = []
    for n in args.sizes:
        t0 = time.time()
        scenario = Scenario(args.separation, args.noise_features, args.c)
        res = simulate(n, args.reps, scenario=scenario, n_boot=args.n_boot,
                       truth_cohorts=args.truth_cohorts, truth_test=args.truth_test)
        results.append(res)
        print(f"{N_CLASSES * n} patients: true expected AUC {res['truth']:.4f} (MC SE {res['truth_se']:.4f}; "
              f"trained on the whole cohort: {res['truth_full']:.4f}), {args.reps} cohorts, {time.time() - t0:.0f} s",
              flush=True)
        for k in INTERVALS:
            print(f"  coverage {k}: {res['coverage'][k]:.3f} (whole-cohort model: {res['coverage_full'][k]:.3f})")
        for k in TESTS:
            print(f"  false positives {k}: {res['fpr'][k]:.3f}", flush=True)
    _table("Coverage of the true expected AUC, nominal 95 % (MC SE)", "interval", INTERVALS, results,
           lambda r, k: f"{r['coverage'][k]:.3f} ({_se(r['coverage'][k], r['reps']):.3f})")
    _table("Coverage of the AUC of the model trained on the whole cohort (secondary; MC SE as above)", "interval",
           INTERVALS, results, lambda r, k: f"{r['coverage_full'][k]:.3f}")
    _table("False-positive rate at 5 %, two copies of the same training procedure (MC SE)", "test", TESTS, results,
           lambda r, k: f"{r['fpr'][k]:.3f} ({_se(r['fpr'][k], r['fpr_n'][k]):.3f})")


def _table(title: str, what: str, keys, results: list[dict], cell) -> None:
    """One Markdown table: a row per key, a column per cohort size, `cell(result, key)` in each."""
    print(f"\n{title}")
    print(f"| {what} | " + " | ".join(f"{N_CLASSES * r['n_per_class']} patients" for r in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for k in keys:
        print(f"| {k} | " + " | ".join(cell(r, k) for r in results) + " |")

if __name__ == "__main__":
    main()
