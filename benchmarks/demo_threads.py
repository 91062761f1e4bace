"""Seconds per training step of the demo network at 1 and 2 torch threads, bf16 and fp32.

Why the demo trains independent jobs side by side with one thread each (docs/training.md, "The demo
recipe"): on a small CPU shared with other work, a second OpenMP thread that waits for a busy core
stalls every small operation of a tiny network. Prints the load average beside each row (absolute
seconds on a shared machine are noisy; compare rows of one run).

    python benchmarks/demo_threads.py [--steps 5] [--features 8]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from kidneyseg.model.unet import build_unet
from kidneyseg.runtime import cpu_bf16_support, resolve_runtime
from kidneyseg.train.config import preset


def step_seconds(threads: int, precision: str, patch: list[int], features: int, steps: int) -> float:
    """Median seconds of ``steps`` AdamW steps (after one warm-up) of the demo stage-2 network, batch 2."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = preset("demo", 2, {"patch_size": patch, "precision": precision, "network": {"base_features": features}})
    rt = resolve_runtime("cpu", precision, "auto", training=True)
    net = build_unet(cfg.network)
    x = torch.randn(2, cfg.network.in_channels, *patch)
    if rt.channels_last:
        net, x = net.to(memory_format=torch.channels_last_3d), x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with rt.autocast():
            out = net(x)
        (out[0] if isinstance(out, (list, tuple)) else out).float().mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--features", type=int, default=8)
    args = ap.parse_args()
    precisions = ["bf16", "fp32"] if cpu_bf16_support() else ["fp32"]
    print("threads precision patch s/step load1")
    for threads in (1, 2):
        for precision in precisions:
            for patch in ([32, 48, 48], [32, 64, 64]):
                s = step_seconds(threads, precision, patch, args.features, args.steps)
                print(threads, precision, "x".join(map(str, patch)), f"{s:.3f}", f"{os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
