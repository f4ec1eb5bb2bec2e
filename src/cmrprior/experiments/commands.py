"""CLI: `cmrprior study` and `cmrprior demo`.

Progress lines go to stderr (`--quiet`: warnings and errors only, see `cmrprior.cli`) and always to the study
run folder's `log.txt` (`RunFolder.log`; for the demo, the study's folder `OUT/study`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import time

from cmrprior.runs import RunFolder
from cmrprior.utils.argtypes import at_least
from cmrprior.utils.logs import log_file
from cmrprior.utils.runfolder_checks import check_out_dir


def _print_result(res, t0: float, command: str) -> int:
    """Where the outputs are; the exit code: 1 with a line on stderr when cells failed (`StudyResult.problem`)."""
    problem = res.problem()
    print(f"study {'finished' if problem is None else 'ended'} in {time.time() - t0:.0f} s: {res.run_dir}")
    for name, path in sorted(res.tables.items()):
        print(f"  {name}: {path}")
    if res.figure is not None:
        print(f"  figure 1: {res.figure}")
    if res.report is not None:
        print(f"  report: {res.report}")
    if problem is not None:
        print(f"cmrprior {command}: error: {problem}", file=sys.stderr)
        return 1
    return 0


def _set_threads(threads: int | None) -> None:
    """`--threads`: torch's intra-op threads (torch is imported here, not when the parser is built)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _study(args: argparse.Namespace) -> int:
    if args.status is not None:
        return _status(args.status)
    from cmrprior.errors import ConfigError
    from cmrprior.experiments.config import load_config, parse_set_options

    if args.data is None or args.out is None:
        raise ConfigError("study needs --data and --out (or --status RUN to see a run's pieces)")
    _set_threads(args.threads)
    config = load_config(args.config, overrides={**_executor_options(args), **parse_set_options(args.set)})
    t0 = time.time()
    extra = {"report": False} if args.no_report else {}
    with log_file(RunFolder(check_out_dir(args.out, [args.data, args.test])).log):
        if config.executor.by_pieces:
            from cmrprior.experiments.executors import PiecesFailed, run_study_pieces

            try:
                res = run_study_pieces(args.data, args.out, config, test_data=args.test, threads=args.threads, **extra)
            except PiecesFailed as exc:  # as when cells fail in one process: exit code 1, a rerun resumes
                print(f"cmrprior {args.command}: error: {exc}", file=sys.stderr)
                return 1
        else:
            from cmrprior.experiments.study import run_study

            res = run_study(args.data, args.out, config, test_data=args.test, **extra)
    return _print_result(res, t0, args.command)


def _executor_options(args: argparse.Namespace) -> dict:
    """The executor options of `cmrprior study` as config overrides (`--set executor...` gives the rest)."""
    pairs = (("executor.kind", args.executor), ("executor.workers", args.workers),
             ("executor.slurm.partition", args.slurm_partition), ("executor.slurm.max_running", args.slurm_max_running))
    return {k: v for k, v in pairs if v is not None}


def _status(run_dir: str) -> int:
    """`cmrprior study --status RUN`: one line per piece (state, id, details, log); 1 when one failed."""
    from collections import Counter

    from cmrprior.experiments.pieces import study_status

    rows, driver = study_status(run_dir)
    counts = Counter(r.state for r in rows)
    who = f"a cmrprior process is working in it (pid {driver})" if driver else "no cmrprior process is working in it"
    print(f"{run_dir}: {len(rows)} pieces: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; {who}")
    for r in rows:
        extra = "  ".join(x for x in (r.detail, f"log: {r.log}" if r.log else "") if x)
        print(f"  {r.state:<8} {r.piece.id}" + (f"  {extra}" if extra else ""))
    return 1 if counts.get("failed") or counts.get("stopped") else 0


def _demo(args: argparse.Namespace) -> int:
    from cmrprior.experiments.config import load_config, parse_set_options
    from cmrprior.experiments.demo import answer_lines, run_demo, study_dir

    _set_threads(args.threads)
    config = load_config(args.config, default="demo", overrides=parse_set_options(args.set))
    t0 = time.time()
    check_out_dir(args.out, [args.data])
    with log_file(RunFolder(study_dir(args.out)).log):
        res = run_demo(args.out, data=args.data, config=config, n_patients=args.patients, seed=args.seed,
                       test_patients=args.test_patients)
    code = _print_result(res, t0, args.command)
    print("\n".join(answer_lines(res.run_dir)))
    page = Path(args.out) / "diagnose" / "index.html"
    if args.data is None and page.exists():
        print(f"  new patients diagnosed with the exported Anatomy bundle: {page}")
    return code


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting of the config by dotted key, value as YAML (repeatable), "
                             "e.g. --set protocol.n_splits=1 --set classifier.backbones=[vgg16]")


