"""Random fields that a z-slab can evaluate on its own: texture and CT noise without seams.

Every value here is a pure function of a voxel's global position (and the case's random draw),
never of the slab it is computed in, so a volume painted slab by slab is bit-identical to one
painted in one go:

* :class:`ValueNoise` -- a smooth field: normal random values on a coarse lattice (``cell`` mm),
  interpolated with smoothstep weights (separable, elementwise: no BLAS, no thread dependence).
* :class:`NoiseBank` -- CT-like noise (and fine texture): a few in-plane correlated noise tiles
  made once per case, periodic, cut per slice at a drawn offset; two banks of coprime periods are
  summed so that no repetition shows.
* :func:`wobble` -- a sum of low-frequency cosines, used to make organ outlines irregular.

Arrays are (z, y, x); coordinates in mm.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


class ValueNoise:
    """A smooth random field with unit-ish variance and a feature size of about ``cell`` mm.

    Args:
        rng: the case's random generator.
        cell: (z, y, x) lattice spacing, mm.
        origin: (z, y, x) mm of the lattice's first node.
        extent: (z, y, x) mm covered from ``origin`` (positions outside are clamped).

    >>> f = ValueNoise(np.random.default_rng(0), (4.0, 4.0, 4.0), (0, 0, 0), (40, 40, 40))
    >>> f.sample(np.arange(3) * 2.0, np.arange(5) * 1.0, np.arange(4) * 1.0).shape
    (3, 5, 4)
    """

    def __init__(self, rng: np.random.Generator, cell, origin, extent):
        self.cell = tuple(float(c) for c in cell)
        self.origin = tuple(float(o) for o in origin)
        n = [int(math.ceil(e / c)) + 3 for e, c in zip(extent, self.cell)]
        self.lattice = rng.standard_normal(n, dtype=np.float32)

    def _axis(self, coords: np.ndarray, axis: int):
        u = (np.asarray(coords, np.float64) - self.origin[axis]) / self.cell[axis]
        u = np.clip(u, 0.0, self.lattice.shape[axis] - 2.0 - 1e-6)
        i0 = np.floor(u).astype(np.intp)
        return i0, _smoothstep(u - i0)

    def sample(self, zs: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The field on the grid ``zs x ys x xs`` (1D mm coordinates): a (len(zs), len(ys), len(xs)) float32."""
        iz, tz = self._axis(zs, 0)
        iy, ty = self._axis(ys, 1)
        ix, tx = self._axis(xs, 2)
        r0 = int(iz.min())
        rows = self.lattice[r0: int(iz.max()) + 2]
        a = np.ascontiguousarray(rows[:, :, ix] * (1.0 - tx) + rows[:, :, ix + 1] * tx)   # (R, Ly, nx)
        b = np.empty((a.shape[0], len(iy), a.shape[2]), np.float32)                        # (R, ny, nx)
        np.multiply(a[:, iy, :], (1.0 - ty)[:, None], out=b)
        b += a[:, iy + 1, :] * ty[:, None]
        out = np.empty((len(iz),) + b.shape[1:], np.float32)
        for i, (k, w) in enumerate(zip((iz - r0).tolist(), tz.tolist())):
            np.multiply(b[k], np.float32(1.0 - w), out=out[i])
            out[i] += b[k + 1] * np.float32(w)
        return out


class NoiseBank:
    """In-plane correlated Gaussian noise (unit standard deviation) for every slice of a volume.

    Slice ``z`` gets ``(A[a_z][oy:oy+ny, ox:ox+nx] + B[b_z][...]) / sqrt(2)`` where ``A`` and ``B``
    are ``k`` periodic tiles of side 256 and 241 px, filtered with a Gaussian of ``sigma`` px
    (CT noise is correlated by the reconstruction kernel) and renormalized; tile and offsets are
    drawn per slice once, so the noise of a slice does not depend on how the volume is cut.

    Args:
        rng: the case's random generator.
        n_slices, ny, nx: the volume's shape.
        sigma: in-plane correlation, px.
        k: tiles per bank.
        periods: the two tile sizes, px (coprime).
    """

    def __init__(self, rng: np.random.Generator, n_slices: int, ny: int, nx: int, sigma: float = 0.7, k: int = 4,
                 periods: tuple[int, int] = (256, 241)):
        self.ny, self.nx = ny, nx
        self.tiles, self.pick = [], []
        for p in periods:
            t = rng.standard_normal((k, p, p), dtype=np.float32)
            if sigma > 0:
                t = ndimage.gaussian_filter(t, (0, sigma, sigma), mode="wrap")
            t /= t.std(axis=(1, 2), keepdims=True)
            self.tiles.append(np.pad(t, ((0, 0), (0, ny), (0, nx)), mode="wrap"))
            self.pick.append(np.stack([rng.integers(0, k, n_slices), rng.integers(0, p, n_slices),
                                       rng.integers(0, p, n_slices)], axis=1))

    def slice(self, z: int, ys: slice, xs: slice) -> np.ndarray:
        """The noise of slice ``z`` on the in-plane window ``ys, xs`` (a new float32 array)."""
        (ta, tb), (pa, pb) = self.tiles, self.pick
        a, ay, ax = pa[z]
        b, by, bx = pb[z]
        na = ta[a, ay + ys.start: ay + ys.stop, ax + xs.start: ax + xs.stop]
        nb = tb[b, by + ys.start: by + ys.stop, bx + xs.start: bx + xs.stop]
        out = na + nb
        out *= np.float32(1.0 / math.sqrt(2.0))
        return out

    def add_to(self, out: np.ndarray, z0: int, scale, ys: slice, xs: slice) -> None:
        """``out[i] += scale[i] * noise(z0 + i)[ys, xs]`` for every slice ``i`` of ``out``.

        ``scale`` is a number or an array broadcasting to ``out`` (e.g. a texture amplitude per voxel).
        """
        scale = np.asarray(scale, np.float32)
        for i in range(out.shape[0]):
            n = self.slice(z0 + i, ys, xs)
            n *= scale if scale.ndim == 0 else scale[i]
            out[i] += n


def wobble(rng: np.random.Generator, n: int = 3, spread: float = 1.6):
    """Parameters of a smooth outline perturbation: ``n`` random wave vectors and phases."""
    return rng.normal(0.0, spread, size=(n, 3)).astype(np.float32), rng.uniform(0, 2 * np.pi, n).astype(np.float32)


def wobble_eval(params, q0, q1, q2) -> np.ndarray:
    """Mean of ``cos(w . q + phase)`` over the waves of :func:`wobble`; q are broadcastable local coordinates."""
    waves, phases = params
    total = 0.0
    for w, ph in zip(waves, phases):
        total = total + np.cos(w[0] * q0 + w[1] * q1 + w[2] * q2 + ph)
    return total / len(phases)
