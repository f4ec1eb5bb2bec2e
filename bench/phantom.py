"""Phantom benchmark: generation speed, measured class statistics, and a montage for a person to judge.

    .venv/bin/python bench/phantom.py --patients 100 --montage /tmp/phantom_montage.png

Prints wall and CPU seconds for the whole cohort and per patient, then per class the mean (sd) of the
measurements of `cmrprior.anatomy.measure` on the written masks, then writes a montage: per class the
mid-ventricular ED and ES slices, the ED mask overlay and a basal slice.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from cmrprior.anatomy.measure import measure_patient
from cmrprior.data.phantom import generate_phantom
from cmrprior.io.records import ACDC_CLASSES


def _load(folder: Path):
    info = dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines())
    out = {}
    for key, frame in (("ed", int(info["ED"])), ("es", int(info["ES"]))):
        for suffix in ("", "_gt"):
            img = nib.load(folder / f"{folder.name}_frame{frame:02d}{suffix}.nii.gz")
            out[key + suffix] = np.asarray(img.dataobj).transpose(2, 1, 0)
            z = img.header.get_zooms()
            out["spacing"] = (float(z[2]), float(z[1]), float(z[0]))
    return info, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spurious-cue", action="store_true")
    ap.add_argument("--montage", type=Path, default=Path("/tmp/phantom_montage.png"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phantom"
        w0, c0 = time.perf_counter(), time.process_time()
        generate_phantom(out, n_patients=args.patients, seed=args.seed, spurious_cue=args.spurious_cue)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        print(f"generated {args.patients} patients: wall {wall:.1f} s, CPU {cpu:.1f} s "
              f"({1000 * wall / args.patients:.0f} ms wall, {1000 * cpu / args.patients:.0f} ms CPU per patient)")
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"disk: {size / 2**20:.1f} MiB")

        rows: dict[str, list] = {}
        examples: dict[str, dict] = {}
        for folder in sorted(out.glob("patient*")):
            info, d = _load(folder)
            m = measure_patient(d["ed_gt"], d["es_gt"], d["spacing"], float(info["Height"]), float(info["Weight"]))
            rows.setdefault(info["Group"], []).append(m)
            examples.setdefault(info["Group"], d)
            truth = json.loads((folder / "phantom_truth.json").read_text())
            assert truth["physiology"]["label"] == info["Group"]
        keys = ["lv_edv_ml", "lv_edv_ml_m2", "lvef", "rv_edv_ml", "rv_edv_ml_m2", "rvef", "myo_mass_g",
                "max_wall_thickness_mm"]
        print("class  n  " + "  ".join(f"{k:>18}" for k in keys))
        for c in ACDC_CLASSES:
            if c not in rows:
                continue
            ms = rows[c]
            cells = [f"{np.mean([getattr(m, k) for m in ms]):8.1f} ({np.std([getattr(m, k) for m in ms]):5.1f})"
                     for k in keys]
            print(f"{c:5} {len(ms):2d}  " + "  ".join(f"{x:>18}" for x in cells))
        _montage(examples, args.montage)
        print(f"montage: {args.montage}")


def _montage(examples: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in ACDC_CLASSES if c in examples]
    fig, axes = plt.subplots(4, len(classes), figsize=(3.2 * len(classes), 12.8), squeeze=False)
    for j, c in enumerate(classes):
        d = examples[c]
        lv = (d["ed_gt"] == 3).sum(axis=(1, 2))
        nz = np.flatnonzero(lv)
        zmid = int(nz[len(nz) // 2])
        vmax = np.percentile(d["ed"], 99.5)
        panels = [(d["ed"][zmid], f"{c} ED, slice {zmid}"), (d["es"][zmid], "ES, same slice"),
                  (d["ed"][zmid], "ED + mask"), (d["ed"][int(nz[0])], f"basal ED, slice {int(nz[0])}")]
        for i, (img, title) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
            if i == 2:
                ax.imshow(np.ma.masked_equal(d["ed_gt"][zmid], 0), cmap="jet", alpha=0.35, vmin=0, vmax=3)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    main()
