"""The patient's body in a CT: the kidneys lie inside it, so stage 1 need not look at the air around it.

A CT's field of view is a square (often 350-500 mm) while an abdomen is an ellipse about 230-300 mm
front to back: a third or more of every axial slice is air. At inference, stage 1 runs on the
bounding box of the body (voxels above ``threshold_hu``, plus ``margin_mm`` of air on each side)
instead of the whole field of view; on a typical 512 x 512 x 150 abdominal CT that takes the stage-1
sliding window from 18 windows to 4 (``benchmarks/predict.py``). Stage 1 still sees air around the
body, as in training, where patches reach past the body.

The box comes from per-axis projections of the thresholded volume, computed in z-slabs (no
full-size mask is kept). A position belongs to the body when its projected count reaches
``min_fraction`` of that axis's largest count, so a few stray bright voxels in the air (noise, a
marker) do not stretch the box, while the table, arms and the whole body do count.

>>> import numpy as np
>>> ct = np.full((10, 60, 80), -1000.0, np.float32)
>>> ct[:, 20:40, 10:70] = 40.0                     # the body
>>> body_slices(ct, (5.0, 1.0, 1.0), margin_mm=5.0)
(slice(0, 10, None), slice(15, 45, None), slice(5, 75, None))
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Between air (-1000 HU) and fat (about -100 HU): body, table and clothing are above it.
BODY_HU = -500.0

__all__ = ["BODY_HU", "body_slices"]


def body_slices(image: np.ndarray, spacing: Sequence[float], threshold_hu: float = BODY_HU,
                margin_mm: float = 10.0, min_fraction: float = 0.002,
                slab_voxels: int = 2 ** 24) -> tuple[slice, slice, slice] | None:
    """The body's bounding box plus ``margin_mm``, as slices of ``image``; ``None`` when nothing is above the threshold.

    Args:
        image: (z, y, x) CT in HU, any real dtype; not modified.
        spacing: voxel size (z, y, x) in mm.
        threshold_hu: body voxels are above this, HU.
        margin_mm: air kept on each side of the body, mm (clipped at the volume's edges).
        min_fraction: a position along an axis belongs to the body when the body voxels projected
            onto it reach this fraction of the axis's largest projection.
        slab_voxels: voxels thresholded at a time (bounds the temporary mask's memory).

    Returns:
        ``(slice_z, slice_y, slice_x)``.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (z, y, x), got shape {image.shape}")
    if margin_mm < 0 or not 0 <= min_fraction < 1:
        raise ValueError(f"margin_mm must be >= 0 and min_fraction in [0, 1), got {margin_mm!r}, {min_fraction!r}")
    nz, ny, nx = image.shape
    counts = [np.zeros(nz, np.int64), np.zeros(ny, np.int64), np.zeros(nx, np.int64)]
    step = max(1, slab_voxels // max(1, ny * nx))
    for z0 in range(0, nz, step):
        m = image[z0:z0 + step] > threshold_hu
        counts[0][z0:z0 + step] = m.sum(axis=(1, 2))
        counts[1] += m.sum(axis=(0, 2))
        counts[2] += m.sum(axis=(0, 1))
    if counts[0].max() == 0:
        return None
    out = []
    for c, n, s in zip(counts, image.shape, spacing):
        idx = np.flatnonzero(c >= max(1, min_fraction * c.max()))
        pad = int(math.ceil(margin_mm / float(s)))
        out.append(slice(max(0, int(idx[0]) - pad), min(n, int(idx[-1]) + 1 + pad)))
    return tuple(out)  # type: ignore[return-value]
