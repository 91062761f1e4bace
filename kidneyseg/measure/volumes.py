"""Volumes of masks in millilitres, from the voxel spacing or the full affine.

>>> import numpy as np
>>> volume_ml(np.ones((10, 10, 10), bool), (1.0, 1.0, 1.0))
1.0
>>> round(voxel_volume_ml(np.diag([0.8, 0.8, 2.5, 1.0])), 6)
0.0016
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["linear_part", "volume_ml", "voxel_volume_ml"]


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or min(sp) <= 0 or not all(math.isfinite(s) for s in sp):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing!r}")
    return sp  # type: ignore[return-value]


def linear_part(geometry) -> np.ndarray:
    """The 3x3 matrix taking (z, y, x) voxel-index steps to mm.

    ``geometry`` is a spacing (3 numbers, mm, (z, y, x): an axis-aligned grid) or an affine
    (4x4 or 3x3, voxel index -> world mm; its columns may be oblique or sheared).
    """
    g = np.asarray(geometry, float)
    if g.shape == (3,):
        return np.diag(_check_spacing(g))
    if g.shape in ((4, 4), (3, 3)):
        lin = g[:3, :3]
        if not np.all(np.isfinite(lin)) or abs(np.linalg.det(lin)) < 1e-12:
            raise ValueError(f"affine must be finite and invertible, got {lin.tolist()!r}")
        return lin
    raise ValueError(f"geometry must be a (z, y, x) spacing or a 4x4 affine, got shape {g.shape}")


def voxel_volume_ml(geometry) -> float:
    """Volume of one voxel in ml (1 ml = 1000 mm³): ``|det|`` of the affine, the spacings' product."""
    return float(abs(np.linalg.det(linear_part(geometry)))) / 1000.0


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a boolean mask in millilitres (1 ml = 1000 mm³); ``spacing`` (z, y, x) mm or an affine."""
    g = np.asarray(spacing, float)
    if g.shape == (3,):
        sp = _check_spacing(spacing)
        return float(np.count_nonzero(mask)) * sp[0] * sp[1] * sp[2] / 1000.0
    return float(np.count_nonzero(mask)) * voxel_volume_ml(g)
