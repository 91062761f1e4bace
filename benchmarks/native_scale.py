"""The data path at native KiTS19 size, one case at a time: load, preprocess, predict, evaluate.

For each case of a KiTS19-layout folder of painted cases (``kidneyseg phantom OUT --from-labels
../shared/kits19``), every step runs in a fresh process, so its peak RSS is that process's kernel
high-water mark (``VmHWM``) and nothing is shared between cases:

* **preprocess**: ``load_volume`` of the CT and the labels, then
  :func:`kidneyseg.preprocess.case.preprocess_case` for stage 1 (whole volume at the plan's coarse
  spacing) and stage 2 (the fixed box at the target spacing), as the cache builds them;
* **predict** (``--predict``): ``predict_path`` on the CT file with a model folder of random-weight
  networks of the thesis's size (6 stages, 32..320 features, 31.8 M parameters, patch 128^3 unless
  ``--features``/``--patch`` say otherwise): load, body box, stage 1, ROI, stage 2, labels back,
  post-processing, write. Random weights predict random foreground, so the ROI box lands wherever
  that is: its size, not its position, sets the cost (as ``benchmarks/predict.py`` notes);
* **evaluate** (with ``--predict``): ``evaluate_pair`` of that prediction against the labels.

Per step it prints wall seconds, CPU seconds and peak RSS, then per-voxel figures (seconds and bytes
per million original voxels) so that growth faster than linear shows as a rising per-voxel column.

    python benchmarks/native_scale.py --data /tmp/painted --plan plan.json            # preprocess only
    python benchmarks/native_scale.py --data /tmp/painted --plan plan.json --predict --cases case_00151

Last line: ``RESULT cases=<n> max_peak_rss_gib=<g> preprocess_s_per_mvox=<min>..<max> predict_s=<largest case>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _hwm() -> int:
    from kidneyseg.resources import _hwm_bytes

    return _hwm_bytes(os.getpid())


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def child_preprocess(case_dir: str, plan_path: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from kidneyseg.io import load_volume
    from kidneyseg.preprocess.case import preprocess_case
    from kidneyseg.preprocess.plan import Plan

    plan = Plan.load(plan_path)
    out: dict = {}
    t0, c0 = time.perf_counter(), _cpu()
    img = load_volume(Path(case_dir) / "imaging.nii.gz", "image")
    lab = load_volume(Path(case_dir) / "segmentation.nii.gz", "label")
    out["load_s"], out["load_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
    out["shape"], out["spacing"] = list(img.shape), list(img.spacing)
    for st in (1, 2):
        t0, c0 = time.perf_counter(), _cpu()
        x, _, props = preprocess_case(img.array, lab.array, img.spacing, plan, st)
        out[f"stage{st}_s"], out[f"stage{st}_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
        out[f"stage{st}_shape"] = list(x.shape)
        del x
    out["peak_rss"] = _hwm()
    return out


def child_predict(case_dir: str, model_dir: str, out_dir: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from kidneyseg.evaluate.report import evaluate_pair
    from kidneyseg.infer.predict import predict_path

    case = Path(case_dir)
    pred = Path(out_dir) / f"{case.name}.nii.gz"
    t0, c0 = time.perf_counter(), _cpu()
    res = predict_path(case / "imaging.nii.gz", pred, model_dir, progress=False, log=lambda m: None)[0]
    out = {"predict_s": time.perf_counter() - t0, "predict_cpu_s": _cpu() - c0,
           "predict_stages_s": {k: round(v, 1) for k, v in res.items() if k not in ("case_id", "output", "status")},
           "predict_peak_rss": _hwm()}
    Path("/proc/self/clear_refs").write_text("5")  # the evaluation's own peak from here on
    t0, c0 = time.perf_counter(), _cpu()
    evaluate_pair(pred, case / "segmentation.nii.gz", 2.0, case_id=case.name)
    out.update(evaluate_s=time.perf_counter() - t0, evaluate_cpu_s=_cpu() - c0, evaluate_peak_rss=_hwm())
    return out


def make_model(root: Path, plan_path: str, features: int, patch: int) -> Path:
    """A model folder of random-weight networks of the thesis's shape (as training would save them)."""
    from kidneyseg.preprocess.plan import Plan
    from kidneyseg.train.checkpoint import write_untrained_model
    from kidneyseg.train.config import preset

    return write_untrained_model(root, Plan.load(plan_path), [
        preset("thesis", st, {"network": {"base_features": features}, "patch_size": [patch] * 3}) for st in (1, 2)])


