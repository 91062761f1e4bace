"""Intensity transforms of the CT channel(s) of a batch ``[n, 1, z, y, x]``: blur and gamma.

The other intensity transforms (noise, brightness, contrast, simulated low resolution) are a line
each and live in :func:`kidneyseg.train.augment.apply_params`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur x [n, 1, z, y, x] with per-sample, per-axis sigmas [n, 3] (voxels); separable, grouped."""
    n = x.shape[0]
    radius = max(1, int(math.ceil(3 * float(sigmas.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    out = x.reshape(1, n, *x.shape[2:])
    for axis in range(3):
        k = torch.exp(-0.5 * (offsets[None, :] / sigmas[:, axis:axis + 1]) ** 2)
        k = (k / k.sum(dim=1, keepdim=True)).to(device=x.device, dtype=x.dtype)
        shape = [n, 1, 1, 1, 1]
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.reshape(shape), groups=n)
    return out.reshape(x.shape)


def gamma_transform(x: torch.Tensor, gammas: torch.Tensor, invert: bool) -> torch.Tensor:
    """Gamma on x [n, 1, ...] rescaled to [0, 1] per sample; mean and std are restored."""
    if invert:
        x = -x
    dims = (1, 2, 3, 4)
    mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    span = (high - low).clamp_min(1e-7)
    g = gammas.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1, 1)
    y = ((x - low) / span).clamp(0, 1) ** g * span + low
    y = (y - y.mean(dim=dims, keepdim=True)) / y.std(dim=dims, keepdim=True).clamp_min(1e-7) * std + mean
    return -y if invert else y


__all__ = ["gamma_transform", "gaussian_blur"]
