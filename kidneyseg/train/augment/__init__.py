"""Batched data augmentation in torch, on whatever device the batch lives on.

The thesis augments with rotation, scaling, gamma correction and mirroring (section 4.2). We add
the cheap intensity transforms nnU-Net uses (Gaussian noise, Gaussian blur, multiplicative
brightness, contrast, simulated low resolution, inverted gamma). Everything runs on torch
tensors ``[B, C, z, y, x]``, so on a GPU augmentation costs a few milliseconds and a couple of CPU
cores cannot starve the accelerator.

Design (modules of this package):

* :mod:`.config`: :class:`AugmentConfig` (probabilities and ranges) and :func:`sample_size_for`.
* :mod:`.params`: :func:`draw_params` makes every random choice of a batch up front
  (:class:`AugmentParams`, loggable and replayable); :func:`apply_params` below applies them
  deterministically, in the one order of :data:`TRANSFORMS`.
* :mod:`.spatial`: rotation + zoom as one ``grid_sample`` on a broadcast grid (trilinear CT,
  nearest prior channels and labels), centre crops, mirroring. Samples that draw no spatial
  transform are centre-cropped (exact). ``out_shape`` lets the input be larger than the training
  patch so rotations read real voxels.
* :mod:`.intensity`: blur and gamma; noise, brightness, contrast and low resolution are one-liners
  here. Intensity transforms touch only the first ``image_channels`` channels (the CT), never the
  stage-1 prior channels that follow.

Randomness comes only from the ``torch.Generator`` given to :func:`augment_batch`; the same seed
gives the same batch, and a CPU generator gives the same draws whatever device the batch is on.

>>> cfg = AugmentConfig()
>>> g = torch.Generator().manual_seed(0)
>>> image, label = torch.randn(2, 1, 16, 16, 16), torch.zeros(2, 1, 16, 16, 16, dtype=torch.int64)
>>> out_image, out_label = augment_batch(image, label, cfg, g)
>>> out_image.shape, out_label.dtype
(torch.Size([2, 1, 16, 16, 16]), torch.int64)
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .config import AugmentConfig, in_plane_only, sample_size_for
from .intensity import gamma_transform, gaussian_blur
from .params import AugmentParams, draw_params
from .spatial import center_crop, mirror, resample_spatial, rotation_torch

__all__ = ["AugmentConfig", "AugmentParams", "TRANSFORMS", "apply_params", "augment_batch", "draw_params",
           "in_plane_only", "sample_size_for"]


# ------------------------------------------------------------------------------ the transforms
def _spatial(image, label, p: AugmentParams, out_shape, image_channels):
    """Rotation and scaling as one resampling of the samples that draw either; the rest centre-cropped."""
    spatial = p.rotation | p.scaling

    def matrices(idx):
        mats = rotation_torch(torch.where(p.rotation[idx, None], p.angles[idx], torch.zeros_like(p.angles[idx])))
        return mats / torch.where(p.scaling[idx], p.zoom[idx], torch.ones_like(p.zoom[idx]))[:, None, None]

    if bool(spatial.all()):
        return resample_spatial(image, label, matrices(slice(None)), out_shape, image_channels)
    out_image = center_crop(image, out_shape).clone()
    out_label = center_crop(label, out_shape).clone()
    if bool(spatial.any()):
        idx = spatial.nonzero().flatten()
        sel = idx.to(image.device)
        out_image[sel], out_label[sel] = resample_spatial(image.index_select(0, sel), label.index_select(0, sel),
                                                          matrices(idx), out_shape, image_channels)
    return out_image, out_label


def _per_sample(values: torch.Tensor, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values[idx].to(device=like.device, dtype=torch.float32).reshape(-1, 1, 1, 1, 1)


def _noise(ct, idx, p: AugmentParams, out_shape):
    g = torch.Generator(p.noise_device).manual_seed(p.noise_seed)
    noise = torch.randn((len(idx), *ct.shape[1:]), generator=g, device=p.noise_device, dtype=torch.float32)
    ct[idx.to(ct.device)] += noise.to(ct.device) * _per_sample(p.noise_std, idx, ct)


def _blur(ct, idx, p: AugmentParams, out_shape):
    sel = idx.to(ct.device)
    for c in range(ct.shape[1]):
        ct[sel, c:c + 1] = gaussian_blur(ct[sel, c:c + 1], p.blur_sigma[idx])


def _brightness(ct, idx, p: AugmentParams, out_shape):
    ct[idx.to(ct.device)] *= _per_sample(p.brightness_factor, idx, ct)


def _contrast(ct, idx, p: AugmentParams, out_shape):
    sel = idx.to(ct.device)
    x = ct[sel]
    dims = (2, 3, 4)
    mean, low, high = x.mean(dim=dims, keepdim=True), x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    ct[sel] = torch.maximum(torch.minimum((x - mean) * _per_sample(p.contrast_factor, idx, ct) + mean, high), low)


def _low_resolution(ct, idx, p: AugmentParams, out_shape):
    for i in idx.tolist():
        small = [max(1, int(round(s * float(p.low_resolution_zoom[i])))) for s in out_shape]
        x = F.interpolate(ct[i:i + 1], size=small, mode="nearest")
        ct[i:i + 1] = F.interpolate(x, size=out_shape, mode="trilinear", align_corners=False)


def _gamma_inverted(ct, idx, p: AugmentParams, out_shape):
    sel = idx.to(ct.device)
    for c in range(ct.shape[1]):
        ct[sel, c:c + 1] = gamma_transform(ct[sel, c:c + 1], p.gamma_inverted_value[idx], invert=True)


def _gamma(ct, idx, p: AugmentParams, out_shape):
    sel = idx.to(ct.device)
    for c in range(ct.shape[1]):
        ct[sel, c:c + 1] = gamma_transform(ct[sel, c:c + 1], p.gamma_value[idx], invert=False)


#: The intensity transforms, in the order they are applied (each on the CT channels of its samples).
INTENSITY: tuple[tuple[str, Callable], ...] = (
    ("noise", _noise), ("blur", _blur), ("brightness", _brightness), ("contrast", _contrast),
    ("low_resolution", _low_resolution), ("gamma_inverted", _gamma_inverted), ("gamma", _gamma),
)
#: Every transform in the order applied: spatial (rotation + scaling, one resampling), intensity, mirror.
TRANSFORMS = ("rotation", "scaling", *(name for name, _ in INTENSITY), "mirror")


# ------------------------------------------------------------------------------ apply, augment
def _check(image: torch.Tensor, label: torch.Tensor, out_shape, image_channels: int) -> tuple[int, ...]:
    if image.ndim != 5 or label.ndim != 5 or label.shape[1] != 1:
        raise ValueError(f"image must be [B, C, z, y, x] and label [B, 1, z, y, x], got "
                         f"{tuple(image.shape)} and {tuple(label.shape)}")
    if image.shape[0] != label.shape[0] or image.shape[2:] != label.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} and label {tuple(label.shape)} do not match")
    if not 1 <= image_channels <= image.shape[1]:
        raise ValueError(f"image_channels must be in [1, {image.shape[1]}], got {image_channels!r}")
    in_shape = tuple(image.shape[2:])
    out_shape = in_shape if out_shape is None else tuple(int(s) for s in out_shape)
    if len(out_shape) != 3 or any(o > s or o < 1 for o, s in zip(out_shape, in_shape)):
        raise ValueError(f"out_shape must be 3 sizes within the input size {in_shape}, got {out_shape!r}")
    return out_shape


def apply_params(image: torch.Tensor, label: torch.Tensor, params: AugmentParams,
                 out_shape: Sequence[int] | None = None, image_channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply drawn parameters to a batch (deterministic; the inputs are not modified).

    Args:
        image: ``[B, C, z, y, x]`` float; channels ``image_channels..C-1`` are stage-1 prior channels
            (moved by the spatial transforms only).
        label: ``[B, 1, z, y, x]`` integer labels.
        params: from :func:`draw_params` for ``B`` samples.
        out_shape: output (z, y, x) size, at most the input size (``None``: the input size).
        image_channels: how many leading channels are CT.

    Returns:
        ``(image, label)`` of shapes ``[B, C, *out_shape]`` and ``[B, 1, *out_shape]``, same dtypes
        and device as the inputs.
    """
    out_shape = _check(image, label, out_shape, image_channels)
    if params.batch_size != image.shape[0]:
        raise ValueError(f"params are for {params.batch_size} samples, the batch has {image.shape[0]}")
    image, label = _spatial(image, label, params, out_shape, image_channels)
    ct = image[:, :image_channels].float()
    for name, transform in INTENSITY:
        idx = getattr(params, name).nonzero().flatten()
        if len(idx):
            transform(ct, idx, params, out_shape)
    image[:, :image_channels] = ct.to(image.dtype)
    return mirror(image, label, params.mirror)


def augment_batch(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
                  out_shape: Sequence[int] | None = None, image_channels: int = 1,
                  record: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch of patches on its own device: :func:`draw_params`, then :func:`apply_params`.

    Args:
        image, label, out_shape, image_channels: see :func:`apply_params`.
        cfg: probabilities and ranges.
        generator: source of randomness (a CPU generator gives device-independent draws).
        record: if a dict is given, it is filled with where each transform of :data:`TRANSFORMS`
            was applied (``[B]`` bool; ``mirror``: ``[B, 3]``).

    Returns:
        ``(image, label)`` as :func:`apply_params`.
    """
    out_shape = _check(image, label, out_shape, image_channels)
    params = draw_params(cfg, image.shape[0], out_shape, generator)
    if record is not None:
        record.update(params.applied())
    return apply_params(image, label, params, out_shape, image_channels)
