#!/usr/bin/env python
"""Resampling: kidneyseg against nnU-Net v2 (and scipy for accuracy), same run, fresh processes.

Volumes (../shared/bench/make_volume.py, KiTS19-like CT + label, (z, y, x)):
  small (150, 512, 512) at (3.0, 0.78, 0.78) mm and large (611, 512, 512) at (0.8, 0.78, 0.78) mm,
  both resampled to (1.0, 0.78, 0.78) mm. ``--quick``: (40, 288, 288) and (120, 288, 288), same spacings.

Methods, each (method, target, volume) in its own fresh process with its peak RSS (VmHWM reset just
before the call; it includes the input, the libraries and the output):
  ours   : kidneyseg.preprocess.resample: cubic B-spline image, nearest-exact label; torch, 2 threads.
  nnunet : nnU-Net's resample_data_or_seg_to_shape with the kwargs its ExperimentPlanner writes into
           the plans (called through ../shared/bench/bench_resample.py's run_method).
  scipy  : scipy.ndimage.zoom order 3 (image only), the accuracy reference.
Both ours and nnU-Net get the same float32 image (nnU-Net's own conversion) and uint8/int8 label.

Reported: seconds and peak RSS per run, speedup (nnU-Net seconds / ours, image + label), RSS ratio
(ours peak / nnU-Net peak, worst target), max and mean |ours - scipy| in HU, label volumes (ml) of
input, ours and nnU-Net. The last line:
  RESULT speedup_vs_nnunet=<x> rss_ratio_vs_nnunet=<x> max_abs_diff_vs_scipy=<HU>
(worst over the volumes: smallest speedup, largest RSS ratio, largest difference).

Run heavy benchmarks under the shared lock:  flock /tmp/kidneyseg-heavy.lock python benchmarks/resample.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET = (1.0, 0.78, 0.78)
VOLUMES = {"small": ((150, 512, 512), (3.0, 0.78, 0.78)), "large": ((611, 512, 512), (0.8, 0.78, 0.78))}
QUICK = {"qsmall": ((40, 288, 288), (3.0, 0.78, 0.78)), "qlarge": ((120, 288, 288), (0.8, 0.78, 0.78))}


def _load(name, data_dir):
    mv = C.import_anchor("make_volume")
    shape, spacing = {**VOLUMES, **QUICK}[name]
    return mv.load_or_make(name, data_dir, shape, spacing, verbose=False)


def _volumes_ml(label: np.ndarray, spacing) -> list[float]:
    counts = np.bincount(np.asarray(label).ravel().astype(np.int64), minlength=3)
    vox = float(np.prod(spacing)) / 1000.0
    return [round(float(counts[1]) * vox, 2), round(float(counts[2]) * vox, 2)]


def worker(method: str, target: str, name: str, data_dir: str, out_dir: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    img, seg, spacing = _load(name, data_dir)
    arr = img if target == "image" else seg
    del img, seg
    br = C.import_anchor("bench_resample")
    if method == "nnunet":
        import nnunetv2.experiment_planning.experiment_planners.default_experiment_planner  # noqa: F401
        import nnunetv2.preprocessing.resampling.default_resampling  # noqa: F401
    else:
        import scipy.ndimage  # noqa: F401

        from kidneyseg.preprocess.resample import resample_image, resample_label  # noqa: F401
    shape = br.new_shape_for(arr.shape, spacing, TARGET)
    res = {"method": method, "target": target, "volume": name, "in_shape": list(arr.shape),
           "out_shape": list(shape), "spacing": list(spacing)}
    if target == "label":
        res["in_ml"] = _volumes_ml(arr, spacing)
    if method == "ours":
        x = arr.astype(np.float32) if target == "image" else arr.astype(np.uint8, copy=False)
        del arr
        if target == "image":
            out, m = C.measure(resample_image, x, spacing, TARGET, shape=shape)
        else:
            out, m = C.measure(resample_label, x, spacing, TARGET, shape=shape)
    else:
        x = br.prepare(method, target, arr)
        del arr
        (out, _dt, info), m = C.measure(br.run_method, method, target, x, spacing, shape, threads)
        res["info"] = {k: v for k, v in info.items() if k in ("kwargs", "separate_z", "kwargs_source")}
        out = np.asarray(out)
    res.update(m)
    out_spacing = [s * n / o for s, n, o in zip(spacing, res["in_shape"], out.shape)]
    if target == "label":
        res["out_ml"] = _volumes_ml(out, out_spacing)
        res["classes"] = sorted(int(v) for v in np.unique(out))
    elif out_dir:
        np.save(os.path.join(out_dir, f"{method}_{name}.npy"), np.asarray(out, np.float32))
    C.emit(res)


def compare(out_dir: str, name: str, a: str = "ours", b: str = "scipy") -> dict:
    """Max and mean |a - b| (HU) between two saved image outputs, in slabs (memory-mapped)."""
    x = np.load(os.path.join(out_dir, f"{a}_{name}.npy"), mmap_mode="r")
    y = np.load(os.path.join(out_dir, f"{b}_{name}.npy"), mmap_mode="r")
    if x.shape != y.shape:
        return {"max_abs": float("nan"), "mean_abs": float("nan")}
    mx, tot = 0.0, 0.0
    for z0 in range(0, x.shape[0], 32):
        d = np.abs(np.asarray(x[z0:z0 + 32], np.float64) - np.asarray(y[z0:z0 + 32], np.float64))
        mx, tot = max(mx, float(d.max())), tot + float(d.sum())
    return {"max_abs": mx, "mean_abs": tot / x.size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small volumes (test mode, < 60 s)")
    ap.add_argument("--sizes", help="comma list of volumes (default small,large; quick: qsmall,qlarge)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("KIDNEYSEG_BENCH_DATA", "/tmp/anchors_data"))
    ap.add_argument("--no-scipy", action="store_true", help="skip the scipy accuracy reference")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--worker", nargs=5, metavar=("METHOD", "TARGET", "VOLUME", "DATA_DIR", "OUT_DIR"))
    a = ap.parse_args(argv)
    if a.worker:
        worker(*a.worker, threads=a.threads)
        return 0
    if not C.have_module("nnunetv2"):
        print("nnunetv2 is not installed (make bench); cannot run the anchor", file=sys.stderr)
        return 2
    sizes = (a.sizes or ("qsmall,qlarge" if a.quick else "small,large")).split(",")
    print(C.machine_line() + f" threads={a.threads} target_spacing={TARGET}")
    results, table = [], []
    with tempfile.TemporaryDirectory(prefix="ks_resample_") as out_dir:
        worst = {"speedup": float("inf"), "rss": 0.0, "diff": 0.0}
        for name in sizes:
            _load(name, a.data_dir)  # build the volume once, outside the timed processes
            runs = {}
            plan = [("ours", "image"), ("nnunet", "image"), ("ours", "label"), ("nnunet", "label")]
            if not a.no_scipy:
                plan.append(("scipy", "image"))
            for method, target in plan:
                r = C.run_worker(__file__, [method, target, name, a.data_dir, out_dir, "--threads", str(a.threads)],
                                 timeout=1200)
                r.setdefault("method", method)
                r.setdefault("target", target)
                r["volume"] = name
                runs[(method, target)] = r
                results.append(r)
                if "failed" in r:
                    print(f"{method} {target} {name} FAILED: {r['failed']}\n{r['stderr']}", flush=True)
                    continue
                print(f"{method:6s} {target:5s} {name}: {tuple(r['in_shape'])} -> {tuple(r['out_shape'])} "
                      f"{r['seconds']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB (baseline {r['baseline_rss_mb']:.0f})"
                      + (f", ml in {r['in_ml']} out {r['out_ml']} classes {r['classes']}" if target == "label" else "")
                      + (f", nnU-Net separate_z={r['info'].get('separate_z')}" if method == "nnunet" else ""),
                      flush=True)
            if any("failed" in runs.get(k, {"failed": 1}) for k in
                   [("ours", "image"), ("nnunet", "image"), ("ours", "label"), ("nnunet", "label")]):
                worst["speedup"] = float("nan")
                continue
            t_ours = runs["ours", "image"]["seconds"] + runs["ours", "label"]["seconds"]
            t_nn = runs["nnunet", "image"]["seconds"] + runs["nnunet", "label"]["seconds"]
            speed = t_nn / t_ours
            rss = max(runs["ours", t]["peak_rss_mb"] / runs["nnunet", t]["peak_rss_mb"] for t in ("image", "label"))
            acc = compare(out_dir, name) if ("scipy", "image") in runs and "failed" not in runs["scipy", "image"] \
                else {"max_abs": float("nan"), "mean_abs": float("nan")}
            acc_nn = compare(out_dir, name, "nnunet") if "max_abs" in acc else {}
            lab_in, lab_ours = runs["ours", "label"]["in_ml"], runs["ours", "label"]["out_ml"]
            vol_err = max(abs(o - i) / i for i, o in zip(lab_in, lab_ours) if i > 0)
            table.append({"volume": name, "ours s (img+lab)": t_ours, "nnU-Net s (img+lab)": t_nn, "speedup": speed,
                          "ours peak MB": max(runs["ours", t]["peak_rss_mb"] for t in ("image", "label")),
                          "nnU-Net peak MB": max(runs["nnunet", t]["peak_rss_mb"] for t in ("image", "label")),
                          "RSS ratio": rss, "max |ours-scipy| HU": acc["max_abs"],
                          "mean |ours-scipy| HU": acc["mean_abs"],
                          "max |nnU-Net-scipy| HU": acc_nn.get("max_abs", float("nan")),
                          "label ml in": str(lab_in), "ours ml": str(lab_ours),
                          "nnU-Net ml": str(runs["nnunet", "label"]["out_ml"]), "worst label vol err": vol_err,
                          "scipy s": runs.get(("scipy", "image"), {}).get("seconds", float("nan"))})
            worst["speedup"] = min(worst["speedup"], speed)
            worst["rss"] = max(worst["rss"], rss)
            worst["diff"] = max(worst["diff"], acc["max_abs"]) if not np.isnan(acc["max_abs"]) else float("nan")
    print()
    print(C.markdown_table(table, list(table[0].keys()) if table else ["volume"]))
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": results, "table": table}, indent=1))
    print(f"RESULT speedup_vs_nnunet={worst['speedup']:.1f} rss_ratio_vs_nnunet={worst['rss']:.3f} "
          f"max_abs_diff_vs_scipy={worst['diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
