"""Where a whole study's seconds go: every stage, and inside each training loop, with its share of the matmul peak.

    .venv/bin/python bench/profile_study.py --out /tmp/prof                  # the demo: phantom, configs/demo.yaml
    .venv/bin/python bench/profile_study.py --out /tmp/prof --config cpu     # the phantom with the full CPU config
    ACDC_ROOT=/tmp/acdc_blind .venv/bin/python bench/profile_study.py --out /tmp/prof_acdc [--test DIR]
                                                                             # ACDC with configs/cpu.yaml

Runs the study exactly as `cmrprior demo` (phantom: phantom generation, study, held-out cohort, `diagnose`)
or `cmrprior study` (with ACDC_ROOT or --data) does, with the phase timers of `cmrprior.utils.timing` on, into
a new folder (an existing one is refused: a resumed run would skip the finished pieces and time nothing).

Prints, and writes to OUT/profile.md:

* one row per phase path (stage, then the phases inside it: "grid/cell[tiny,none,full,finetune]/forward"),
  in run order: calls, items, wall seconds, CPU seconds (all threads of the process and its ended worker
  processes: CPU/wall near the thread count means the cores were busy, far under 1 that the CPU was shared or
  the phase waited), share of the whole run's CPU time, the process's peak resident memory when the phase last
  ended; "(other)" rows hold a phase's time that none of its children measured;
* per training loop (phases with forward/backward children): training-step FLOPs (counted once per item with
  `torch.utils.flop_counter.FlopCounterMode` on the loop's own network), GFLOP per CPU second of the forward +
  backward + optimizer phases and its share of the fp32 matmul peak per CPU second (large square matmuls timed
  with `time.process_time` at the start, same thread count), and the same share over the loop's whole CPU time
  (augmentation, evaluation included). Rates per CPU second hold on a shared CPU (a waiting process spends
  wall time, not CPU time); on a quiet machine with one thread they equal the wall rates.

The machine may be shared: the load average is printed at the start and the end, and CPU seconds are given next
to every wall figure. No times are asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cmrprior.experiments.config import StudyConfig, load_config
from cmrprior.utils import timing

LOOP_STEPS = ("forward", "backward", "optimizer")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_matmul_peak(n: int = 1024, reps: int = 8) -> float:
    """GFLOP per CPU second (all threads) of fp32 matrix products, best of `reps`: the peak per CPU second. The
    higher of `n x n` torch.matmul products and a 1x1 convolution of the same shape run by oneDNN (which runs the
    networks' convolutions, and on some CPUs reaches more than torch.matmul's float32 library)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = a.reshape(1, n, 32, n // 32).contiguous(memory_format=torch.channels_last)
    w = b.reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    best = 0.0
    with torch.no_grad():
        for product in (lambda: a @ b, lambda: torch.nn.functional.conv2d(x, w)):
            product()
            for _ in range(reps):
                c0 = time.process_time()
                product()
                best = max(best, 2 * n**3 / max(time.process_time() - c0, 1e-9) / 1e9)
    return best


def _counted(fn) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def loop_flops(kind: str, config: StudyConfig, n_classes: int) -> tuple[float, float]:
    """(training-step FLOPs per item, forward FLOPs per item) of the loop whose phase is `kind`, e.g.
    "simclr[tiny,full,bs64]", "teacher[tiny,segmented]", "cell[tiny,none,full,finetune]"."""
    name, args = kind.split("[", 1)
    parts = args.rstrip("]").split(",")
    size = config.classifier.input_size
    torch.manual_seed(0)
    if name in ("simclr", "vicreg"):  # the same encoder and projection head per view
        from cmrprior.ssl.model import build_model, model_args_of, simclr_loss

        cfg = config.pretrain.for_run(backbone=parts[0], batch_size=2, image_size=size, seed=0)
        model = build_model(model_args_of(cfg)).train()
        x = torch.randn(2, 1, size, size)
        step = _counted(lambda: simclr_loss(model, x, x.flip(-1), temperature=0.1, precision="fp32").backward())
        fwd = _counted(lambda: simclr_loss(model, x, x.flip(-1), temperature=0.1, precision="fp32"))
        return step / 2, fwd / 2  # per image (two views each)
    if name == "teacher":
        from cmrprior.models.registry import create_backbone
        from cmrprior.ssl.teacher import SegmentationPretext

        model = SegmentationPretext(create_backbone(parts[0], in_chans=1, weights=None),
                                    width=config.teacher.decoder_width).train()
        x, y = torch.randn(2, 1, size, size), torch.zeros(2, size, size, dtype=torch.long)
        step = _counted(lambda: torch.nn.functional.cross_entropy(model(x), y).backward())
        fwd = _counted(lambda: model(x))
        return step / 2, fwd / 2
    if name == "cell":
        from cmrprior.classify.model import build_model

        model = build_model(parts[0], "none", n_classes, seed=0).train()  # as `experiments.cell` fine-tunes it
        ed, es = torch.randn(2, size, size), torch.randn(2, size, size)
        step = _counted(lambda: model(ed, es).sum().backward())
        with torch.no_grad():
            fwd = _counted(lambda: model.features(ed, es))
        return step / 2, fwd / 2  # per slice pair
    raise ValueError(kind)


def stage_table(totals: dict[str, timing.PhaseTotal], whole_wall: float, whole_cpu: float) -> list[str]:
    rows = ["| phase | calls | items | wall s | CPU s | CPU/wall | % of run CPU | peak RSS MB at its end |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    children: dict[str, list[str]] = {}
    for path in totals:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        children.setdefault(parent, []).append(path)

    def row(label: str, depth: int, t: timing.PhaseTotal) -> str:
        ratio = t.cpu_s / t.wall_s if t.wall_s > 0 else float("nan")
        return (f"| {'&nbsp;' * 2 * depth}{label} | {t.calls} | {t.items or ''} | {t.wall_s:.1f} | {t.cpu_s:.1f} | "
                f"{ratio:.2f} | {100 * t.cpu_s / whole_cpu:.1f} | {t.peak_rss_mb or float('nan'):.0f} |")

    def walk(parent: str, depth: int) -> None:
        kids = children.get(parent, [])
        for path in kids:
            rows.append(row(path.rsplit("/", 1)[-1], depth, totals[path]))
            walk(path, depth + 1)
        if parent and kids:
            p = totals[parent]
            rest = timing.PhaseTotal(p.wall_s - sum(totals[k].wall_s for k in kids),
                                     p.cpu_s - sum(totals[k].cpu_s for k in kids), p.calls)
            if rest.cpu_s > 0.05 * p.cpu_s and rest.cpu_s > 0.5:
                rows.append(row("(other)", depth, rest))

    walk("", 0)
    top = children.get("", [])
    rest = timing.PhaseTotal(whole_wall - sum(totals[k].wall_s for k in top), whole_cpu - sum(totals[k].cpu_s for k in top), 1)
    rows.append(row("(other: imports, input checks, splits, tables, figure)", 0, rest))
    return rows


def loop_table(totals: dict[str, timing.PhaseTotal], config: StudyConfig, n_classes: int, peak: float) -> list[str]:
    rows = ["| loop | items | steps CPU s | loop CPU s | loop wall s | GFLOP per CPU s (steps) | % of peak (steps) | "
            "% of peak (whole loop) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    loops = sorted({p.rsplit("/", 1)[0] for p in totals if p.endswith("/forward") and "/evaluation" not in p})
    cache: dict[str, tuple[float, float]] = {}
    for loop in loops:
        kind = next((part for part in reversed(loop.split("/")) if "[" in part), None)
        if kind is None:
            continue
        if kind not in cache:
            cache[kind] = loop_flops(kind, config, n_classes)
        step_flops, _ = cache[kind]
        head_only = kind.endswith(",linear]")  # the output layer on cached features: no encoder in the step
        items = totals[f"{loop}/forward"].items
        steps_cpu = sum(totals[f"{loop}/{s}"].cpu_s for s in LOOP_STEPS if f"{loop}/{s}" in totals)
        loop_cpu = totals[loop].cpu_s if loop in totals else steps_cpu
        loop_wall = totals[loop].wall_s if loop in totals else float("nan")
        if head_only:
            rows.append(f"| {loop} (output layer on cached features) | {items} | {steps_cpu:.1f} | {loop_cpu:.1f} | "
                        f"{loop_wall:.1f} | - | - | - |")
            continue
        flops = step_flops * items
        rate = flops / steps_cpu / 1e9 if steps_cpu > 0 else float("nan")
        rows.append(f"| {loop} | {items} | {steps_cpu:.1f} | {loop_cpu:.1f} | {loop_wall:.1f} | {rate:.1f} | "
                    f"{100 * rate / peak:.0f} | {100 * flops / max(loop_cpu, 1e-9) / 1e9 / peak:.0f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a new folder")
    ap.add_argument("--config", default=None, help="config name or YAML (default: demo on the phantom, cpu on --data)")
    ap.add_argument("--data", default=os.environ.get("ACDC_ROOT"), help="a cohort (default: $ACDC_ROOT; none: the "
                                                                       "phantom demo)")
    ap.add_argument("--test", default=None, help="held-out cohort for --data")
    ap.add_argument("--patients", type=int, default=None, help="phantom patients (default: the demo's)")
    ap.add_argument("--test-patients", type=int, default=None, help="held-out phantom patients (default: the demo's)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    args = ap.parse_args()
    from cmrprior.experiments.config import parse_set_options

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} exists and is not empty: a resumed study would time nothing; give a new folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, default="demo" if args.data is None else "cpu",
                         overrides=parse_set_options(args.set))
    print(f"load average at start: {load()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; config {config.name}", flush=True)
    peak = cpu_matmul_peak()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP per CPU second ({torch.get_num_threads()} threads)", flush=True)
    w0, c0 = time.perf_counter(), timing.cpu_seconds()
    with timing.enabled() as totals:
        if args.data is None:
            from cmrprior.experiments.demo import run_demo

            result = run_demo(out, config=config, n_patients=args.patients, test_patients=args.test_patients)
        else:
            from cmrprior.experiments.study import run_study

            result = run_study(args.data, out, config, test_data=args.test)
    wall, cpu = time.perf_counter() - w0, timing.cpu_seconds() - c0
    totals = dict(totals)
    n_classes = _classes(result.run_dir)
    lines = [f"# Profile: {'phantom demo' if args.data is None else args.data}, config {config.name}", "",
             f"whole run: {wall:.0f} s wall, {cpu:.0f} s process CPU; peak RSS "
             f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load average at the end {load()}; "
             f"{torch.get_num_threads()} threads; fp32 matmul peak {peak:.1f} GFLOP per CPU second", "",
             *stage_table(totals, wall, cpu), "", "## Training loops (fp32 FLOPs counted per item on the loop's network)", "",
             *loop_table(totals, config, n_classes, peak)]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "profile.md").write_text(text)


def _classes(run_dir: Path) -> int:
    from cmrprior.runs import RunFolder

    return len(RunFolder(run_dir).info().classes)


if __name__ == "__main__":
    main()
