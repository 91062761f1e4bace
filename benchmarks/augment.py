"""Augmentation throughput on CPU: our batched torch augmentation against per-sample baselines.

Rows, all in the same run, on the same input (a batch of ``--batch`` patches read from a larger
sample, ``sample_size_for(patch)``, so rotations do not pull in padding):

* ``ours spatial``: :func:`kidneyseg.train.augment.augment_batch` with rotation (all axes, +-30
  degrees) and scaling (0.7-1.4) applied to *every* sample, nothing else.
* ``scipy spatial``: the same affine per sample with ``scipy.ndimage.affine_transform``, order 1
  for the image and order 0 for the label (single-threaded, like nnU-Net's CPU workers).
* ``ours default``: ``augment_batch`` with the default (nnU-Net-like) probabilities, every transform
  enabled: what a training step pays on average.
* ``nnU-Net default`` (unless ``--no-nnunet`` or ``--quick``): nnU-Net v2's own
  ``nnUNetTrainer.get_training_transforms`` pipeline, one sample at a time, as its data-loader
  workers run it.

The methods take turns call by call (fair under background load); medians are reported, and
means for the random mixtures. The last line is
``RESULT patches_per_s=<ours spatial> speedup_vs_scipy=<scipy time / ours> patch=<p>``.

Usage:
    python benchmarks/augment.py             # 128^3 patches, batch 2
    python benchmarks/augment.py --quick     # 64^3, fewer repeats (< 30 s)
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import ndimage

from kidneyseg.train.augment import AugmentConfig, augment_batch, sample_size_for

SPATIAL = dict(p_rotation=1.0, p_scaling=1.0, p_noise=0.0, p_blur=0.0, p_brightness=0.0, p_contrast=0.0,
               p_low_resolution=0.0, p_gamma=0.0, p_gamma_inverted=0.0, p_mirror=0.0)


def make_batch(batch: int, size, seed: int = 0):
    """A smooth random CT-like batch [B, 1, *size] and a blob label [B, 1, *size] in {0, 1, 2} (uint8)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 1, *[max(2, s // 8) for s in size], generator=g)
    image = torch.nn.functional.interpolate(coarse, size=tuple(size), mode="trilinear", align_corners=False)
    label = (image > 0.3).to(torch.uint8) + (image > 1.0).to(torch.uint8)  # uint8, as the cache stores it
    image = image + 0.1 * torch.randn(image.shape, generator=g)
    return image.contiguous(), label.contiguous()


def draw_matrices(n: int, cfg: AugmentConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Per-sample (z, y, x) affine matrices: rotation about the three axes divided by a zoom."""
    out = []
    for _ in range(n):
        a = np.radians(rng.uniform(*cfg.rotation_deg, size=3))
        cz, sz, cy, sy, cx, sx = np.cos(a[0]), np.sin(a[0]), np.cos(a[1]), np.sin(a[1]), np.cos(a[2]), np.sin(a[2])
        rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
        out.append(rx @ ry @ rz / rng.uniform(*cfg.scaling_range))
    return out


def scipy_spatial(image: np.ndarray, label: np.ndarray, matrices, patch) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample baseline: ndimage.affine_transform, order 1 image / order 0 label, centered."""
    b = image.shape[0]
    out_i = np.empty((b, 1, *patch), np.float32)
    out_l = np.empty((b, 1, *patch), label.dtype)
    c_in = (np.array(image.shape[2:]) - 1) / 2
    c_out = (np.array(patch) - 1) / 2
    for i in range(b):
        m = matrices[i]
        offset = c_in - m @ c_out
        out_i[i, 0] = ndimage.affine_transform(image[i, 0], m, offset, output_shape=tuple(patch), order=1,
                                               mode="nearest")
        out_l[i, 0] = ndimage.affine_transform(label[i, 0], m, offset, output_shape=tuple(patch), order=0,
                                               mode="constant", cval=0)
    return out_i, out_l


def nnunet_pipeline(patch):
    """nnU-Net v2's default training transforms (no deep supervision), or None if not installed."""
    try:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    except Exception as exc:  # noqa: BLE001 - any import problem just drops the row
        print(f"(nnU-Net row skipped: {type(exc).__name__}: {exc})")
        return None
    rot = (-30 / 360 * 2 * math.pi, 30 / 360 * 2 * math.pi)
    return nnUNetTrainer.get_training_transforms(tuple(patch), rot, None, (0, 1, 2), False)


def timed_interleaved(methods: dict, repeats: int) -> dict:
    """(median, mean) seconds per call of each method; one warm-up each, then the methods take turns.

    Taking turns (ours, scipy, ours, scipy, ...) exposes every method to the same background load
    on a shared machine, so the ratios mean more than back-to-back blocks would.
    """
    times = {name: [] for name in methods}
    for fn in methods.values():
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(t)), float(np.mean(t))) for name, t in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patch", type=int, default=128, help="cubic patch side in voxels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per method (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="64^3, 3 repeats, no nnU-Net row")
    parser.add_argument("--no-nnunet", action="store_true", help="skip nnU-Net's pipeline")
    args = parser.parse_args(argv)
    if args.quick:
        args.patch, args.repeat, args.no_nnunet = 64, 3, True
    torch.set_num_threads(args.threads)
    patch = (args.patch,) * 3
    spatial_cfg = AugmentConfig(**SPATIAL)
    default_cfg = AugmentConfig()
    size = sample_size_for(patch, default_cfg)
    image, label = make_batch(args.batch, size)
    image_np, label_np = image.numpy(), label.numpy()
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    print(f"patch {patch}, sample {size}, batch {args.batch}, torch threads {args.threads}, "
          f"repeats {args.repeat}")

    methods = {
        "ours spatial (rotation + scaling on every sample)":
            lambda: augment_batch(image, label, spatial_cfg, g, out_shape=patch),
        "scipy spatial (affine_transform o1 image / o0 label, per sample)":
            lambda: scipy_spatial(image_np, label_np, draw_matrices(args.batch, spatial_cfg, rng), patch),
        "ours default (nnU-Net-like probabilities, all transforms)":
            lambda: augment_batch(image, label, default_cfg, g, out_shape=patch),
    }
    if not args.no_nnunet:
        pipeline = nnunet_pipeline(patch)
        if pipeline is not None:
            seg = label.to(torch.int16)  # nnU-Net's loaders hand int16 segmentations to the transforms

            def run_nnunet():
                for i in range(args.batch):
                    pipeline(image=image[i].clone(), segmentation=seg[i].clone())
            methods["nnU-Net v2 default training transforms (per sample)"] = run_nnunet
    rows = list(timed_interleaved(methods, args.repeat).items())

    print("\n| method | median s / batch | mean s / batch | patches / s (median) |\n|---|---|---|---|")
    for name, (med, mean) in rows:
        print(f"| {name} | {med:.3f} | {mean:.3f} | {args.batch / med:.2f} |")
    ours, scipy_t = rows[0][1][0], rows[1][1][0]
    print(f"\nspeedup of ours over scipy (spatial, same kind of matrices; medians): {scipy_t / ours:.2f}x")
    if len(rows) > 3:  # random mixtures of transforms: compare the means
        print(f"speedup of ours default over nnU-Net default (means): {rows[3][1][1] / rows[2][1][1]:.2f}x")
    print(f"RESULT patches_per_s={args.batch / ours:.2f} speedup_vs_scipy={scipy_t / ours:.2f} patch={args.patch}")


if __name__ == "__main__":
    main()
