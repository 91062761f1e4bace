"""Network windows per case on the 210 real KiTS19 label maps: the cascade against one whole-volume pass.

Prediction time on a CPU is the number of network windows times the seconds per window (the same
network and patch on both sides), so the window count decides the speed ratio at real scale. This
script counts, from the real geometry of every case (shape, spacing, where the kidneys lie), the
windows of:

* **nnU-Net**: a sliding window over the whole volume resampled to the target spacing;
* **kidneyseg**: stage 1 over the whole volume at the stage-1 spacing + stage 2 over the thesis's
  fixed ROI box, cut to the volume where the box reaches past it (``stage2``; an upper bound, exact
  when the box lies inside the volume); ``stage2_box`` counts the whole box, padding included.

Nothing is timed: the counts are exact for the given geometry. ``benchmarks/predict.py`` measures
time on a synthetic case. Needs ``../shared/kits19`` (or ``KIDNEYSEG_KITS19``).

Usage:
    python benchmarks/windows.py                         # patch 128^3, thesis grid, overlap 0.5
    python benchmarks/windows.py --patch 64,128,128

The last line is ``RESULT window_ratio=<x> median_case_ratio=<x> cases=<n>``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THESIS_TARGET = (1.0, 0.78, 0.78)
#: the all-foreground box of the 210 labels plus 10 mm each side (``benchmarks``/README ROI figure)
THESIS_BOX = (216.0, 180.0, 296.0)


def _floats(s):
    return tuple(float(v) for v in s.split(","))


def _ints(s):
    return tuple(int(v) for v in s.split(","))


def _count(vox, patch, overlap):
    from kidneyseg.infer.sliding_window import window_starts

    return math.prod(len(window_starts(max(v, p), p, overlap)) for v, p in zip(vox, patch))


def case_windows(args) -> dict:
    """Window counts for one label map (see the module docstring)."""
    path, patch, target, stage1, box_mm, overlap = args
    from kidneyseg.io import read_header
    from kidneyseg.preprocess.roi import box_voxels

    hdr = read_header(path)
    fov = np.asarray(hdr.shape) * np.asarray(hdr.spacing, float)
    whole = [max(1, round(f / t)) for f, t in zip(fov, target)]
    coarse = [max(1, round(f / t)) for f, t in zip(fov, stage1)]
    return {"case": Path(path).parent.name, "nnunet": _count(whole, patch, overlap),
            "stage1": _count(coarse, patch, overlap), "stage2_box": _count(box_voxels(box_mm, target), patch, overlap),
            # the part of the box inside the volume (what predict runs on); an upper bound when the
            # box is centred near an edge
            "stage2": _count([min(b, w) for b, w in zip(box_voxels(box_mm, target), whole)], patch, overlap)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kits19", default=os.environ.get("KIDNEYSEG_KITS19", str(ROOT.parent / "shared" / "kits19")))
    ap.add_argument("--patch", type=_ints, default=(128, 128, 128))
    ap.add_argument("--target-spacing", type=_floats, default=THESIS_TARGET)
    ap.add_argument("--stage1-factor", type=float, default=2.5, help="stage-1 spacing = factor x target")
    ap.add_argument("--box-mm", type=_floats, default=THESIS_BOX)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=0, help="first N cases only (0: all)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    root = Path(a.kits19)
    labels = sorted(root.glob("case_*/segmentation.nii.gz"))
    if a.limit:
        labels = labels[: a.limit]
    if not labels:
        print(f"{root}: no case_*/segmentation.nii.gz found (KiTS19 labels needed)")
        print("RESULT skipped=no_kits19")
        return 0
    stage1 = tuple(a.stage1_factor * t for t in a.target_spacing)
    jobs = [(str(p), a.patch, a.target_spacing, stage1, a.box_mm, a.overlap) for p in labels]
    with ProcessPoolExecutor(a.workers) as ex:
        rows = list(ex.map(case_windows, jobs, chunksize=8))
    import pandas as pd
    df = pd.DataFrame(rows)
    df["kidneyseg"] = df["stage1"] + df["stage2"]
    df["ratio"] = df["nnunet"] / df["kidneyseg"]
    print(f"# {len(df)} KiTS19 label maps (headers), patch {a.patch}, target {a.target_spacing} mm, "
          f"stage 1 {tuple(round(v, 3) for v in stage1)} mm, box {a.box_mm} mm, overlap {a.overlap}")
    print("\n| windows per case | nnU-Net whole volume | kidneyseg stage 1 | stage 2, whole box | kidneyseg stage 2 (box in volume) | kidneyseg total | ratio |")
    print("|---|---|---|---|---|---|---|")
    for stat in ("min", "median", "mean", "max"):
        vals = [getattr(df[c], stat)() for c in ("nnunet", "stage1", "stage2_box", "stage2", "kidneyseg", "ratio")]
        print(f"| {stat} | " + " | ".join(f"{v:.1f}" if i < 5 else f"{v:.2f}" for i, v in enumerate(vals)) + " |")
    total = df["nnunet"].sum() / df["kidneyseg"].sum()
    print(f"\nall cases together: {df['nnunet'].sum()} vs {df['kidneyseg'].sum()} windows, ratio {total:.2f}; "
          f"cases with ratio < 5: {(df['ratio'] < 5).sum()}")
    print(f"RESULT window_ratio={total:.2f} median_case_ratio={df['ratio'].median():.2f} cases={len(df)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
