"""Spatial transforms of a batch: rotation and zoom as one resampling, centre crops, mirroring.

One affine matrix per sample (z, y, x coordinates), one sampling grid for the transformed samples,
``F.grid_sample`` on it: trilinear for the CT channel(s), nearest for prior channels and labels (so
labels keep their values). Outside the input the CT takes the sample's minimum (what the sampler
pads with), priors and labels 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def rotation_torch(angles: torch.Tensor) -> torch.Tensor:
    """Batched rotation matrices [n, 3, 3] (z, y, x coordinates) from angles [n, 3] in radians."""
    n = angles.shape[0]
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones(n, dtype=angles.dtype), torch.zeros(n, dtype=angles.dtype)

    def mat(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rz = mat([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rx = mat([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return rx @ ry @ rz


def center_crop(x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    starts = [(s - o) // 2 for s, o in zip(x.shape[2:], out_shape)]
    return x[:, :, starts[0]:starts[0] + out_shape[0], starts[1]:starts[1] + out_shape[1],
             starts[2]:starts[2] + out_shape[2]]


def resample_spatial(image: torch.Tensor, label: torch.Tensor, matrices: torch.Tensor, out_shape: Sequence[int],
             image_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample image [n, C, ...] and label [n, 1, ...] with per-sample (z, y, x) matrices [n, 3, 3].

    Output voxel ``o`` reads input coordinate ``c_in + M (o - c_out)`` where ``c_out`` is the output
    centre and ``c_in`` the centre of the matching center crop, so a transformed sample and a
    cropped one line up exactly when ``M`` is the identity. Only the input box the output can
    reach is read (found from the output's corners, as the map is affine).
    """
    n = image.shape[0]
    in_shape = np.array(image.shape[2:], float)
    half_out = (np.array(out_shape, float) - 1) / 2
    centre = (in_shape - np.array(out_shape)) // 2 + half_out
    m = matrices.double().numpy()
    reach = np.abs(m) @ half_out  # [n, 3]: largest offset from the centre each sample reads, in voxels
    lo = np.clip(np.floor(centre - reach.max(0)) - 1, 0, in_shape - 1).astype(int)
    hi = np.clip(np.ceil(centre + reach.max(0)) + 2, lo + 1, in_shape).astype(int)
    box = (slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo, hi))
    image, label = image[box], label[box]  # views: no copy
    sub = (hi - lo).astype(float)
    half_sub = np.maximum((sub - 1) / 2, 0.5)
    theta = np.zeros((n, 3, 4))
    theta[:, :, :3] = m * half_out[None, None, :] / half_sub[None, :, None]
    theta[:, :, 3] = ((centre - lo - (sub - 1) / 2) / half_sub)[None, :]
    # grid_sample wants (x, y, z) order: reverse the rows and the first three columns.
    theta = np.concatenate([theta[:, ::-1, 2::-1], theta[:, ::-1, 3:]], axis=2)
    grid = affine_grid(torch.from_numpy(theta).to(device=image.device, dtype=torch.float32), out_shape)

    ct = image[:, :image_channels].float()
    # CT: 'border' needs no padded copy of the input; voxels outside it then get the sample's minimum.
    new_ct = F.grid_sample(ct, grid, mode="bilinear", padding_mode="border", align_corners=True)
    leaves = ((centre - reach < -1e-6) | (centre + reach > in_shape - 1 + 1e-6)).any(axis=1)
    for i in np.flatnonzero(leaves).tolist():
        outside = (grid[i].abs() > 1 + 1e-5).any(dim=-1)[None]
        new_ct[i] = torch.where(outside, ct[i].amin(dim=(1, 2, 3), keepdim=True), new_ct[i])
    parts = [new_ct]
    if image.shape[1] > image_channels:
        parts.append(F.grid_sample(image[:, image_channels:].float(), grid, mode="nearest", padding_mode="zeros",
                                   align_corners=True))
    new_label = F.grid_sample(label.float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    new_image = (torch.cat(parts, dim=1) if len(parts) > 1 else new_ct).to(image.dtype)
    return new_image, new_label.to(label.dtype)  # nearest copies exact label values: no rounding needed


def affine_grid(theta: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """``F.affine_grid(theta, [n, 1, *out_shape], align_corners=True)`` built by broadcasting.

    Same values; about 10x faster on CPU than ``F.affine_grid``, whose batched matrix product over
    every voxel dominated the spatial transform there (measured at 128^3: 274 ms against the
    trilinear ``grid_sample``'s 200 ms).
    """
    def axis(size: int) -> torch.Tensor:
        if size <= 1:
            return torch.zeros(1, device=theta.device, dtype=theta.dtype)
        return torch.linspace(-1, 1, size, device=theta.device, dtype=theta.dtype)

    uz, uy, ux = (axis(s) for s in out_shape)
    # z and y terms on the small [n, z, y, 1, 3] plane, then one full-size add for the x term.
    plane = (theta[:, None, None, None, :, 3] + theta[:, None, None, None, :, 2] * uz[None, :, None, None, None]
             + theta[:, None, None, None, :, 1] * uy[None, None, :, None, None])
    return plane + theta[:, None, None, None, :, 0] * ux[None, None, None, :, None]


def mirror(image: torch.Tensor, label: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip sample ``i`` of image ``[B, C, ...]`` and label ``[B, 1, ...]`` along the axes where ``flips[i]`` ([B, 3] bool) is set (in place)."""
    for i in range(image.shape[0]):
        dims = [2 + a for a in range(3) if flips[i, a]]
        if dims:
            image[i:i + 1] = image[i:i + 1].flip(dims)
            label[i:i + 1] = label[i:i + 1].flip(dims)
    return image, label


__all__ = ["affine_grid", "center_crop", "mirror", "resample_spatial", "rotation_torch"]
