"""Seconds per network window: the predict U-Net's forward in fp32 / bf16 and channels-first / last.

One process, the variants in turns (fp32 channels-first, fp32 channels-last, bf16 channels-first
with autocast casting the float32 weights at every window, bf16 channels-first and channels-last
with the convolution weights cast once as prediction loads them, ``Runtime.prepare_inference_model``;
repeated), medians reported, so a busy machine slows them all alike. This is the per-window cost both sides of ``benchmarks/predict.py`` pay (a case costs
windows x seconds per window), measured without the case's fixed costs; prediction on a CPU runs
the *channels-first* bf16 row (``kidneyseg.runtime``: channels-last norms sum per thread).

    python benchmarks/forward.py                  # 31.8 M U-Net (6 stages, 32-320), patch 64^3, batch 1
    python benchmarks/forward.py --profile        # + a torch.profiler table of each bf16 variant
    python benchmarks/forward.py --quick          # tiny, seconds (used by the tests)

Last line: ``RESULT bf16_vs_fp32=<x> bf16_channels_last_vs_fp32=<y> fp32_s=<s> precision_auto=<p>
weights_cast_once_gain=<g>`` (x, y: fp32 channels-first seconds over the bf16 variant's, weights cast
once; g: bf16 channels-first with the per-window cast over the same with the cast once; ``nan``
where the CPU has no native bf16).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kidneyseg.model import NetworkConfig, build_unet, count_parameters  # noqa: E402
from kidneyseg.runtime import Runtime, cpu_bf16_support, resolve_runtime  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patch", type=int, default=64, help="cubic patch side (default 64, predict.py's)")
    ap.add_argument("--stages", type=int, default=6)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--in-channels", type=int, default=1, help="1: stage 1; 3: stage 2 (image + prior)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of the four variants (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="3 stages, 8 features, patch 16, 2 rounds")
    a = ap.parse_args(argv)
    if a.quick:
        a.patch, a.stages, a.features, a.rounds = 16, 3, 8, 2
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = NetworkConfig(n_stages=a.stages, base_features=a.features, in_channels=a.in_channels,
                        strides=[[1, 1, 1]] + [[2, 2, 2]] * (a.stages - 1))
    net = build_unet(cfg).eval()
    x = torch.randn(1, a.in_channels, a.patch, a.patch, a.patch)
    precisions = ["fp32"] + (["bf16"] if cpu_bf16_support() else [])
    # (precision, channels-last, weights cast once at load)
    variants = [("fp32", False, False), ("fp32", True, False)]
    if "bf16" in precisions:
        variants += [("bf16", False, False), ("bf16", False, True), ("bf16", True, True)]
    runtimes = {v: Runtime(torch.device("cpu"), v[0], v[1]) for v in variants}
    # one network per variant: the cast-once variants hold bf16 convolution weights
    nets = {v: runtimes[v].prepare_inference_model(copy.deepcopy(net)) if v[2] else
            runtimes[v].prepare_model(copy.deepcopy(net)) for v in variants}

    def label(v) -> str:
        layout = "channels_last_3d" if v[1] else "channels-first"
        cast = "" if v[0] == "fp32" else (", weights cast once" if v[2] else ", weights cast per window")
        return f"{v[0]} | {layout}{cast}"

    def run(v) -> float:
        rt = runtimes[v]
        net = nets[v]
        xin = rt.prepare_input(x)
        with torch.inference_mode(), rt.autocast():
            t = time.perf_counter()
            net(xin)
            return time.perf_counter() - t

    for v in variants:  # warm-up
        run(v)
    times = {v: [] for v in variants}
    loads = []
    for _ in range(a.rounds):
        loads.append(os.getloadavg()[0])
        for v in variants:
            times[v].append(run(v))
    loads.append(os.getloadavg()[0])
    med = {v: statistics.median(t) for v, t in times.items()}
    auto = resolve_runtime("cpu", "auto")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} U-Net {count_parameters(net) / 1e6:.1f} M parameters, "
          f"{a.in_channels} input channel(s), patch {a.patch}^3, batch 1, threads {a.threads}, torch {torch.__version__}, "
          f"CPU bf16: {cpu_bf16_support()}; {a.rounds} rounds in turns, load average {min(loads):.1f}-{max(loads):.1f}")
    print("\n| precision | layout | median s / window | runs | fp32 channels-first / this |")
    print("|---|---|---|---|---|")
    base = med[("fp32", False, False)]
    for v in variants:
        print(f"| {label(v)} | {med[v]:.3f} | "
              f"{', '.join(f'{t:.3f}' for t in times[v])} | {base / med[v]:.2f}x |")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        for v in variants[2:]:
            rt = runtimes[v]
            xin = rt.prepare_input(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode(), rt.autocast():
                nets[v](xin)
            print(f"\nProfile of one window, {label(v).replace(' |', ',')} (self time per op):\n")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    nan = float("nan")
    bf, bfl, bfo = med.get(("bf16", False, True)), med.get(("bf16", True, True)), med.get(("bf16", False, False))
    print(f"RESULT bf16_vs_fp32={base / bf if bf else nan:.2f} bf16_channels_last_vs_fp32={base / bfl if bfl else nan:.2f} "
          f"fp32_s={base:.3f} precision_auto={auto.precision} weights_cast_once_gain={bfo / bf if bf else nan:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
