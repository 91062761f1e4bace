#!/usr/bin/env python
"""Reading a DICOM CT series and writing its DICOM SEG: kidneyseg (pydicom) against SimpleITK, same run.

Data: a synthetic 512 x 512 CT series (default 300 slices at 1.0 x 0.78 x 0.78 mm, random HU,
uncompressed; ``--syntax j2k``: JPEG 2000 lossless, the codec's worst case on noise) written with
pydicom into a temporary folder (removed afterwards), by the tests' own writer.

Timed after one warm-up read (files in the page cache), interleaved ``--repeat`` times:
  kidneyseg   ``kidneyseg.io.load_volume(folder)``: headers, sorting by position, pixel decoding,
              rescale to float32 HU, the canonical layout
  simpleitk   ``sitk.ImageSeriesReader`` on the same files (GDCM's sort), array as float32
Then once: ``kidneyseg.io.save_dicom_seg`` of two box 'kidneys' and a 'tumor' over a third of the slices.

Last line: ``RESULT read_ratio_vs_simpleitk=<median kidneyseg / simpleitk> seg_write_s=<s> peak_rss_gib=<g>``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--syntax", choices=["raw", "j2k"], default="raw")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import SimpleITK as sitk
    from pydicom.uid import JPEG2000Lossless

    from kidneyseg.io import load_volume, save_dicom_seg
    from tests.dicom_helpers import write_ct_series

    n = args.slices
    ct = np.random.default_rng(0).integers(-1000, 400, (n, 512, 512)).astype(np.int16)
    with tempfile.TemporaryDirectory(prefix="kidneyseg-bench-dicom-") as tmp:
        folder = Path(tmp) / "series"
        write_ct_series(ct, folder, spacing=(1.0, 0.78, 0.78),
                        transfer_syntax=JPEG2000Lossless if args.syntax == "j2k" else None)
        load_volume(folder)  # warm-up: every file in the page cache before anything is timed
        ours, theirs = [], []
        for rep in range(args.repeat):
            t = time.perf_counter()
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
            arr = sitk.GetArrayFromImage(reader.Execute()).astype(np.float32)
            theirs.append(time.perf_counter() - t)
            del arr
            t = time.perf_counter()
            vol = load_volume(folder)
            ours.append(time.perf_counter() - t)
            print(f"repeat {rep}: kidneyseg {ours[-1]:.1f} s, simpleitk {theirs[-1]:.1f} s")
        lab = np.zeros(vol.shape, np.uint8)
        z0 = vol.shape[0] // 3
        lab[z0:2 * z0, 200:300, 100:180] = 1
        lab[z0:2 * z0, 200:300, 330:410] = 1
        lab[z0 + 5:z0 + 30, 230:270, 340:380] = 2
        t = time.perf_counter()
        out = save_dicom_seg(lab, Path(tmp) / "case.seg.dcm", vol)
        seg_s = time.perf_counter() - t
        print(f"DICOM SEG: {seg_s:.1f} s, {out.stat().st_size / 1e6:.1f} MB")
    ratio = statistics.median(o / s for o, s in zip(ours, theirs))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"RESULT read_ratio_vs_simpleitk={ratio:.2f} seg_write_s={seg_s:.1f} peak_rss_gib={peak:.2f} "
          f"slices={n} syntax={args.syntax}")


if __name__ == "__main__":
    main()
