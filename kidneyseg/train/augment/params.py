"""Drawing an augmentation: every random choice of a batch, made up front, as a small dataclass.

:func:`draw_params` is the only place randomness enters augmentation (TorchIO's split of a random
transform into "draw the parameters" and "apply them"): the :class:`AugmentParams` it returns can
be logged, inspected and replayed with :func:`kidneyseg.train.augment.apply_params`, which is
deterministic. Every draw is made for every sample whatever the probabilities, so the random
stream (and hence every other draw) does not depend on which transforms happen to be switched on.

All tensors are on the CPU: ``[B]`` per sample, ``[B, 3]`` per sample and axis (z, y, x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from .config import AugmentConfig, in_plane_only


def _uniform(n: int, bounds: Sequence[float], g: torch.Generator) -> torch.Tensor:
    """n float64 draws, uniform in bounds, on the CPU (device-independent results)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device, dtype=torch.float64).cpu()


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """n Bernoulli(p) draws as a CPU bool tensor (always n draws, so the stream does not depend on p)."""
    u = torch.rand(n, generator=g, device=g.device, dtype=torch.float64).cpu()
    return u < p


def _gammas(n: int, bounds: Sequence[float], g: torch.Generator) -> torch.Tensor:
    """Gammas: below 1 and above 1 with equal chance (when the range spans 1)."""
    lo, hi = bounds
    below = _coin(n, 0.5, g)
    low_part = _uniform(n, (lo, min(hi, 1.0)), g)
    high_part = _uniform(n, (max(lo, 1.0), hi), g)
    if lo >= 1 or hi <= 1:
        return _uniform(n, bounds, g)
    return torch.where(below, low_part, high_part)


@dataclass
class AugmentParams:
    """The random choices for one batch of ``B`` samples (CPU tensors).

    Boolean ``[B]`` masks say where each transform applies; the values beside them are drawn for
    every sample (and ignored where the mask is off).

    Attributes:
        rotation, angles: rotate, and the angles about z, y, x in radians ``[B, 3]`` (y and x zero
            for in-plane-only rotations).
        scaling, zoom: zoom the content by ``zoom`` ``[B]`` (1.25 = anatomy 25 % larger).
        noise, noise_std: add Gaussian noise of this standard deviation; ``noise_seed`` seeds the
            noise field (drawn on ``noise_device``'s generator, so CPU draws are device-independent).
        blur, blur_sigma: Gaussian blur, sigma per axis in voxels ``[B, 3]``.
        brightness, brightness_factor: multiply the CT.
        contrast, contrast_factor: scale the CT around its mean, range kept.
        low_resolution, low_resolution_zoom: nearest down by this factor, linear back up.
        gamma_inverted, gamma_inverted_value: gamma on the inverted CT.
        gamma, gamma_value: gamma (mean and std kept).
        mirror: flip along z, y, x ``[B, 3]``.
    """

    rotation: torch.Tensor
    angles: torch.Tensor
    scaling: torch.Tensor
    zoom: torch.Tensor
    noise: torch.Tensor
    noise_std: torch.Tensor
    noise_seed: int
    noise_device: str
    blur: torch.Tensor
    blur_sigma: torch.Tensor
    brightness: torch.Tensor
    brightness_factor: torch.Tensor
    contrast: torch.Tensor
    contrast_factor: torch.Tensor
    low_resolution: torch.Tensor
    low_resolution_zoom: torch.Tensor
    gamma_inverted: torch.Tensor
    gamma_inverted_value: torch.Tensor
    gamma: torch.Tensor
    gamma_value: torch.Tensor
    mirror: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.rotation.shape[0])

    def applied(self) -> dict[str, torch.Tensor]:
        """Transform name -> where it applies (``[B]`` bool; ``mirror``: ``[B, 3]``), in the order of
        :data:`kidneyseg.train.augment.TRANSFORMS`."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None and isinstance(getattr(self, f.name), torch.Tensor)
                and getattr(self, f.name).dtype == torch.bool}


def draw_params(cfg: AugmentConfig, batch_size: int, out_shape: Sequence[int], generator: torch.Generator
                ) -> AugmentParams:
    """Every random choice of :func:`~kidneyseg.train.augment.augment_batch` for ``batch_size`` samples.

    Args:
        cfg: probabilities and ranges.
        batch_size: samples in the batch.
        out_shape: the output patch (z, y, x): decides whether rotations stay in-plane.
        generator: the only source of randomness (CPU or the batch's device).
    """
    b, g = int(batch_size), generator
    rotation, scaling = _coin(b, cfg.p_rotation, g), _coin(b, cfg.p_scaling, g)
    angles = torch.stack([_uniform(b, cfg.rotation_deg, g) for _ in range(3)], dim=1) * math.pi / 180
    if in_plane_only(cfg, out_shape):
        angles[:, 1:] = 0
    zoom = _uniform(b, cfg.scaling_range, g)
    noise = _coin(b, cfg.p_noise, g)
    noise_std = _uniform(b, cfg.noise_variance, g).sqrt()
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
    blur = _coin(b, cfg.p_blur, g)
    blur_sigma = torch.stack([_uniform(b, cfg.blur_sigma, g) for _ in range(3)], dim=1)
    brightness = _coin(b, cfg.p_brightness, g)
    brightness_factor = _uniform(b, cfg.brightness_range, g)
    contrast = _coin(b, cfg.p_contrast, g)
    contrast_factor = _uniform(b, cfg.contrast_range, g)
    low_resolution = _coin(b, cfg.p_low_resolution, g)
    low_resolution_zoom = _uniform(b, cfg.low_resolution_zoom, g)
    gamma_inverted = _coin(b, cfg.p_gamma_inverted, g)
    gamma_inverted_value = _gammas(b, cfg.gamma_range, g)
    gamma = _coin(b, cfg.p_gamma, g)
    gamma_value = _gammas(b, cfg.gamma_range, g)
    flips = torch.zeros(b, 3, dtype=torch.bool)
    for axis in cfg.mirror_axes:
        flips[:, axis] = _coin(b, cfg.p_mirror, g)
    return AugmentParams(rotation, angles, scaling, zoom, noise, noise_std, noise_seed, str(g.device), blur,
                         blur_sigma, brightness, brightness_factor, contrast, contrast_factor, low_resolution,
                         low_resolution_zoom, gamma_inverted, gamma_inverted_value, gamma, gamma_value, flips)


__all__ = ["AugmentParams", "draw_params"]
