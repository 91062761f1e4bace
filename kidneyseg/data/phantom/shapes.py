"""Analytic solids on a z-slab of a (z, y, x) grid: ellipsoids, tubes and capsules, in mm.

A shape knows its bounding box (mm) and a normalized field ``f(z, y, x)`` that is ``< 1`` inside;
:func:`paint` writes a tissue id into the slab's tissue map where the shape is. Everything is a
function of global mm coordinates, so a shape painted into two halves of a volume is the same as
painted at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import wobble_eval


@dataclass
class Slab:
    """Slices ``z0:z1`` of a volume of in-plane shape ``(ny, nx)`` and voxel size ``spacing`` (z, y, x) mm."""

    z0: int
    z1: int
    ny: int
    nx: int
    spacing: tuple[float, float, float]

    def __post_init__(self):
        dz, dy, dx = self.spacing
        self.zmm = (np.arange(self.z0, self.z1) * dz).astype(np.float32)
        self.ymm = (np.arange(self.ny) * dy).astype(np.float32)
        self.xmm = (np.arange(self.nx) * dx).astype(np.float32)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z1 - self.z0, self.ny, self.nx)

    def window(self, lo, hi):
        """Local index slices of the slab covering the mm box ``lo..hi`` (z, y, x), or ``None``."""
        out = []
        for axis, (a, b) in enumerate(zip(lo, hi)):
            d = self.spacing[axis]
            n = self.shape[axis]
            off = self.z0 if axis == 0 else 0
            i0 = max(0, int(np.floor(a / d)) - off)
            i1 = min(n, int(np.ceil(b / d)) + 1 - off)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def coords(self, w):
        """(z, y, x) mm coordinates of window ``w``, shaped to broadcast to (z, y, x)."""
        return (self.zmm[w[0]][:, None, None], self.ymm[w[1]][None, :, None], self.xmm[w[2]][None, None, :])


class Ellipsoid:
    """An ellipsoid, optionally rotated and with a wobbly outline.

    Args:
        center: (z, y, x) mm.
        radii: semi-axes, mm, along the rows of ``axes``.
        axes: 3x3 rotation whose rows are the ellipsoid's axes in (z, y, x) (identity if ``None``).
        wobble: ``(amplitude, params)`` from :func:`fields.wobble`; the outline moves by about
            ``amplitude`` of the radius.
    """

    def __init__(self, center, radii, axes=None, wobble=None):
        self.c = np.asarray(center, np.float64)
        self.r = np.asarray(radii, np.float64)
        self.R = np.eye(3) if axes is None else np.asarray(axes, np.float64)
        self.wobble = wobble

    def bounds(self):
        half = np.sqrt(((self.R * self.r[:, None]) ** 2).sum(axis=0))
        if self.wobble is not None:
            half = half * (1.0 + 1.5 * self.wobble[0])
        return self.c - half, self.c + half

    def local(self, z, y, x):
        d = (z - np.float32(self.c[0]), y - np.float32(self.c[1]), x - np.float32(self.c[2]))
        R = self.R.astype(np.float32)
        return [(R[a, 0] * d[0] + R[a, 1] * d[1] + R[a, 2] * d[2]) / np.float32(self.r[a]) for a in range(3)]

    def field(self, z, y, x):
        q = self.local(z, y, x)
        f = q[0] * q[0] + q[1] * q[1] + q[2] * q[2]
        if self.wobble is not None:
            amp, params = self.wobble
            f = f * (1.0 + np.float32(amp) * wobble_eval(params, *q))
        return f


class Tube:
    """An elliptic cylinder along z whose centre and radii follow keypoints (linear between them).

    Args:
        z: increasing keypoint positions, mm; the tube exists only between the first and last.
        y, x: centre at each keypoint, mm.
        ry, rx: radii at each keypoint, mm.
    """

    def __init__(self, z, y, x, ry, rx):
        self.k = [np.asarray(v, np.float64) for v in (z, y, x, ry, rx)]

    def bounds(self):
        z, y, x, ry, rx = self.k
        return (np.array([z[0], (y - ry).min(), (x - rx).min()]),
                np.array([z[-1], (y + ry).max(), (x + rx).max()]))

    def field(self, z, y, x):
        zk, yk, xk, ryk, rxk = self.k
        zz = z.ravel().astype(np.float64)
        p = [np.interp(zz, zk, v).astype(np.float32)[:, None, None] for v in (yk, xk, ryk, rxk)]
        f = ((y - p[0]) / p[2]) ** 2 + ((x - p[1]) / p[3]) ** 2
        outside = ((zz < zk[0]) | (zz > zk[-1]))[:, None, None]
        return np.where(outside, np.float32(9.0), f)


class Capsule:
    """All points within ``radius`` mm of the segment ``p0``-``p1`` ((z, y, x) mm)."""

    def __init__(self, p0, p1, radius: float):
        self.p0, self.p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
        self.radius = float(radius)

    def bounds(self):
        return np.minimum(self.p0, self.p1) - self.radius, np.maximum(self.p0, self.p1) + self.radius

    def field(self, z, y, x):
        d = (self.p1 - self.p0).astype(np.float32)
        L2 = max(float(d @ d), 1e-9)
        a = (z - np.float32(self.p0[0]), y - np.float32(self.p0[1]), x - np.float32(self.p0[2]))
        t = np.clip((a[0] * d[0] + a[1] * d[1] + a[2] * d[2]) / np.float32(L2), 0.0, 1.0)
        dist2 = (a[0] - t * d[0]) ** 2 + (a[1] - t * d[1]) ** 2 + (a[2] - t * d[2]) ** 2
        return dist2 / np.float32(self.radius ** 2)


class Gated:
    """``shape`` only on the slices where ``(z - phase) mod period < width`` (mm): vertebrae, discs."""

    def __init__(self, shape, period: float, phase: float, width: float):
        self.shape, self.period, self.phase, self.width = shape, float(period), float(phase), float(width)

    def bounds(self):
        return self.shape.bounds()

    def field(self, z, y, x):
        on = np.mod(z - np.float32(self.phase), np.float32(self.period)) < np.float32(self.width)
        return np.where(on, self.shape.field(z, y, x), np.float32(9.0))


def paint(tissue: np.ndarray, slab: Slab, shape, tid: int, *, over=None, minus=None, shell: float | None = None,
          y_range: tuple[float, float] | None = None, where: np.ndarray | None = None) -> None:
    """Write ``tid`` into ``tissue`` (the slab's (z, y, x) uint8 map) where ``shape`` is.

    Args:
        over: a boolean lookup table of 256 entries: only tissues where it is true are replaced.
        minus: a second shape carved out (e.g. the concave side of the spleen).
        shell: keep only ``shell <= f < 1`` (a rind).
        y_range: keep only voxels with ``lo <= y < hi`` (mm): gas above an air-fluid level.
        where: a boolean mask of the whole slab (e.g. the abdominal cavity) to stay inside.
    """
    w = slab.window(*shape.bounds())
    if w is None:
        return
    z, y, x = slab.coords(w)
    f = shape.field(z, y, x)
    m = f < 1.0
    if shell is not None:
        m &= f >= shell
    if minus is not None:
        m &= minus.field(z, y, x) >= 1.0
    if y_range is not None:
        m &= (y >= y_range[0]) & (y < y_range[1])
    if where is not None:
        m &= where[w]
    region = tissue[w]
    if over is not None:
        m &= over[region]
    np.copyto(region, np.uint8(tid), where=m)
