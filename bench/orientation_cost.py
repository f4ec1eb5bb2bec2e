"""What the in-plane reorientation (`cmrprior.io.orientation`) costs per frame, against segmenting the frame.

    PYTHONPATH=src .venv/bin/python bench/orientation_cost.py [--frames 10] [--threads 1] [--data ACDC]

For N ACDC frames (`ACDC_ROOT` or --data), each also stored transposed with both in-plane axes reversed
(affine adjusted; into a temporary folder, never into --data), times per frame: `read_nifti` (the file as
stored), `read_image` (the same plus the orientation decision: identity for ACDC), `read_image` of the
transposed copy (the array turned), writing its mask back in the copy's order (`write_nifti(like=...)`)
against writing one without a turn, and `predict_volume` with the shipped segmenter. Prints medians in ms;
figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import apply_orientation, inv_ornt_aff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from acdc_cohort import ACDC  # noqa: E402

TURN = np.array([[1, -1], [0, -1], [2, 1]], dtype=float)  # rows and columns swapped, both reversed


def _ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cmrprior.io.load import read_image
    from cmrprior.io.nifti import read_nifti, write_nifti
    from cmrprior.segmentation.inference import load_for_inference
    from cmrprior.segmentation.predict import default_model_path
    from cmrprior.segmentation.volumes import predict_volume

    root = args.data or ACDC
    if not root.is_dir():
        print(f"ACDC not found at {root} (set ACDC_ROOT or --data)")
        return
    frames = sorted(root.glob("patient*/patient*_frame*[0-9].nii.gz"))[: args.frames]
    model, margs, _, _ = load_for_inference(default_model_path(), None)
    rows: dict[str, list[float]] = {k: [] for k in ("read_nifti", "read_image", "read_image_turned",
                                                    "write_mask", "write_mask_turned", "predict_volume")}
    with tempfile.TemporaryDirectory() as tmp:
        for f in frames:
            img = nib.load(str(f))
            data = np.asanyarray(img.dataobj)
            turned_path = Path(tmp) / f.name
            nib.save(nib.Nifti1Image(np.ascontiguousarray(apply_orientation(data, TURN)),
                                     img.affine @ inv_ornt_aff(TURN, data.shape), header=img.header), str(turned_path))
            plain, turned = read_image(f), read_image(turned_path)
            labels = predict_volume(model, plain, divisor=margs.divisor).labels
            rows["read_nifti"].append(_ms(lambda: read_nifti(f)))
            rows["read_image"].append(_ms(lambda: read_image(f)))
            rows["read_image_turned"].append(_ms(lambda: read_image(turned_path)))
            rows["write_mask"].append(_ms(lambda: write_nifti(labels, None, Path(tmp) / "m.nii.gz", like=plain)))
            rows["write_mask_turned"].append(_ms(lambda: write_nifti(labels, None, Path(tmp) / "t.nii.gz",
                                                                     like=turned)))
            rows["predict_volume"].append(_ms(lambda: predict_volume(model, plain, divisor=margs.divisor), repeat=1))
            assert np.array_equal(turned.array, plain.array)
    print(f"{len(frames)} ACDC frames, {args.threads} thread(s), load average {os.getloadavg()}; "
          "median over frames of each frame's best of 5 (predict_volume: 1 run), ms")
    for k, v in rows.items():
        print(f"  {k:<18} {statistics.median(v):9.2f}")


if __name__ == "__main__":
    main()