def _anatomy_bundle(args: argparse.Namespace) -> int:
    from cmrprior.experiments.anatomy_bundle import train_anatomy_bundle
    from cmrprior.experiments.config import load_config, parse_set_options

    config = load_config(args.config, overrides={"anatomy.perturb": [], **parse_set_options(args.set)})
    path = train_anatomy_bundle(args.data, args.out, config, repeats=args.repeats, folds=args.folds, seed=args.seed)
    print(f"anatomy bundle: {path} (estimate: {Path(args.out) / 'estimate.json'}); apply it with "
          f"`cmrprior diagnose --model {path} --data NEW --out OUT`")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="run the whole study (prepare, segment, pre-train, classify, evaluate)")
    p.add_argument("--data", default=None, help="ACDC-layout folder or manifest CSV (required to run)")
    p.add_argument("--out", default=None, help="run folder (a rerun resumes it; required to run)")
    p.add_argument("--config", default=None, help="YAML file, or a built-in name: cpu (default), paper")
    p.add_argument("--test", default=None, help="separate held-out cohort (folder or manifest) to score on")
    p.add_argument("--no-report", action="store_true", help="stop after the tables and bundles: no saliency, no HTML "
                                                            "report (a later run without it adds them)")
    p.add_argument("--status", default=None, metavar="RUN",
                   help="list the pieces of the study in run folder RUN (done, running, failed, ...) with their logs, "
                        "and exit")
    p.add_argument("--executor", default=None, choices=("local", "slurm"),
                   help="where the pieces run: this machine (default), or SLURM jobs (needs cmrprior[cluster])")
    p.add_argument("--workers", type=at_least(1), default=None,
                   help="local: pieces run at once, one process each (default 1: the whole study in this process)")
    p.add_argument("--slurm-partition", default=None, metavar="P", help="SLURM partition of the jobs")
    p.add_argument("--slurm-max-running", type=at_least(1), default=None, metavar="N",
                   help="at most N jobs of an array at once (default 32; the rest: --set executor.slurm....)")
    p.add_argument("--threads", type=at_least(1), default=None,
                   help="torch threads (default: torch's choice, one per core; with --workers N, in each worker: "
                        "cores / N); a different count can change the last digits of results")
    _add_set(p)
    p.set_defaults(func=_study)
    d = subparsers.add_parser("demo", help="every stage of the study in minutes, on a synthetic phantom cohort (or "
                                           "--data), with configs/demo.yaml; --config cpu for the full CPU study")
    d.add_argument("--out", required=True, help="run folder (a rerun resumes it)")
    d.add_argument("--data", default=None, help="use this cohort instead of generating a phantom")
    d.add_argument("--config", default=None, help="YAML file or built-in name: demo (default, minutes), cpu (the "
                                                  "CPU study, about half an hour on 2 cores), paper")
    d.add_argument("--patients", type=at_least(1), default=None,
                   help="phantom patients of the study (default: 40 with the demo config, else 60)")
    d.add_argument("--test-patients", type=at_least(0), default=None,
                   help="new phantom patients of the held-out cohort, scored once (default: 10 with the demo config, "
                        "else 20; 0: none)")
    d.add_argument("--seed", type=int, default=0, help="seed of the phantom cohort (default 0)")
    d.add_argument("--threads", type=at_least(1), default=1,
                   help="torch threads (default 1: on a shared CPU, two threads cost the demo's small networks "
                        "several times the CPU time of one; bench/thread_cost.py measures it)")
    _add_set(d)
    d.set_defaults(func=_demo)
    a = subparsers.add_parser(
        "anatomy-bundle", help="train the Anatomy model on a whole labelled cohort, estimate it by nested CV and "
                               "write it as a bundle for `cmrprior diagnose` (how the shipped acdc bundle is made)")
    a.add_argument("--data", required=True, help="labelled ACDC-layout folder or manifest CSV")
    a.add_argument("--out", required=True, help="run folder: measures.csv, estimate.json, cv_predictions.csv, bundle/")
    a.add_argument("--config", default=None, help="YAML file or built-in name whose masks and anatomy settings are "
                                                  "used (default: cpu)")
    a.add_argument("--repeats", type=int, default=5, help="repeats of the outer k-fold CV (default 5)")
    a.add_argument("--folds", type=int, default=5, help="outer folds (default 5)")
    a.add_argument("--seed", type=int, default=0, help="seed of the outer folds (default 0)")
    _add_set(a)
    a.set_defaults(func=_anatomy_bundle)
