"""Split the ACDC training patients into a study cohort and a held-out `--test` cohort, both blind (no expert masks).

    PYTHONPATH=src .venv/bin/python bench/acdc_split.py --data ACDC/training --out DIR [--per-class 4]

DIR/study holds every patient but the last `--per-class` of each class (ACDC lists its patients in blocks of 20
per class: the last 4 are patient017-020, 037-040, 057-060, 077-080, 097-100), DIR/test those. Each patient
folder is made of symlinks to its images and Info.cfg only: no `_gt` file, so a study on DIR/study or
DIR/test segments every patient itself. The class of a patient is read from its Info.cfg (`Group`), never
from its number; each cohort's class counts are checked. The input folder is only read. DIR/study and DIR/test
must not exist yet (a half-made split is never reused). ACDC's patient074 and patient076 are one scan; both
stay in DIR/study, where `cmrprior study` keeps one (its duplicate-scan check, `qc/duplicate_images.csv`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from cmrprior.errors import DataError
from cmrprior.io.acdc import INFO_FILE, parse_info_cfg


def _image_files(folder: Path) -> list[Path]:
    """The patient's images (every NIfTI but the expert masks) and its Info.cfg."""
    files = [p for p in sorted(folder.iterdir())
             if p.name.endswith((".nii.gz", ".nii")) and "_gt." not in p.name]
    return files + [folder / INFO_FILE]


def split(data: Path, out: Path, per_class: int) -> dict[str, dict[str, list[str]]]:
    folders = sorted(p for p in data.iterdir() if p.is_dir() and p.name.startswith("patient"))
    if not folders:
        raise DataError(data, "no patientNNN folders")
    by_class: dict[str, list[str]] = defaultdict(list)
    for f in folders:
        group = parse_info_cfg(f / INFO_FILE).get("Group")
        if not group:
            raise DataError(f / INFO_FILE, "missing Group (a training folder is needed)")
        by_class[group].append(f.name)
    cohorts: dict[str, dict[str, list[str]]] = {"study": {}, "test": {}}
    for group, ids in sorted(by_class.items()):
        if len(ids) <= per_class:
            raise DataError(data, f"class {group} has {len(ids)} patients, not more than --per-class {per_class}")
        cohorts["study"][group], cohorts["test"][group] = ids[:-per_class], ids[-per_class:]
    for name in cohorts:
        if (out / name).exists():
            raise DataError(out / name, "exists already: give a new --out")
    if out.resolve().is_relative_to(data.resolve()):
        raise DataError(out, "is inside the input folder, which is never written to")
    for name, groups in cohorts.items():
        for ids in groups.values():
            for pid in ids:
                dest = out / name / pid
                dest.mkdir(parents=True)
                for src in _image_files(data / pid):
                    (dest / src.name).symlink_to(src.resolve())
    # the check reads back what was made: each cohort's classes from the linked Info.cfg files, no mask linked
    for name, groups in cohorts.items():
        made = Counter(parse_info_cfg(p / INFO_FILE)["Group"] for p in sorted((out / name).iterdir()))
        want = Counter({g: len(ids) for g, ids in groups.items()})
        if made != want:
            raise DataError(out / name, f"class counts {dict(made)} differ from {dict(want)}")
        masks = list((out / name).glob("*/*_gt.*"))
        if masks:
            raise DataError(masks[0], "an expert mask was linked")
    return cohorts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="ACDC training folder (read only)")
    ap.add_argument("--out", type=Path, required=True, help="made: OUT/study and OUT/test")
    ap.add_argument("--per-class", type=int, default=4, help="held-out patients per class: the last N of each")
    args = ap.parse_args(argv)
    try:
        cohorts = split(args.data, args.out, args.per_class)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, groups in cohorts.items():
        n = sum(len(ids) for ids in groups.values())
        print(f"{args.out / name}: {n} patients, images and Info.cfg only (no _gt files)")
        for group, ids in groups.items():
            shown = ids if len(ids) <= 4 else [*ids[:2], "...", *ids[-2:]]
            print(f"  {group}: {len(ids)}  {' '.join(shown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
