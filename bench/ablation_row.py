"""One line per study run folder for the README's ablation of `configs/cpu.yaml`: what each row is judged on.

    PYTHONPATH=src .venv/bin/python bench/ablation_row.py RUN [RUN ...]

Per run (read from its tables, written by `cmrprior study`): the best image-only cell on segmented and on full
images (mean macro AUC over the splits, from `tables/metrics.json`; the best of the grid, chosen on the test
results, as the README's tables give it), the same without the Seg-teacher init, the configuration chosen by
each split's inner CV (`tables/selection.json`: over all image cells, and per kind of images), and the compute
the run's results cost: the summed `wall_s` of its pre-trainings (SimCLR and the Seg-teacher, from their
`done.json`, whether this run trained them or reused them) and of its cells. A run that reused another run's
pre-training therefore still reports what the whole study would cost. Figures are printed, never asserted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEACHER = "seg_teacher"
SELECTED = "by_inner_cv"


def _best(rows: list[dict], images: str, without: str | None = None) -> tuple[str, float] | None:
    cands = [(r["init"], r["macro_auc"]) for r in rows if r["images"] == images and r.get("macro_auc") is not None
             and r["init"] != SELECTED and r["init"] != without]
    return max(cands, key=lambda c: c[1]) if cands else None


def _wall(paths: list[Path]) -> float:
    return sum(float(json.loads(p.read_text()).get("wall_s") or 0.0) for p in paths)


def row(run: Path) -> dict:
    metrics = json.loads((run / "tables/metrics.json").read_text())
    selection = {r["images"]: r for r in json.loads((run / "tables/selection.json").read_text())["rows"]}
    out = {"run": str(run), "n_splits": len(json.loads((run / "splits.json").read_text()))}
    for images in ("segmented", "full"):
        out[f"best_{images}"] = _best(metrics, images)
        out[f"best_{images}_no_teacher"] = _best(metrics, images, without=TEACHER)
    for images, r in selection.items():
        out[f"inner_cv_{images}"] = (r["macro_auc"], r.get("t_low"), r.get("t_high"), r["chosen_counts"])
    out["pretrain_wall_s"] = _wall(sorted(run.glob("splits/*/pretrain/*/*/*/done.json")))
    out["cells_wall_s"] = _wall(sorted(run.glob("splits/*/cells/*/*/result.json")))
    return out


def main(argv: list[str]) -> int:
    for arg in argv:
        r = row(Path(arg))
        f = lambda b: "-" if b is None else f"{b[1]:.3f} ({b[0]})"  # noqa: E731
        print(f"{r['run']}  ({r['n_splits']} splits)")
        print(f"  best cell, segmented images: {f(r['best_segmented'])}; full images: {f(r['best_full'])}")
        print(f"  without the Seg-teacher: segmented {f(r['best_segmented_no_teacher'])}; full {f(r['best_full_no_teacher'])}")
        for images in ("any", "segmented", "full"):
            if f"inner_cv_{images}" in r:
                auc, lo, hi, counts = r[f"inner_cv_{images}"]
                chosen = ", ".join(f"{k} ({n})" for k, n in counts)
                print(f"  chosen by inner CV ({images}): {auc:.3f} [{lo:.3f}, {hi:.3f}]  {chosen}")
        print(f"  summed wall_s: pre-trainings {r['pretrain_wall_s']:.0f} s, cells {r['cells_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
