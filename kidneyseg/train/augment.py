"""Batched data augmentation in torch, on whatever device the batch lives on.

The thesis augments with rotation, scaling, gamma correction and mirroring (section 4.2). We add
the cheap intensity transforms nnU-Net uses (Gaussian noise, Gaussian blur, multiplicative
brightness, contrast, simulated low resolution, inverted gamma). Everything runs on torch
tensors of shape ``[B, C, z, y, x]``, so on a GPU the augmentation costs a few milliseconds and a
couple of CPU cores cannot starve the accelerator.

Design:

* **Spatial** (rotation, scaling): one affine matrix per sample, one sampling grid for all the
  transformed samples and ``F.grid_sample`` calls on that grid: trilinear for the CT
  channel(s), nearest for the prior channels and the label (so labels keep their values).
  Samples that draw no spatial transform are center-cropped instead (exact, no interpolation).
  Outside the input, the CT is filled with the sample's minimum (what the sampler pads with),
  priors and labels with 0 (background). The sampling grid is built by broadcasting rather than
  ``F.affine_grid`` (same values, much cheaper on CPU).
* **Larger input, smaller output**: ``out_shape`` lets the input patch be larger than the
  training patch (see :func:`sample_size_for`); the output is the centered ``out_shape`` window of
  the transformed input, so rotations read real voxels instead of padding.
* **Intensity** transforms touch only the first ``image_channels`` channels (the CT), never the
  stage-1 prior channels that follow.
* **Mirroring** flips every channel and the label along each axis with its own probability.
* **Randomness** comes from the ``torch.Generator`` passed in; the same seed gives the same
  batch. A CPU generator gives the same draws whatever device the batch is on.

>>> cfg = AugmentConfig()
>>> g = torch.Generator().manual_seed(0)
>>> image, label = torch.randn(2, 1, 16, 16, 16), torch.zeros(2, 1, 16, 16, 16, dtype=torch.int64)
>>> out_image, out_label = augment_batch(image, label, cfg, g)
>>> out_image.shape, out_label.dtype
(torch.Size([2, 1, 16, 16, 16]), torch.int64)
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
import torch
import torch.nn.functional as F

from ..errors import fail, read_json, write_text_atomic

#: The order in which transforms are applied (and named in ``record``).
TRANSFORMS = ("rotation", "scaling", "noise", "blur", "brightness", "contrast", "low_resolution",
              "gamma_inverted", "gamma", "mirror")


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
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict, source: str | os.PathLike | None = None) -> "AugmentConfig":
        """Build from a dict; unknown keys raise a :class:`KidneysegError` listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise fail(source, f"unknown augmentation key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise fail(source, str(exc)) from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON (atomically)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AugmentConfig":
        """Read a config written by :meth:`save`."""
        return cls.from_dict(read_json(path, "augmentation config"), source=path)


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
                rot = _rotation_np(az, ay, ax)
                span = np.abs(corners @ rot.T).max(axis=0) * 2 + 1
                extent = np.maximum(extent, span)
    scale = max(1.0, max_coordinate_scale) if cfg.p_scaling > 0 else 1.0
    return tuple(int(math.ceil(e * scale - 1e-6)) for e in extent)


def _rotation_np(az: float, ay: float, ax: float) -> np.ndarray:
    """Rotation matrix in (z, y, x) coordinates: about z (y-x plane), then y, then x."""
    cz, sz, cy, sy, cx, sx = math.cos(az), math.sin(az), math.cos(ay), math.sin(ay), math.cos(ax), math.sin(ax)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _rotation_torch(angles: torch.Tensor) -> torch.Tensor:
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


def _uniform(n: int, bounds: Sequence[float], g: torch.Generator) -> torch.Tensor:
    """n float64 draws, uniform in bounds, on the CPU (device-independent results)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device, dtype=torch.float64).cpu()


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """n Bernoulli(p) draws as a CPU bool tensor (always n draws, so the stream does not depend on p)."""
    u = torch.rand(n, generator=g, device=g.device, dtype=torch.float64).cpu()
    return u < p


def _center_crop(x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    starts = [(s - o) // 2 for s, o in zip(x.shape[2:], out_shape)]
    return x[:, :, starts[0]:starts[0] + out_shape[0], starts[1]:starts[1] + out_shape[1],
             starts[2]:starts[2] + out_shape[2]]


def _spatial(image: torch.Tensor, label: torch.Tensor, matrices: torch.Tensor, out_shape: Sequence[int],
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
    grid = _affine_grid(torch.from_numpy(theta).to(device=image.device, dtype=torch.float32), out_shape)

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


def _affine_grid(theta: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
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


def _gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
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


def _gamma(x: torch.Tensor, gammas: torch.Tensor, invert: bool) -> torch.Tensor:
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


def _draw_gamma(n: int, bounds: Sequence[float], g: torch.Generator) -> torch.Tensor:
    """Gammas: below 1 and above 1 with equal chance (when the range spans 1)."""
    lo, hi = bounds
    below = _coin(n, 0.5, g)
    low_part = _uniform(n, (lo, min(hi, 1.0)), g)
    high_part = _uniform(n, (max(lo, 1.0), hi), g)
    if lo >= 1 or hi <= 1:
        return _uniform(n, bounds, g)
    return torch.where(below, low_part, high_part)


def augment_batch(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
                  out_shape: Sequence[int] | None = None, image_channels: int = 1,
                  record: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch of patches on its own device.

    Args:
        image: ``[B, C, z, y, x]`` float; channel 0 is the normalized CT, channels
            ``image_channels..C-1`` are stage-1 prior channels (one-hot, moved with the spatial
            transforms only).
        label: ``[B, 1, z, y, x]`` integer labels (0 background, 1 kidney, 2 tumor).
        cfg: probabilities and ranges.
        generator: source of randomness (a CPU generator gives device-independent draws; one on
            the batch's device avoids a host-to-device copy of the noise field).
        out_shape: output (z, y, x) size, at most the input size; the centered window of the
            transformed input. ``None`` keeps the input size.
        image_channels: how many leading channels are CT (intensity transforms apply to these).
        record: if a dict is given, it is filled with a bool tensor ``[B]`` per transform name in
            :data:`TRANSFORMS` (``mirror``: ``[B, 3]``) saying where it was applied.

    Returns:
        ``(image, label)`` with shapes ``[B, C, *out_shape]`` and ``[B, 1, *out_shape]``, same
        dtypes and device as the inputs. The inputs are not modified.
    """
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
    b, g, dev = image.shape[0], generator, image.device
    rec = record if record is not None else {}

    # --- spatial: rotation + scaling as one resampling of the samples that need it
    rotate, scale = _coin(b, cfg.p_rotation, g), _coin(b, cfg.p_scaling, g)
    angles = torch.stack([_uniform(b, cfg.rotation_deg, g) for _ in range(3)], dim=1) * math.pi / 180
    if in_plane_only(cfg, out_shape):
        angles[:, 1:] = 0
    zoom = _uniform(b, cfg.scaling_range, g)
    rec["rotation"], rec["scaling"] = rotate, scale
    spatial = rotate | scale
    if bool(spatial.all()):
        mats = _rotation_torch(torch.where(rotate[:, None], angles, torch.zeros_like(angles)))
        mats = mats / torch.where(scale, zoom, torch.ones_like(zoom))[:, None, None]
        image, label = _spatial(image, label, mats, out_shape, image_channels)
    else:
        out_image = _center_crop(image, out_shape).clone()
        out_label = _center_crop(label, out_shape).clone()
        if bool(spatial.any()):
            idx = spatial.nonzero().flatten()
            mats = _rotation_torch(torch.where(rotate[idx, None], angles[idx], torch.zeros_like(angles[idx])))
            mats = mats / torch.where(scale[idx], zoom[idx], torch.ones_like(zoom[idx]))[:, None, None]
            sel = idx.to(dev)
            out_image[sel], out_label[sel] = _spatial(image.index_select(0, sel), label.index_select(0, sel), mats,
                                                      out_shape, image_channels)
        image, label = out_image, out_label

    # --- intensity, on the CT channel(s) only
    ct = image[:, :image_channels].float()

    def pick(name: str, p: float) -> torch.Tensor:
        mask = _coin(b, p, g)
        rec[name] = mask
        return mask.nonzero().flatten()

    idx = pick("noise", cfg.p_noise)
    std = _uniform(b, cfg.noise_variance, g).sqrt()
    if len(idx):
        noise = torch.randn((len(idx), *ct.shape[1:]), generator=g, device=g.device, dtype=torch.float32).to(dev)
        ct[idx.to(dev)] += noise * std[idx].to(device=dev, dtype=torch.float32).reshape(-1, 1, 1, 1, 1)

    idx = pick("blur", cfg.p_blur)
    sigmas = torch.stack([_uniform(b, cfg.blur_sigma, g) for _ in range(3)], dim=1)
    if len(idx):
        sel = idx.to(dev)
        for c in range(image_channels):
            ct[sel, c:c + 1] = _gaussian_blur(ct[sel, c:c + 1], sigmas[idx])

    idx = pick("brightness", cfg.p_brightness)
    factor = _uniform(b, cfg.brightness_range, g)
    if len(idx):
        ct[idx.to(dev)] *= factor[idx].to(device=dev, dtype=torch.float32).reshape(-1, 1, 1, 1, 1)

    idx = pick("contrast", cfg.p_contrast)
    factor = _uniform(b, cfg.contrast_range, g)
    if len(idx):
        sel = idx.to(dev)
        x = ct[sel]
        dims = (2, 3, 4)
        mean, low, high = x.mean(dim=dims, keepdim=True), x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        f = factor[idx].to(device=dev, dtype=torch.float32).reshape(-1, 1, 1, 1, 1)
        ct[sel] = torch.maximum(torch.minimum((x - mean) * f + mean, high), low)

    idx = pick("low_resolution", cfg.p_low_resolution)
    zooms = _uniform(b, cfg.low_resolution_zoom, g)
    for i in idx.tolist():
        x = ct[i:i + 1]
        small = [max(1, int(round(s * float(zooms[i])))) for s in out_shape]
        x = F.interpolate(x, size=small, mode="nearest")
        ct[i:i + 1] = F.interpolate(x, size=out_shape, mode="trilinear", align_corners=False)

    for name, p, invert in (("gamma_inverted", cfg.p_gamma_inverted, True), ("gamma", cfg.p_gamma, False)):
        idx = pick(name, p)
        gammas = _draw_gamma(b, cfg.gamma_range, g)
        if len(idx):
            sel = idx.to(dev)
            for c in range(image_channels):
                ct[sel, c:c + 1] = _gamma(ct[sel, c:c + 1], gammas[idx], invert)

    image[:, :image_channels] = ct.to(image.dtype)

    # --- mirroring, every channel and the label
    flips = torch.zeros(b, 3, dtype=torch.bool)
    for axis in cfg.mirror_axes:
        flips[:, axis] = _coin(b, cfg.p_mirror, g)
    rec["mirror"] = flips
    for i in range(b):
        dims = [2 + a for a in range(3) if flips[i, a]]
        if dims:
            image[i:i + 1] = image[i:i + 1].flip(dims)
            label[i:i + 1] = label[i:i + 1].flip(dims)
    return image, label
