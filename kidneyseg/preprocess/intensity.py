"""CT intensity normalisation: clip to foreground percentiles, then z-score (thesis 3.4, Fig 3.3).

The statistics come from foreground (kidney + tumor) voxels of the training cases: a fixed number of
voxels is sampled per case (so a 1000-slice case does not outweigh a 60-slice one), pooled, and the
0.5th / 99.5th percentiles, mean and standard deviation are taken.

>>> import numpy as np
>>> img = np.array([[[-1000.0, 50.0, 150.0]]], np.float32)
>>> lab = np.array([[[0, 1, 2]]], np.uint8)
>>> s = foreground_samples(img, lab, 100, np.random.default_rng(0))
>>> sorted(set(s.tolist()))
[50.0, 150.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class IntensityStats:
    """Foreground statistics in HU."""

    clip_low_hu: float
    clip_high_hu: float
    mean_hu: float
    std_hu: float
    n_voxels: int


def foreground_samples(image: np.ndarray, label: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` foreground (label > 0) intensities drawn without replacement, float32 HU.

    Args:
        image: (z, y, x) HU.
        label: (z, y, x) labels, same shape.
        n: voxels to draw (all of them when the case has fewer).
        rng: numpy generator (seeded by the caller for reproducibility).
    """
    if image.shape != label.shape:
        raise ValueError(f"image and label shapes differ: {image.shape} vs {label.shape}")
    fg = np.flatnonzero(label.reshape(-1) > 0)
    if fg.size == 0:
        return np.empty(0, np.float32)
    if fg.size > n:
        fg = np.sort(rng.choice(fg, size=n, replace=False))
    return image.reshape(-1)[fg].astype(np.float32)


def fit_intensity(samples: Iterable[np.ndarray], low_pct: float = 0.5, high_pct: float = 99.5) -> IntensityStats:
    """Percentiles, mean and std of pooled foreground samples (HU).

    Raises:
        ValueError: when no foreground voxel was sampled at all.
    """
    pooled = np.concatenate([np.asarray(s, np.float64).ravel() for s in samples] or [np.empty(0)])
    if pooled.size == 0:
        raise ValueError("no foreground voxels in the training cases; cannot fit the intensity statistics")
    lo, hi = np.percentile(pooled, [low_pct, high_pct])
    std = float(pooled.std())
    return IntensityStats(float(lo), float(hi), float(pooled.mean()), std if std > 0 else 1.0, int(pooled.size))


def normalize(image, clip_low: float, clip_high: float, mean: float, std: float, out=None):
    """Clip to [clip_low, clip_high] HU and z-score: ``(clip(x) - mean) / std`` as float32.

    Works on numpy arrays and torch tensors (in place when ``out`` is the input).
    """
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    try:
        import torch
        if isinstance(image, torch.Tensor):
            x = image.to(torch.float32) if out is None else out.copy_(image)
            return x.clamp_(clip_low, clip_high).sub_(mean).div_(std)
    except ImportError:  # pragma: no cover
        pass
    x = np.asarray(image, dtype=np.float32)
    if out is None:
        out = np.empty_like(x)
    np.clip(x, clip_low, clip_high, out=out)
    out -= np.float32(mean)
    out /= np.float32(std)
    return out


def normalize_with_plan(image, plan, out=None):
    """:func:`normalize` with the plan's clip, mean and std."""
    return normalize(image, plan.clip_low_hu, plan.clip_high_hu, plan.mean_hu, plan.std_hu, out=out)


def denormalize(image, plan):
    """Back to HU (clipped values stay clipped)."""
    return image * plan.std_hu + plan.mean_hu


#: Display windows (width, level) in HU. Abdomen W400/L40 is the standard soft-tissue window
#: (-160..240 HU). The kidney window W500/L100 (-150..350 HU) is our choice, not a standard: it keeps
#: fat (-100 HU) dark-grey and still separates enhancing renal cortex and contrast in the
#: collecting system (200-350 HU) from tumor (typically 30-150 HU), which the abdomen window saturates.
WINDOWS = {
    "abdomen": (400.0, 40.0),
    "kidney": (500.0, 100.0),
    "bone": (1800.0, 400.0),
}


def window_limits(preset: str | tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` HU of a :data:`WINDOWS` preset name or a ``(width, level)`` pair.

    >>> window_limits("abdomen")
    (-160.0, 240.0)

    Raises:
        ValueError: unknown preset name or non-positive width.
    """
    if isinstance(preset, str):
        if preset not in WINDOWS:
            raise ValueError(f"window preset must be one of {sorted(WINDOWS)}, got {preset!r}")
        width, level = WINDOWS[preset]
    else:
        width, level = (float(v) for v in preset)
    if width <= 0:
        raise ValueError(f"window width must be > 0 HU, got {width!r}")
    return level - width / 2.0, level + width / 2.0


def window(image: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map HU to [0, 1] for display with a window of ``width`` centred on ``level``."""
    lo = level - width / 2
    return np.clip((np.asarray(image, np.float32) - lo) / width, 0.0, 1.0)


__all__ = ["IntensityStats", "WINDOWS", "denormalize", "fit_intensity", "foreground_samples", "normalize",
           "normalize_with_plan", "window", "window_limits"]
