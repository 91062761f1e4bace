"""The augmentation settings (:class:`AugmentConfig`) and the patch-size rules that follow from them.

Probabilities are per sample; ranges are ``(low, high)`` drawn uniformly; angles in degrees. The
defaults follow nnU-Net's. :func:`sample_size_for` gives the larger patch to extract so that
rotations read real voxels instead of padding.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...config import from_dict, to_dict
from ...errors import read_json, write_text_atomic


@dataclass
class AugmentConfig:
    """Probabilities (per sample) and ranges of every augmentation; defaults follow nnU-Net.

    Ranges are ``(low, high)`` and drawn uniformly. Angles in degrees, around each axis.

    Attributes:
        p_rotation: probability a sample is rotated (one angle per axis).
        rotation_deg: angle range in degrees, per axis.
        rotation_in_plane_only: rotate only around the z axis (in the y-x plane). ``None``
            decides from the patch: in-plane only when its longest side is at least
            ``anisotropy_threshold`` times its shortest (nnU-Net's rule for flat patches).
        anisotropy_threshold: see ``rotation_in_plane_only``.
        p_scaling: probability a sample is zoomed.
        scaling_range: zoom of the content (1.25 = anatomy looks 25% larger), same on all axes.
        p_noise: probability of additive Gaussian noise.
        noise_variance: range of the noise variance (the CT is z-scored, so 0.1 is mild).
        p_blur: probability of a Gaussian blur.
        blur_sigma: range of the blur sigma in voxels, drawn per axis.
        p_brightness: probability of multiplying the CT by a factor.
        brightness_range: range of that factor.
        p_contrast: probability of scaling the CT around its mean (range kept).
        contrast_range: range of the contrast factor.
        p_low_resolution: probability of simulating a coarser scan (nearest down, linear up).
        low_resolution_zoom: range of the down-sampling factor (0.5 = half the voxels per axis).
        p_gamma: probability of a gamma transform (mean and std kept).
        p_gamma_inverted: probability of a gamma transform on the inverted CT.
        gamma_range: range of gamma; below and above 1 each drawn with probability 1/2.
        p_mirror: probability of a flip along each axis in ``mirror_axes``, independently.
        mirror_axes: spatial axes that may be flipped: 0 = z, 1 = y, 2 = x.
    """

    p_rotation: float = 0.2
    rotation_deg: tuple[float, float] = (-30.0, 30.0)
    rotation_in_plane_only: bool | None = None
    anisotropy_threshold: float = 3.0
    p_scaling: float = 0.2
    scaling_range: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    p_gamma: float = 0.3
    p_gamma_inverted: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_mirror: float = 0.5
    mirror_axes: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(value)
                setattr(self, f.name, value)
            if f.name.startswith("p_"):
                if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be a probability in [0, 1], got {value!r}")
            elif isinstance(value, tuple) and f.name != "mirror_axes":
                if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value) or value[0] > value[1]:
                    raise ValueError(f"{f.name} must be a range (low, high) with low <= high, got {value!r}")
        positive = {"scaling_range": 0.0, "blur_sigma": 0.0, "low_resolution_zoom": 0.0,
                    "gamma_range": 0.0, "brightness_range": 0.0, "contrast_range": 0.0}
        for name, low in positive.items():
            if getattr(self, name)[0] <= low:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.noise_variance[0] < 0:
            raise ValueError(f"noise_variance must be >= 0, got {self.noise_variance!r}")
        if self.low_resolution_zoom[1] > 1:
            raise ValueError(f"low_resolution_zoom must be in (0, 1], got {self.low_resolution_zoom!r}")
        if not set(self.mirror_axes) <= {0, 1, 2}:
            raise ValueError(f"mirror_axes must be a subset of (0, 1, 2), got {self.mirror_axes!r}")
        if self.anisotropy_threshold < 1:
            raise ValueError(f"anisotropy_threshold must be >= 1, got {self.anisotropy_threshold!r}")

    @classmethod
    def none(cls) -> "AugmentConfig":
        """A configuration that changes nothing (every probability 0)."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls) if f.name.startswith("p_")})

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        return to_dict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON (atomically)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AugmentConfig":
        """Read a config written by :meth:`save`; unknown keys are refused (valid ones listed)."""
        return from_dict(cls, read_json(path, "augmentation config"), path)


def in_plane_only(cfg: AugmentConfig, patch_size: Sequence[int]) -> bool:
    """Whether rotations stay in the y-x plane for this patch (see ``rotation_in_plane_only``)."""
    if cfg.rotation_in_plane_only is not None:
        return bool(cfg.rotation_in_plane_only)
    return max(patch_size) / min(patch_size) >= cfg.anisotropy_threshold


def sample_size_for(patch_size: Sequence[int], cfg: AugmentConfig, max_coordinate_scale: float = 1.0) -> tuple[int, ...]:
    """The input patch size whose rotations (and zooms) still cover ``patch_size``.

    Sample this size, pass ``out_shape=patch_size`` to :func:`augment_batch`, and rotated patches
    read real voxels instead of padding. The size covers every rotation within
    ``cfg.rotation_deg`` and zooms that shrink the content by at most ``max_coordinate_scale``
    (default 1.0: zoom-outs, rarer and smaller, may read a little padding at the corners; raise
    it to cover them at the cost of larger patches). Computed numerically over the corners of
    the angle range.

    Args:
        patch_size: the training patch (z, y, x) in voxels.
        cfg: the augmentation config.
        max_coordinate_scale: largest coordinate scale to cover (1 / smallest zoom).

    Returns:
        (z, y, x) voxels, each >= the patch size.

    >>> sample_size_for((64, 64, 64), AugmentConfig(p_rotation=0.0))
    (64, 64, 64)
    """
    patch = np.asarray(patch_size, float)
    if cfg.p_rotation == 0 and (cfg.p_scaling == 0 or max_coordinate_scale <= 1):
        return tuple(int(p) for p in patch_size)
    lo, hi = (math.radians(a) for a in cfg.rotation_deg)
    angles = np.unique(np.clip(np.r_[np.linspace(lo, hi, 13), 0.0, math.pi / 4, -math.pi / 4], lo, hi))
    if cfg.p_rotation == 0:
        angles = np.zeros(1)
    plane = in_plane_only(cfg, patch_size)
    extent = patch.copy()
    half = (patch - 1) / 2
    corners = np.array(list(itertools.product(*[(-h, h) for h in half])))
    for az in angles:
        for ay in ([0.0] if plane else angles):
            for ax in ([0.0] if plane else angles):
                rot = rotation_np(az, ay, ax)
                span = np.abs(corners @ rot.T).max(axis=0) * 2 + 1
                extent = np.maximum(extent, span)
    scale = max(1.0, max_coordinate_scale) if cfg.p_scaling > 0 else 1.0
    return tuple(int(math.ceil(e * scale - 1e-6)) for e in extent)


def rotation_np(az: float, ay: float, ax: float) -> np.ndarray:
    """Rotation matrix in (z, y, x) coordinates: about z (y-x plane), then y, then x."""
    cz, sz, cy, sy, cx, sx = math.cos(az), math.sin(az), math.cos(ay), math.sin(ay), math.cos(ax), math.sin(ax)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rx @ ry @ rz


__all__ = ["AugmentConfig", "in_plane_only", "rotation_np", "sample_size_for"]
