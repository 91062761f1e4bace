"""Training-step time: kidneyseg's residual 3D U-Net against nnU-Net's networks, same run, same device.

Ours: :func:`kidneyseg.model.build_unet` (PM: residual blocks + deep supervision, 6 stages,
32..320 features) trained as :class:`kidneyseg.train.trainer.Trainer` does, with the precision and
memory layout :func:`kidneyseg.runtime.resolve_runtime` picks for training (``auto``: bf16 +
channels_last_3d on a CPU with AMX / AVX-512 BF16 and on CUDA GPUs with bf16, fp16 + GradScaler on
older GPUs, fp32 otherwise), the loss in float32: Generalized Dice + soft surface Dice over 5
deep-supervision scales, SGD momentum 0.99 Nesterov, gradient clipping 12, with the trainer's fused
optimizer step (:mod:`kidneyseg.train.optim`; nnU-Net keeps torch's default, per-tensor on a CPU). A second row runs ours
in fp32 channels-first: the like-for-like comparison with nnU-Net on the CPU.

Anchor: dynamic-network-architectures' PlainConvUNet (nnU-Net's default 3d_fullres topology, the
one in ../shared/bench/gpu_anchor.py) and ResidualEncoderUNet (ResEnc-M), trained with nnU-Net's
defaults: fp16 autocast + GradScaler on CUDA (fp32 on CPU, where nnU-Net disables autocast),
channels-first, Dice + CE (nnunetv2's ``DC_and_CE_loss`` in its ``DeepSupervisionWrapper`` when
importable) with targets downsampled outside the timed step (nnU-Net's loader does that), the same
SGD and clipping.

Also timed: our data side (``PatchSampler`` batch + augmentation on the training device), to show
the loader is not the bottleneck.

Robust to a busy machine: the networks are stepped in turns (ours, ours fp32, nnU-Net, ...,
repeated), each row reports its median, and the 1-minute load average is sampled before every
timed step and printed per row.

    python benchmarks/train_step.py                 # CPU: patch 64^3; CUDA: patch 128^3
    python benchmarks/train_step.py --quick         # seconds, for the test suite
    python benchmarks/train_step.py --profile       # + a torch.profiler table of one step of ours

Last line: ``RESULT speedup_vs_nnunet=<x> device=<cpu or card name> patch=<p> precision=<ours>
fp32_speedup_vs_nnunet=<y>`` (x: ours in its auto precision; y: ours in fp32, both against nnU-Net
as nnU-Net trains on that device).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kidneyseg.model import NetworkConfig, build_unet, count_parameters  # noqa: E402
from kidneyseg.train.losses import DeepSupervisionLoss, LossConfig, SegmentationLoss  # noqa: E402
from kidneyseg.runtime import resolve_runtime  # noqa: E402
from kidneyseg.train.config import OptimizerConfig  # noqa: E402
from kidneyseg.train.optim import build_optimizer, clip_gradients  # noqa: E402

FEATURES = [32, 64, 128, 256, 320, 320]


def nnunet_plain(n_stages=6):
    features = FEATURES[:n_stages]
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    return PlainConvUNet(1, n_stages, features, nn.Conv3d, 3, [1] + [2] * (n_stages - 1), [2] * n_stages, 3,
                         [2] * (n_stages - 1), True, nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None,
                         nn.LeakyReLU, {"inplace": True}, deep_supervision=True)


def nnunet_resenc(n_stages=6):
    features = FEATURES[:n_stages]
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    return ResidualEncoderUNet(1, n_stages, features, nn.Conv3d, 3, [1] + [2] * (n_stages - 1),
                               [1, 3, 4, 6, 6, 6][:n_stages], 3, [1] * (n_stages - 1), True, nn.InstanceNorm3d,
                               {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                               deep_supervision=True)


def nnunet_loss(n_scales):
    """nnU-Net's default: Dice + CE, deep-supervision weights 1/2^i with the lowest scale 0, normalized."""
    w = np.array([1 / 2 ** i for i in range(n_scales)])
    w[-1] = 0
    w = w / w.sum()
    try:
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
        base = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                              weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
        return DeepSupervisionWrapper(base, w), "nnunetv2 DC_and_CE_loss"
    except Exception:  # nnunetv2 not installed: CE as in ../shared/bench/gpu_anchor.py
        def loss(outs, ys):
            return sum(wi * F.cross_entropy(o.float(), y[:, 0].long()) for wi, o, y in zip(w, outs, ys) if wi)
        return loss, "cross-entropy (nnunetv2 not importable)"


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(steps_fns, dev, steps, warm):
    """Median seconds per step of each function, the mean 1-minute load average before its steps and
    every step's seconds, timed in turns (A B C A B C ...) so that a shared, noisy machine slows every
    contender alike."""
    for _ in range(warm):
        for f in steps_fns:
            f()
    sync(dev)
    times = [[] for _ in steps_fns]
    loads = [[] for _ in steps_fns]
    for _ in range(steps):
        for i, f in enumerate(steps_fns):
            loads[i].append(os.getloadavg()[0])
            t = time.perf_counter()
            f()
            sync(dev)
            times[i].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times], [float(np.mean(v)) for v in loads], times


