#!/usr/bin/env python
"""Loading a case: the preprocessed cache (.npy) against nibabel on the .nii.gz files, same run.

Data: one KiTS19-like case from ../shared/bench/make_volume.py (default the 150x512x512 'small'
preset at 3 x 0.78 x 0.78 mm; ``--quick``: 40x288x288), written as KiTS19-style imaging.nii.gz
(int16) + segmentation.nii.gz, then preprocessed with ``kidneyseg.preprocess`` into a cache.

Timed (median of ``--repeat`` runs, files warm in the page cache, image + label, arrays fully read):
  nibabel     kidneyseg.io.load_volume on both .nii.gz files (gzip decompression + float32 image)
  npy_full    the same full-size arrays (float32 image, uint8 label) saved as .npy, np.load
              (like for like: same voxels, only the format differs)
  cache_s2    load_case(cache, case, stage=2, mmap=False): what training reads (the ROI box)
  cache_mmap  load_case(..., mmap=True) and one 128^3 patch read from it (what a sampler does)

Last line: ``RESULT speedup_vs_nibabel=<x> format_only=<y>``: x = nibabel / cache_s2 (reading the cached
case, fully, as training does), y = nibabel / npy_full (same voxels, only the file format differs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", default="/tmp/anchors_data")
    a = ap.parse_args(argv)

    import nibabel as nib
    import torch

    from kidneyseg.data.manifest import make_manifest, write_manifest
    from kidneyseg.io import load_volume
    from kidneyseg.preprocess.cache import load_case, preprocess_dataset
    from kidneyseg.preprocess.plan import Plan

    torch.set_num_threads(2)
    mv = C.import_anchor("make_volume")
    name, shape, spacing = ("qload", (40, 288, 288), (3.0, 0.78, 0.78)) if a.quick else \
        ("small", (150, 512, 512), (3.0, 0.78, 0.78))
    img, seg, spacing = mv.load_or_make(name, a.data_dir, shape, spacing, verbose=False)
    print(C.machine_line())
    with tempfile.TemporaryDirectory(prefix="ks_load_") as tmp:
        root = Path(tmp) / "data"
        case = root / "case_00000"
        case.mkdir(parents=True)
        dz, dy, dx = spacing
        aff = np.array([[0, 0, -dx, 0], [0, -dy, 0, 0], [-dz, 0, 0, 0], [0, 0, 0, 1]], float)
        nib.save(nib.Nifti1Image(img, aff), str(case / "imaging.nii.gz"))
        nib.save(nib.Nifti1Image(seg, aff), str(case / "segmentation.nii.gz"))
        df = make_manifest(root, headers_only=True, workers=1, progress=False)
        df["split"] = "train"
        manifest = write_manifest(df, root / "manifest.csv")
        plan = Plan(clip_low_hu=-100, clip_high_hu=300, mean_hu=150, std_hu=60, box_size_mm=(236.0, 200.0, 316.0))
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        preprocess_dataset(manifest, plan, cache, stages=(2,), progress=False)
        t_pre = time.perf_counter() - t0
        full = Path(tmp) / "full"
        full.mkdir()
        np.save(full / "image.npy", img.astype(np.float32))
        np.save(full / "label.npy", seg)

        def nib_load():
            load_volume(case / "imaging.nii.gz", "image")
            load_volume(case / "segmentation.nii.gz", "label")

        def npy_full():
            np.load(full / "image.npy")
            np.load(full / "label.npy")

        def cache_s2():
            load_case(cache, "case_00000", 2, mmap=False)

        def cache_mmap():
            c = load_case(cache, "case_00000", 2, mmap=True)
            np.array(c.image[:128, :128, :128]), np.array(c.label[:128, :128, :128])

        for fn in (nib_load, npy_full, cache_s2, cache_mmap):  # warm the page cache
            fn()
        t = {"nibabel": _time(nib_load, a.repeat), "npy_full": _time(npy_full, a.repeat),
             "cache_s2": _time(cache_s2, a.repeat), "cache_mmap": _time(cache_mmap, a.repeat)}
        s2 = load_case(cache, "case_00000", 2)
        rows = [{"method": "nibabel .nii.gz (full, image+label)", "seconds": t["nibabel"], "ratio": 1.0},
                {"method": f"npy full {tuple(img.shape)}", "seconds": t["npy_full"], "ratio": t["nibabel"] / t["npy_full"]},
                {"method": f"cache stage 2 {tuple(s2.image.shape)} (np.load)", "seconds": t["cache_s2"],
                 "ratio": t["nibabel"] / t["cache_s2"]},
                {"method": "cache stage 2 mmap + one 128^3 patch", "seconds": t["cache_mmap"],
                 "ratio": t["nibabel"] / t["cache_mmap"]}]
        print(f"volume {name} {tuple(img.shape)} at {spacing} mm; preprocessing it (stage 2) took {t_pre:.1f} s; "
              f"median of {a.repeat}; shared machine")
        print(C.markdown_table(rows, ["method", "seconds", "ratio"]))
    print(f"RESULT speedup_vs_nibabel={t['nibabel'] / t['cache_s2']:.1f} format_only={t['nibabel'] / t['npy_full']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
