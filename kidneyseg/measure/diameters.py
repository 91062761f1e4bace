"""Longest diameters of a mask in mm: in 3-D, and within one axial slice (the RECIST-style size).

A diameter is the largest distance between the centres of two voxels of the mask (the maximum
Feret diameter of the voxel centres), measured in world mm through the grid's spacing or full
affine, so oblique and sheared (gantry-tilt) grids are measured correctly. Only boundary voxels
can be the ends of a longest chord, and only the vertices of their convex hull, so the exact
maximum is found on a few hundred points; pairwise distances are taken in bounded chunks.

"Axial" is one slice of axis 0 of a canonical (z, y, x) array: the plane nearest the patient's
axial plane (exactly it for an axis-aligned CT).

For a ball of radius R, centre-to-centre diameters lie between ``2R - 2s`` and ``2R`` with ``s``
the voxel size along the measured direction (the voxel centres nearest the surface lie inside it).

>>> import numpy as np
>>> bar = np.zeros((3, 3, 12), bool); bar[1, 1, 1:11] = True     # 10 voxels: centres 9 apart
>>> round(max_diameter_mm(bar, (1.0, 1.0, 0.5)), 3), round(axial_diameter_mm(bar, (1.0, 1.0, 0.5)), 3)
(4.5, 4.5)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .components import bounding_box
from .volumes import linear_part

__all__ = ["axial_diameter_mm", "max_diameter_mm", "max_pairwise_distance"]

#: In-plane 4-neighbourhood within one axial slice (no erosion across slices).
_AXIAL_CROSS = np.zeros((3, 3, 3), bool)
_AXIAL_CROSS[1] = ndimage.generate_binary_structure(2, 1)


def max_pairwise_distance(points: np.ndarray, chunk_elements: int = 1 << 22) -> float:
    """Largest Euclidean distance between two rows of ``points`` (n, d); exact, memory in chunks."""
    from scipy.spatial.distance import cdist

    pts = np.asarray(points, float)
    n = len(pts)
    if n < 2:
        return 0.0
    best = 0.0
    step = max(1, chunk_elements // n)
    for i in range(0, n, step):
        best = max(best, float(cdist(pts[i:i + step], pts[i:]).max()))
    return best


def _hull_points(idx: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of integer index points (all points when the hull is flat)."""
    from scipy.spatial import ConvexHull, QhullError

    if len(idx) <= idx.shape[1] + 1:
        return idx
    try:
        return idx[ConvexHull(idx).vertices]
    except QhullError:  # collinear / coplanar points: all of them are candidates
        return idx


def _boundary(mask: np.ndarray, geometry, structure) -> tuple[np.ndarray | None, np.ndarray]:
    """The boundary voxels of ``mask`` in its bounding box (erosion by ``structure``; ``None``: 3-D
    6-connected) and the 3x3 linear part of ``geometry``; ``(None, lin)`` for an empty mask."""
    lin = linear_part(geometry)
    mask = np.asarray(mask, bool)
    box = bounding_box(mask)
    if box is None:
        return None, lin
    sub = mask[box]
    return sub & ~ndimage.binary_erosion(sub, structure=structure, border_value=0), lin


def max_diameter_mm(mask: np.ndarray, geometry) -> float:
    """Longest 3-D distance (mm) between two voxel centres of ``mask`` (all components); NaN if empty.

    Args:
        mask: boolean (z, y, x).
        geometry: (z, y, x) spacing in mm, or the 4x4 affine (voxel -> world mm).
    """
    boundary, lin = _boundary(mask, geometry, None)
    if boundary is None:
        return float("nan")
    idx = _hull_points(np.argwhere(boundary))  # the hull in index space maps onto the hull in mm
    return max_pairwise_distance(idx @ lin.T)


def axial_diameter_mm(mask: np.ndarray, geometry) -> float:
    """Longest in-plane distance (mm) between two voxel centres in one axial slice, over all slices.

    The RECIST-style long axis: measured within each slice of axis 0, the largest is returned.
    NaN for an empty mask. ``geometry`` as in :func:`max_diameter_mm`.
    """
    boundary, lin = _boundary(mask, geometry, _AXIAL_CROSS)
    if boundary is None:
        return float("nan")
    best = 0.0
    for k in np.flatnonzero(boundary.any(axis=(1, 2))):
        yx = _hull_points(np.argwhere(boundary[k]))
        best = max(best, max_pairwise_distance(yx @ lin[:, 1:].T))
    return best