def sgd_step(net, opt, scaler, forward_loss, clip=None):
    """One training step as both trainers take it: (scaled) backward, unscale, clip at 12, step.

    ``clip``: ours passes :func:`kidneyseg.train.optim.clip_gradients`; nnU-Net clips with torch's
    default ``clip_grad_norm_``."""
    clip = clip or torch.nn.utils.clip_grad_norm_

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward_loss()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        clip(net.parameters(), 12)
        scaler.step(opt)
        scaler.update()

    return step


def setup_ours(dev, patch, batch, precision, n_stages=6):
    """One training step of ours as the Trainer takes it, in the runtime ``precision`` resolves to."""
    rt = resolve_runtime(dev, precision, "auto", training=True)
    torch.manual_seed(0)
    net = rt.prepare_model(build_unet(NetworkConfig(n_stages=n_stages,
                                                    strides=[[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1))))
    opt = build_optimizer(net.parameters(), OptimizerConfig(lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5))
    scaler = torch.amp.GradScaler(dev.type, enabled=rt.grad_scaler)
    loss_fn = DeepSupervisionLoss(SegmentationLoss(LossConfig()))
    x = rt.prepare_input(torch.randn(batch, 1, *patch, device=dev))
    y = torch.randint(0, 3, (batch, 1, *patch), device=dev)

    def forward_loss():  # ours: the loss outside autocast, in fp32 (as the trainer does)
        with rt.autocast():
            out = net(x)
        return loss_fn(out, y)

    layout = "channels_last_3d" if rt.channels_last else "channels-first"
    return sgd_step(net, opt, scaler, forward_loss, clip_gradients), count_parameters(net), \
        f"{rt.precision}{' +scaler' if rt.grad_scaler else ''}", layout, rt


def setup_nnunet(build, dev, patch, batch, n_stages=6):
    torch.manual_seed(0)
    net = build(n_stages).to(dev)
    fp16 = dev.type == "cuda"
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scaler = torch.amp.GradScaler(dev.type, enabled=fp16)
    x = torch.randn(batch, 1, *patch, device=dev)
    y = torch.randint(0, 3, (batch, 1, *patch), device=dev)
    with torch.no_grad():
        shapes = [o.shape[2:] for o in net(x[:1])]
    ys = [F.interpolate(y.float(), size=s, mode="nearest").long() for s in shapes]  # loader-side in nnU-Net
    loss_fn, loss_name = nnunet_loss(len(shapes))

    def forward_loss():  # nnU-Net computes its loss inside autocast
        with torch.autocast(dev.type, dtype=torch.float16, enabled=fp16):
            return loss_fn(net(x), ys)

    return sgd_step(net, opt, scaler, forward_loss), count_parameters(net), ("fp16 +scaler" if fp16 else "float32"), loss_name


def bench_loader(dev, patch, batch, n=4):
    """Seconds per batch of our PatchSampler (+ augmentation on ``dev``) on a synthetic case."""
    from kidneyseg.train.augment import AugmentConfig, augment_batch, sample_size_for
    from kidneyseg.train.sampler import PatchSampler
    rng = np.random.default_rng(0)
    shape = tuple(int(p * 1.5) for p in patch)
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(s // 4, s // 2) for s in shape)] = 1
    case = types.SimpleNamespace(case_id="x", image=rng.standard_normal(shape, dtype=np.float32), label=label)
    acfg = AugmentConfig()
    size = sample_size_for(patch, acfg)
    sampler = PatchSampler([case], patch, batch, seed=0, sample_size=size, num_workers=0, progress=False)
    g = torch.Generator(dev).manual_seed(0)
    sampler.batch(0)
    t = time.perf_counter()
    for k in range(n):
        img, lab = sampler.batch(k + 1)
        img, lab = augment_batch(img.to(dev), lab.to(dev), acfg, g, out_shape=patch)
    sync(dev)
    return (time.perf_counter() - t) / n


def profile_step(step, label, rows=25):
    """Print where one training step spends its time (torch.profiler, self CPU time per op)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        step()
    print(f"\nProfile of one step, {label} (self time per op, top {rows}):\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    ap.add_argument("--patch", type=int, help="cubic patch side (default 128 on CUDA, 64 on CPU)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, help="timed steps per network, in turns (default 20 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 5 CUDA, 1 CPU)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--precision", default="auto", help="ours: auto (default), bf16, fp16 or fp32")
    ap.add_argument("--no-resenc", action="store_true", help="skip nnU-Net's ResEnc-M")
    ap.add_argument("--no-fp32", action="store_true", help="skip the row of ours in fp32")
    ap.add_argument("--stages", type=int, default=6, help="U-Net stages of every network (default 6, nnU-Net's)")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table of one step of ours")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run for the tests: 5 stages, patch 32, two steps each, no ResEnc")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    stages = 5 if args.quick else args.stages
    patch_side = args.patch or (32 if args.quick else (128 if cuda else 64))
    steps = args.steps or (2 if args.quick else (20 if cuda else 3))
    warm = args.warmup if args.warmup is not None else (0 if args.quick and not cuda else (5 if cuda else 1))
    patch = (patch_side,) * 3
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"

    entries = []  # (label, step, params, precision, layout, loss)
    f_ours, p_ours, prec, layout, rt = setup_ours(dev, patch, args.batch, args.precision, stages)
    entries.append(["kidneyseg PM (residual + DS)", f_ours, p_ours, prec, layout, "GD + soft surface Dice"])
    if not args.no_fp32 and rt.precision != "fp32":
        f, _, prec32, layout32, _ = setup_ours(dev, patch, args.batch, "fp32", stages)
        entries.append(["kidneyseg PM, fp32", f, p_ours, prec32, layout32, "GD + soft surface Dice"])
    f, p_plain, prec_n, loss_name = setup_nnunet(nnunet_plain, dev, patch, args.batch, stages)
    entries.append(["nnU-Net PlainConvUNet", f, p_plain, prec_n, "channels-first", loss_name])
    if not args.no_resenc and not args.quick:
        f, p_res, _, _ = setup_nnunet(nnunet_resenc, dev, patch, args.batch, stages)
        entries.append(["nnU-Net ResEnc-M", f, p_res, prec_n, "channels-first", loss_name])
    medians, loads, every = time_interleaved([e[1] for e in entries], dev, steps, warm)
    labels = [e[0] for e in entries]
    t_ours, t_plain = medians[0], medians[labels.index("nnU-Net PlainConvUNet")]
    t_fp32 = medians[labels.index("kidneyseg PM, fp32")] if "kidneyseg PM, fp32" in labels else \
        (t_ours if rt.precision == "fp32" else float("nan"))
    t_load = bench_loader(dev, patch, args.batch, n=1 if args.quick else 4)

    print(f"\nTraining step, device {name}, patch {patch_side}^3, batch {args.batch}, {stages} stages, "
          f"{steps} timed steps each (median; the networks in turns) after {warm} warm-up, torch {torch.__version__}, "
          f"threads {args.threads}; ours: {rt.describe()}\n")
    print("| network | parameters | precision | layout | loss | s / step | nnU-Net Plain s / ours s | load avg | every step (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e, t, load, ts in zip(entries, medians, loads, every):
        print(f"| {e[0]} | {e[2]:,} | {e[3]} | {e[4]} | {e[5]} | {t:.3f} | {t_plain / t:.2f}x | {load:.1f} | "
              f"{', '.join(f'{v:.2f}' for v in ts)} |")
    # the same round's steps ran back to back: their ratio is paired, robust to a load that drifts
    paired = [p / o for p, o in zip(every[labels.index("nnU-Net PlainConvUNet")], every[0])]
    print(f"\nPer round, nnU-Net Plain s / ours s: {', '.join(f'{r:.2f}' for r in paired)} "
          f"(median {float(np.median(paired)):.2f}, range {min(paired):.2f}-{max(paired):.2f})")
    print(f"\nOur loader (PatchSampler + augment_batch on {dev.type}): {t_load:.3f} s per batch "
          f"= {t_load / t_ours:.2f} of a step{' (runs in a background thread while the GPU trains)' if cuda else ''}")
    print(f"Parameters: ours {p_ours:,} vs PlainConvUNet {p_plain:,} ({p_ours / p_plain:.3f}x)")
    if args.profile:
        profile_step(f_ours, f"ours, {prec}, {layout}")
    print(f"RESULT speedup_vs_nnunet={t_plain / t_ours:.3f} device={name.replace(' ', '_')} patch={patch_side} "
          f"precision={rt.precision} fp32_speedup_vs_nnunet={t_plain / t_fp32:.3f}")


if __name__ == "__main__":
    main()
