#!/usr/bin/env python
"""A cascade model scored on phantoms it never saw: the demo's validation split, checked on more cases.

The demo validates on 12 phantoms of its own run. This paints ``--cases`` further phantoms with the
demo profile's phantom options and another ``--seed`` (so none of them was trained on), predicts
them with the model of a finished run (``RUN/03_training/model``, its own post-processing choice)
and prints per-case tumor Dice with the reference tumor volume, then the means.

    python benchmarks/demo_holdout.py runs/demo --seed 7 --cases 16

Last line: ``RESULT cases=... kidney_dice=... tumor_dice=... tumor_cases=... small_tumor_dice=...``
(means over the cases; ``tumor_dice`` over cases with a tumor; ``small_tumor_dice`` over tumors under
15 ml).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kidneyseg import experiments as ex  # noqa: E402
from kidneyseg.data.phantom import write_phantoms  # noqa: E402


def demo_phantom_options() -> dict:
    """The demo profile's phantom options (grid size, slice spacings), without its case count and seed."""
    prof = json.loads(resources.files("kidneyseg.profiles").joinpath("demo.json").read_text(encoding="utf-8"))
    return {k: v for k, v in prof["phantoms"].items() if k not in ("cases", "seed", "n_val")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished demo run folder (RUN/03_training/model)")
    ap.add_argument("--seed", type=int, default=7, help="phantom seed; the demo trains on seed 0 (default 7)")
    ap.add_argument("--cases", type=int, default=16, help="phantoms painted; all but one are scored (default 16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap, as the demo (0.25)")
    args = ap.parse_args(argv)
    if args.cases < 2:
        print(f"--cases must be at least 2 (one training phantom and the scored ones), got {args.cases}",
              file=sys.stderr)
        return 2
    model = args.run / "03_training" / "model"
    if not (model / "plan.json").is_file():
        print(f"{model}: no trained cascade here (run `make demo` first)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="kidneyseg_holdout_") as tmp:
        manifest = write_phantoms(Path(tmp) / "ph", args.cases, args.seed, progress=False,
                                  n_val=args.cases - 1, **demo_phantom_options())
        r = ex.validate_model(model, manifest, "val", device="cpu", tolerance_mm=2.0, overlap=args.overlap,
                              batch_size=2)
    for row in r.itertuples():
        print(f"{row.case_id}: tumor {row.gt_tumor_ml:7.1f} ml  kidney Dice {row.kidney_dice:.3f}  "
              f"tumor Dice {row.tumor_dice:.3f}")
    tumors = r[r.gt_tumor_ml > 0]
    small = tumors[tumors.gt_tumor_ml < 15]
    print(f"median tumor {tumors.gt_tumor_ml.median():.1f} ml over {len(tumors)} cases with a tumor")
    print(f"RESULT cases={len(r)} kidney_dice={r.kidney_dice.mean():.3f} tumor_dice={tumors.tumor_dice.mean():.3f} "
          f"tumor_cases={len(tumors)} small_tumor_dice={small.tumor_dice.mean() if len(small) else np.nan:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
