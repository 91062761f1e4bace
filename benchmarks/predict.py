"""Whole-case prediction on CPU: kidneyseg's cascade (file -> file) against nnU-Net's sliding window.

Both sides use the **same network architecture, weights scheme and patch size**: kidneyseg's U-Net
with random weights (``--features``/``--stages``; by default 6 stages of 32-320 features, 31.8 M
parameters, nnU-Net's default size). The synthetic KiTS19-like CT comes from the anchor scripts
(``../shared/bench/make_volume.py``).

Scale: on a CPU a case costs (network windows) x (seconds per window), and the ratio is decided by
the window counts. The default runs the whole geometry on a grid 2x coarser than the thesis's
(2.0 x 1.56 x 1.56 mm) with a 64^3 patch, i.e. the same millimetres as a 128^3 patch on the thesis's
1.0 x 0.78 x 0.78 mm grid: the same window counts as the real-scale run at 1/8 of the seconds per
window. The fixed costs (reading, resampling and writing the full-resolution CT) do not shrink, so
this scale-down is unfavourable to kidneyseg (the anchor side times the sliding window only).
``benchmarks/windows.py`` counts both sides' windows on the 210 real KiTS19 geometries.

* **kidneyseg**: ``predict_path`` on the ``.nii.gz`` file -> label ``.nii.gz`` in the precision
  ``--precision auto`` picks (bf16 on a CPU with AMX / AVX-512 BF16; see ``kidneyseg.runtime``), and
  again in fp32 (the like-for-like row, nnU-Net predicts in fp32 on a CPU): load, normalize,
  stage 1 at ``--stage1-spacing``, ROI box of ``--box-mm`` around the stage-1 foreground, stage 2 at
  the target spacing with the prior channels, labels back, post-processing, atomic write.
  Random weights predict random foreground, so the ROI box is centred wherever that lands: its
  size, not its position, sets the cost.
* **nnU-Net**: ``nnUNetPredictor.predict_sliding_window_return_logits`` (Gaussian, step 0.5, no
  mirroring, CPU) over the *whole* volume normalized and resampled to the target spacing (the
  resampling is done beforehand with kidneyseg's resampler and is not timed, nor is nnU-Net's export
  of the logits back to full resolution: the anchor side is timed generously).

Each run is a fresh process; peak RSS is that process's VmHWM. TTA is off on both sides. The runs
alternate (ours, ours fp32, nnU-Net, ours, ...; ``--repeat`` rounds, default 2), every figure is
the median of its side's runs, and each run's 1-minute load average (mean of its start and end) is
printed, so that a busy machine shows.

Accuracy parity: random weights prove nothing about bf16 (near-tied scores flip under any
rounding), so the bf16-vs-fp32 Dice difference is measured on a cascade trained on phantoms
(``benchmarks/_parity.py``; trained once and cached in ``--parity-cache``, a few minutes).

Usage:
    python benchmarks/predict.py                 # (150, 512, 512) @ (3.0, 0.78, 0.78) mm CT, 2x-coarse grid (~8 min)
    python benchmarks/predict.py --quick         # tiny, < 60 s (used by the tests)
    python benchmarks/predict.py --only ours --shape 1059,512,512 --spacing 0.8,0.78,0.78   # memory check

The last line is ``RESULT speedup_vs_nnunet=<x> seconds_per_case=<s> peak_rss_gib=<g>
fp32_speedup_vs_nnunet=<y> precision=<chosen> bf16_dice_delta=<max abs>`` (x: ours in its auto
precision; y: ours in fp32; the delta: the largest kidney or tumor Dice difference, bf16 against
fp32, over the held-out phantoms; ``nan`` where not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import SHARED_BENCH as BENCH  # noqa: E402  (KIDNEYSEG_SHARED_BENCH, default ../shared/bench)
sys.path.insert(0, str(ROOT))

#: the thesis's target spacing (z, y, x mm); the benchmark's default runs on a 2x coarser grid
THESIS_TARGET = (1.0, 0.78, 0.78)
#: the anchor's intensity statistics (bench_sliding_window.make_input)
INTENSITY = dict(clip_low_hu=-79.0, clip_high_hu=304.0, mean_hu=100.0, std_hu=75.0)


def _ints(s):
    return tuple(int(v) for v in s.split(","))


def _floats(s):
    return tuple(float(v) for v in s.split(","))


def peak_rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 ** 2
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def network_config(a):
    from kidneyseg.model.unet import NetworkConfig
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (a.stages - 1)
    return NetworkConfig(n_stages=a.stages, base_features=a.features, strides=strides)


def make_case(a, work: Path) -> Path:
    """The synthetic CT as a KiTS19-style .nii.gz (or .nii with --uncompressed)."""
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(BENCH))
    import make_volume  # noqa: E402  (the anchor's volume generator)

    img, _ = make_volume.make_volume(a.shape, a.spacing, seed=0)
    dz, dy, dx = a.spacing
    aff = np.array([[0, 0, -dx, 0], [0, -dy, 0, 0], [-dz, 0, 0, 0], [0, 0, 0, 1]], float)
    path = work / ("imaging.nii" if a.uncompressed else "imaging.nii.gz")
    nib.save(nib.Nifti1Image(img, aff), str(path))
    return path


def make_model(a, work: Path) -> Path:
    from kidneyseg.preprocess.plan import Plan
    from kidneyseg.train.checkpoint import write_untrained_model
    from kidneyseg.train.config import TrainConfig

    plan = Plan(**INTENSITY, target_spacing=a.target_spacing, stage1_spacing=a.stage1_spacing, box_size_mm=a.box_mm)
    return write_untrained_model(work / "model", plan, [
        TrainConfig(stage=st, network=network_config(a), patch_size=list(a.patch)) for st in (1, 2)])


class Counter:
    """Wraps a network: counts windows and time spent in forward()."""

    def __init__(self, net):
        self.net, self.windows, self.fwd_s = net, 0, 0.0

    def __call__(self, x):
        t0 = time.perf_counter()
        y = self.net(x)
        self.fwd_s += time.perf_counter() - t0
        self.windows += int(x.shape[0])
        return y

    def __getattr__(self, name):  # everything else (parameters(), config) is the network's
        return getattr(self.__dict__["net"], name)


def worker_ours(a, case: Path, model_dir: Path, precision: str = "auto") -> dict:
    import torch

    from kidneyseg.infer import cascade, predict

    torch.set_num_threads(a.threads)
    counters = []
    orig_load = cascade.CascadeModel.load.__func__

    def load(cls, *args, **kw):  # count windows of both stages
        m = orig_load(cls, *args, **kw)
        m.stage1, m.stage2 = Counter(m.stage1), Counter(m.stage2)
        counters.extend([m.stage1, m.stage2])
        return m

    cascade.CascadeModel.load = classmethod(load)
    out = case.parent / f"pred_{precision}.nii.gz"
    chosen = []

    def log(s):
        if s.startswith("runtime:"):
            chosen.append(s)
        print("    " + s, flush=True)

    t0 = time.perf_counter()
    res = predict.predict_path(case, out, model_dir, overlap=0.5, overwrite=True, progress=False, log=log,
                               precision=precision)
    dt = time.perf_counter() - t0
    r = res[0]
    prec = chosen[0].split("precision ")[1].split()[0] if chosen else "?"
    return {"method": "kidneyseg" if precision == "auto" else f"kidneyseg {precision}", "precision": prec,
            "seconds": dt, "windows": sum(c.windows for c in counters),
            "forward_s": sum(c.fwd_s for c in counters), "peak_rss_gib": peak_rss_gib(),
            "stages": {k: round(v, 2) for k, v in r.items() if isinstance(v, float)}}


def worker_nnunet(a, case: Path, model_dir: Path) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(BENCH))
    import bench_sliding_window as anchor  # noqa: E402
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from kidneyseg.io import load_volume
    from kidneyseg.model.unet import build_unet
    from kidneyseg.preprocess.intensity import normalize
    from kidneyseg.preprocess.resample import resample_image

    torch.set_num_threads(a.threads)
    vol = load_volume(case)
    x = normalize(vol.array, **{k.replace("_hu", ""): v for k, v in INTENSITY.items()}, out=vol.array)
    x = resample_image(x, vol.spacing, a.target_spacing)
    del vol
    plans = anchor.build_plans(a.patch, a.target_spacing)
    plans["configurations"]["3d_fullres"]["patch_size"] = list(a.patch)  # exactly our patch
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    dataset_json = {"labels": anchor.LABELS, "channel_names": {"0": "CT"}, "numTraining": 0,
                    "file_ending": ".nii.gz"}
    torch.manual_seed(1)
    net = build_unet(network_config(a)).eval()  # the same architecture as our stages (1 input channel)
    counter = Counter(net)

    class Wrap(torch.nn.Module):  # nnUNetPredictor calls .to()/.eval() on its network
        def __init__(self):
            super().__init__()
            self.inner = net

        def forward(self, t):
            return counter(t)

    pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                           perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                           allow_tqdm=False)
    pred.manual_initialization(Wrap(), pm, cm, None, dataset_json, "nnUNetTrainer",
                               inference_allowed_mirroring_axes=(0, 1, 2))
    xt = torch.from_numpy(np.ascontiguousarray(x))[None]
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits = pred.predict_sliding_window_return_logits(xt)
        dt = time.perf_counter() - t0
    return {"method": "nnunet", "precision": "fp32", "seconds": dt, "windows": counter.windows,
            "forward_s": counter.fwd_s,
            "peak_rss_gib": peak_rss_gib(), "resampled_shape": list(x.shape),
            "logits": f"{tuple(logits.shape)} {logits.dtype}"}


def projected_windows(shape, spacing, patch, target, stage1, box_mm, overlap=0.5) -> tuple[int, int]:
    """Windows each side needs for a case, from geometry alone: (kidneyseg stage 1 + ROI box, nnU-Net whole volume).

    Stage 1 is counted over the whole field of view: an upper bound, as predict runs it on the body's box.

    Assumes the box lies inside the volume; volumes smaller than a patch count one window per axis.
    """
    import math

    from kidneyseg.infer.sliding_window import window_starts

    def count(vox):
        return math.prod(len(window_starts(max(v, p), p, overlap)) for v, p in zip(vox, patch))

    fov = [n * s for n, s in zip(shape, spacing)]
    whole = [max(1, round(f / t)) for f, t in zip(fov, target)]
    coarse = [max(1, round(f / t)) for f, t in zip(fov, stage1)]
    box = [max(1, round(min(b, f) / t)) for b, f, t in zip(box_mm, fov, target)]
    return count(coarse) + count(box), count(whole)


SIDES = {"ours": "file -> file, whole cascade, auto precision", "ours_fp32": "file -> file, whole cascade, fp32",
         "nnunet": "sliding window over the resampled volume only"}


def _median(runs: list[dict], key: str) -> float:
    import statistics

    return float(statistics.median(r[key] for r in runs)) if runs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=_ints, default=(150, 512, 512), help="CT z,y,x voxels")
    ap.add_argument("--spacing", type=_floats, default=(3.0, 0.78, 0.78), help="CT spacing z,y,x mm")
    ap.add_argument("--patch", type=_ints, default=(64, 64, 64),
                    help="patch z,y,x (both sides; default = 128^3 at the thesis grid, scaled 2x down)")
    ap.add_argument("--features", type=int, default=32, help="U-Net base features (both sides)")
    ap.add_argument("--stages", type=int, default=6, help="U-Net stages (both sides)")
    ap.add_argument("--target-spacing", type=_floats, default=(2.0, 1.56, 1.56),
                    help="stage-2 / nnU-Net spacing z,y,x mm (default: 2x the thesis's 1.0,0.78,0.78 so the "
                         "run fits a 2-core CPU; the window ratio at the thesis grid is printed too)")
    ap.add_argument("--stage1-spacing", type=_floats, default=(5.0, 3.9, 3.9),
                    help="stage-1 spacing z,y,x mm (default 2.5x the target)")
    ap.add_argument("--box-mm", type=_floats, default=(216.0, 180.0, 296.0),
                    help="ROI box z,y,x mm (default: the all-foreground box of the 210 KiTS19 labels)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["ours", "nnunet"], help="run one side only")
    ap.add_argument("--repeat", type=int, default=2,
                    help="rounds of runs (ours, ours fp32, nnU-Net), alternating; medians are reported (default 2)")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 runs of ours")
    ap.add_argument("--no-parity", action="store_true", help="skip the bf16-vs-fp32 Dice check (trained model)")
    ap.add_argument("--parity-cache", default=str(Path(tempfile.gettempdir()) / "kidneyseg-parity-model"),
                    help="where the phantom-trained parity model is kept between runs")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a test run (< 60 s; no parity check)")
    ap.add_argument("--uncompressed", action="store_true", help="write the CT as .nii (faster to make)")
    ap.add_argument("--worker", choices=["ours", "nnunet"], help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick and not a.worker:
        a.shape, a.spacing, a.patch, a.features, a.stages = (40, 192, 192), (3.0, 0.78, 0.78), (16, 32, 32), 4, 3
        a.box_mm = (60.0, 60.0, 60.0)
        a.no_parity = True
    if a.worker:
        work = Path(a.work)
        case, model = next(work.glob("imaging.nii*")), work / "model"
        r = worker_ours(a, case, model, a.precision) if a.worker == "ours" else worker_nnunet(a, case, model)
        print("RESULT_JSON " + json.dumps(r), flush=True)
        return 0

    from kidneyseg.runtime import resolve_runtime

    auto = resolve_runtime("cpu", "auto")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} host={platform.node()} cpus={os.cpu_count()} threads={a.threads} "
          f"shape={a.shape} spacing={a.spacing} patch={a.patch} features={a.features} stages={a.stages} "
          f"box_mm={a.box_mm} target={a.target_spacing} stage1={a.stage1_spacing} (machine shared with other jobs)",
          flush=True)
    print(f"# ours, auto: {auto.describe()}", flush=True)
    sides = ["ours", "nnunet"] if not a.only else [a.only]
    if a.only != "nnunet" and not a.no_fp32 and auto.precision != "fp32":
        sides.insert(1, "ours_fp32")
    results: dict[str, list[dict]] = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory(prefix="kidneyseg-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        make_case(a, work)
        make_model(a, work)
        from kidneyseg.model.unet import build_unet
        n_par = sum(p.numel() for p in build_unet(network_config(a)).parameters())
        print(f"# network (both sides): {n_par / 1e6:.1f} M parameters, patch {a.patch}", flush=True)
        print(f"# synthetic case and random-weight model written in {time.perf_counter() - t0:.1f} s", flush=True)
        # sides alternate (ours, ours fp32, nnunet, ours, ...) so load from other jobs hits all alike
        for side in [s for _ in range(a.repeat) for s in sides]:
            csv = lambda v: ",".join(str(x) for x in v)  # noqa: E731
            cmd = [sys.executable, __file__, "--worker", "nnunet" if side == "nnunet" else "ours", "--work", str(work),
                   "--shape", csv(a.shape), "--spacing", csv(a.spacing), "--patch", csv(a.patch),
                   "--features", str(a.features), "--stages", str(a.stages), "--stage1-spacing", csv(a.stage1_spacing),
                   "--target-spacing", csv(a.target_spacing), "--box-mm", csv(a.box_mm), "--threads", str(a.threads),
                   "--precision", "fp32" if side == "ours_fp32" else "auto"]
            load0 = os.getloadavg()[0]
            p = subprocess.run(cmd, capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT_JSON ")]
            for ln in p.stdout.splitlines():
                if not ln.startswith("RESULT_JSON "):
                    print(ln)
            if p.returncode != 0 or not lines:
                if side == "nnunet" and "No module named 'nnunetv2'" in p.stderr:
                    print("# nnunetv2 is not installed: anchor side skipped")
                    continue
                print(p.stderr[-3000:], file=sys.stderr)
                print(f"RESULT failed side={side} rc={p.returncode}")
                return 1
            r = json.loads(lines[-1][len("RESULT_JSON "):])
            r["load_avg"] = round((load0 + os.getloadavg()[0]) / 2, 1)
            results[side].append(r)
            print(f"# {side}: {r['seconds']:.1f} s, load average {r['load_avg']}", flush=True)

    print("\n| method | precision | what is timed | windows | seconds | in forward() s | s / window | peak RSS GiB "
          "| load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for side, what in SIDES.items():
        for r in results[side]:
            print(f"| {r['method']} | {r['precision']} | {what} | {r['windows']} | {r['seconds']:.1f} | "
                  f"{r['forward_s']:.1f} | {r['forward_s'] / max(r['windows'], 1):.2f} | {r['peak_rss_gib']:.2f} "
                  f"| {r['load_avg']} |")
    print("\n| side | runs | median seconds | median s / window | mean load avg |")
    print("|---|---|---|---|---|")
    for side, runs in results.items():
        if runs:
            spw = _median([{"v": r["forward_s"] / max(r["windows"], 1)} for r in runs], "v")
            print(f"| {side} | {len(runs)} | {_median(runs, 'seconds'):.1f} | {spw:.3f} "
                  f"| {sum(r['load_avg'] for r in runs) / len(runs):.1f} |")
    if results["ours"]:
        print("\nkidneyseg stages (s): " + ", ".join(f"{k} {v}" for k, v in results["ours"][-1]["stages"].items()))
    if results["nnunet"]:
        r = results["nnunet"][-1]
        print(f"nnU-Net resampled volume: {tuple(r['resampled_shape'])}, logits {r['logits']}")
    ours_w, nn_w = projected_windows(a.shape, a.spacing, a.patch, a.target_spacing, a.stage1_spacing, a.box_mm)
    # the same millimetres at the thesis's grid: the patch scaled by this run's coarsening
    t_patch = tuple(int(round(p * t / th)) for p, t, th in zip(a.patch, a.target_spacing, THESIS_TARGET))
    t_ours, t_nn = projected_windows(a.shape, a.spacing, t_patch, THESIS_TARGET,
                                     tuple(2.5 * t for t in THESIS_TARGET), a.box_mm)
    print(f"windows from geometry, stage 1 over the whole field of view (predict runs it on the body's box, "
          f"fewer): this run {ours_w} vs {nn_w} (ratio {nn_w / ours_w:.2f}); at the thesis's {THESIS_TARGET} mm "
          f"grid with patch {t_patch}: {t_ours} vs {t_nn} (ratio {t_nn / t_ours:.2f})")
    nn_s = _median(results["nnunet"], "seconds")
    speed = nn_s / _median(results["ours"], "seconds")
    fp32_runs = results["ours_fp32"] or (results["ours"] if auto.precision == "fp32" else [])
    speed32 = nn_s / _median(fp32_runs, "seconds")
    if results["ours"] and results["nnunet"]:
        # the same ratio with both sides charged nnU-Net's seconds per window (load-insensitive)
        spw = _median(results["nnunet"], "forward_s") / _median(results["nnunet"], "windows")
        nn = _median(results["nnunet"], "windows") * spw + nn_s - _median(results["nnunet"], "forward_s")
        ours = (_median(results["ours"], "windows") * spw + _median(results["ours"], "seconds")
                - _median(results["ours"], "forward_s"))
        print(f"speedup at equal seconds per window ({spw:.2f} s, nnU-Net's, fp32): {nn / ours:.2f}")
        ours_spw = _median(results["ours"], "forward_s") / _median(results["ours"], "windows")
        line = f"seconds per window: nnU-Net fp32 {spw:.3f}, ours {auto.precision} {ours_spw:.3f} ({spw / ours_spw:.2f}x)"
        if fp32_runs:
            line += f", ours fp32 {_median(fp32_runs, 'forward_s') / _median(fp32_runs, 'windows'):.3f}"
        print(line)

    delta = float("nan")
    if not a.no_parity and auto.precision != "fp32":
        import _parity

        model_dir, manifest = _parity.trained_phantom_cascade(Path(a.parity_cache))
        with tempfile.TemporaryDirectory(prefix="kidneyseg-parity-") as tmp:
            par = _parity.precision_parity(model_dir, manifest, Path(tmp), ("fp32", auto.precision))
        print(f"\nAccuracy parity, a cascade trained on phantoms, held-out cases predicted in fp32 and "
              f"{auto.precision}:\n")
        print(_parity.table(par))
        print(f"\nlargest |Dice difference|: kidney {par['kidney_delta']:.4f}, tumor {par['tumor_delta']:.4f}")
        delta = max(par["kidney_delta"], par["tumor_delta"])
    elif auto.precision == "fp32":
        print("# this CPU has no native bf16: ours runs fp32, no parity to check")
    peak = max((r["peak_rss_gib"] for r in results["ours"]), default=float("nan"))
    print(f"RESULT speedup_vs_nnunet={speed:.2f} seconds_per_case={_median(results['ours'], 'seconds'):.1f} "
          f"peak_rss_gib={peak:.2f} fp32_speedup_vs_nnunet={speed32:.2f} precision={auto.precision} "
          f"bf16_dice_delta={delta:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