def _run_child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if r.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="KiTS19-layout folder of painted cases")
    ap.add_argument("--plan", help="plan.json (kidneyseg plan)")
    ap.add_argument("--cases", nargs="*", help="case ids (default: all, smallest first)")
    ap.add_argument("--predict", action="store_true", help="also predict and evaluate each case")
    ap.add_argument("--features", type=int, default=32, help="base features of the random-weight model (32)")
    ap.add_argument("--patch", type=int, default=128, help="cubic patch of the random-weight model (128)")
    ap.add_argument("--json", help="write the per-case figures here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"preprocess": child_preprocess, "predict": child_predict}[kind]
        print(json.dumps(fn(*rest)))
        return
    from kidneyseg.io import read_header

    data = Path(args.data)
    cases = args.cases or sorted(p.name for p in data.iterdir() if (p / "imaging.nii.gz").is_file())
    cases = sorted(cases, key=lambda c: __import__("numpy").prod(read_header(data / c / "imaging.nii.gz").shape))
    rows = []
    with tempfile.TemporaryDirectory(prefix="kidneyseg_native_") as tmp:
        model = make_model(Path(tmp) / "model", args.plan, args.features, args.patch) if args.predict else None
        for c in cases:
            r = {"case_id": c, **_run_child("preprocess", str(data / c), args.plan)}
            if model is not None:
                r.update(_run_child("predict", str(data / c), str(model), tmp))
            r["mvox"] = __import__("numpy").prod(r["shape"]) / 1e6
            rows.append(r)
            print(json.dumps(r), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    g = 2 ** 30
    print("| case | shape (z, y, x) | M voxels | load s (CPU s) | stage 1 s | stage 2 s | preprocess CPU s / M vox "
          "| preprocess peak GiB | predict s (CPU s) | predict peak GiB | evaluate s | evaluate peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cpu = r["load_cpu_s"] + r["stage1_cpu_s"] + r["stage2_cpu_s"]
        pred = (f"{r['predict_s']:.0f} ({r['predict_cpu_s']:.0f}) | {r['predict_peak_rss'] / g:.2f} | "
                f"{r['evaluate_s']:.1f} | {r['evaluate_peak_rss'] / g:.2f}") if "predict_s" in r else "- | - | - | -"
        print(f"| {r['case_id']} | {' x '.join(map(str, r['shape']))} | {r['mvox']:.0f} | {r['load_s']:.1f} "
              f"({r['load_cpu_s']:.1f}) | {r['stage1_s']:.1f} | {r['stage2_s']:.1f} | {cpu / r['mvox']:.3f} | "
              f"{r['peak_rss'] / g:.2f} | {pred} |")
    per = [(r["load_cpu_s"] + r["stage1_cpu_s"] + r["stage2_cpu_s"]) / r["mvox"] for r in rows]
    peak = max(max(r["peak_rss"], r.get("predict_peak_rss", 0), r.get("evaluate_peak_rss", 0)) for r in rows)
    largest = rows[-1].get("predict_s")
    print(f"RESULT cases={len(rows)} max_peak_rss_gib={peak / g:.2f} preprocess_cpu_s_per_mvox={min(per):.3f}.."
          f"{max(per):.3f} predict_s={'n/a' if largest is None else round(largest)}")


if __name__ == "__main__":
    main()
