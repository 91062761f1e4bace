#!/usr/bin/env python
"""Painting one real label map at native size: time per step, peak RSS, and gzip writers compared.

Data: one KiTS19 label map (default ``case_00151``, the largest: 1059 x 512 x 512 at 0.5 mm).
Steps, each timed (wall and CPU seconds) in this process:
  read      kidneyseg.data.phantom.stream.LabelFile (nibabel, no copy)
  scene     painted_scene: body fitted to the kidneys, kidney tissue, fields, noise banks
  render    every slab rendered into the int16 image in the file's layout
  write_*   the same image written as .nii.gz by
            nibabel       nib.save (Python's zlib, nibabel's default level 1)
            isal_L        kidneyseg's writer (isal.igzip) at level L (0-3)
            each file is read back and compared with the array (it must be identical).

Last line: ``RESULT case=... voxels=... read_s=... scene_s=... render_s=... write_nibabel_s=...
write_isal1_s=... speedup_isal1=... peak_rss_gib=...`` (wall seconds; speedup = nibabel / isal level 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402

from kidneyseg.data.phantom import case_seed, painted_scene  # noqa: E402
from kidneyseg.data.phantom import stream  # noqa: E402


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(C.ROOT.parent / "shared" / "kits19"))
    ap.add_argument("--case", default="case_00151")
    ap.add_argument("--levels", default="0,1,2,3", help="isal levels to compare")
    ap.add_argument("--no-nibabel", action="store_true", help="skip the (slow) nibabel/zlib writer")
    args = ap.parse_args()
    src = Path(args.data) / args.case / "segmentation.nii.gz"
    C.reset_peak()
    lab, t_read, c_read = _timed(lambda: stream.LabelFile(src))
    scene, t_scene, c_scene = _timed(lambda: painted_scene(lab.array, lab.spacing, case_seed(0, args.case)))

    def render():
        out = np.empty(lab.file_array.shape, np.int16, order="F")
        canon = nib.orientations.apply_orientation(out, lab.ornt)
        for z0 in range(0, scene.shape[0], 24):
            z1 = min(scene.shape[0], z0 + 24)
            stream._assign(canon[z0:z1], scene.render(z0, z1))
        return out

    image, t_render, c_render = _timed(render)
    n = image.size
    print(f"{args.case}: {lab.array.shape} voxels={n} spacing={lab.spacing}")
    print(f"read    wall {t_read:6.1f} s  cpu {c_read:6.1f} s")
    print(f"scene   wall {t_scene:6.1f} s  cpu {c_scene:6.1f} s")
    print(f"render  wall {t_render:6.1f} s  cpu {c_render:6.1f} s  ({c_render / n * 1e9:.0f} ns/voxel cpu)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        writers = [] if args.no_nibabel else [("nibabel", None)]
        writers += [(f"isal{lv}", int(lv)) for lv in args.levels.split(",")]
        for name, level in writers:
            path = Path(tmp) / f"{name}.nii.gz"
            if level is None:
                img = nib.Nifti1Image(image, lab.affine, header=lab.header.copy())
                img.set_data_dtype(np.int16)
                _, t, c = _timed(lambda: nib.save(img, str(path)))
            else:
                stream.COMPRESSLEVEL = level
                _, t, c = _timed(lambda: stream.write_nifti(path, image, lab.affine, lab.header))
            back = np.asanyarray(nib.load(str(path)).dataobj)
            same = bool(np.array_equal(back, image))
            del back
            size = path.stat().st_size
            results[name] = t
            print(f"write {name:8s} wall {t:6.1f} s  cpu {c:6.1f} s  {size / 2**20:7.1f} MiB "
                  f"({size / n:.3f} B/voxel, {image.nbytes / t / 1e6:5.0f} MB/s)  read back identical: {same}")
            path.unlink()
    peak = C.peak_rss_mb() / 1024
    print(f"peak RSS {peak:.2f} GiB")
    ref = results.get("nibabel", float("nan"))
    print(f"RESULT case={args.case} voxels={n} read_s={t_read:.1f} scene_s={t_scene:.1f} render_s={t_render:.1f} "
          f"write_nibabel_s={ref:.1f} write_isal1_s={results.get('isal1', float('nan')):.1f} "
          f"speedup_isal1={ref / results.get('isal1', float('nan')):.2f} peak_rss_gib={peak:.2f}")


if __name__ == "__main__":
    main()
