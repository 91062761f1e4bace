"""The body wall and thorax of a phantom: outline, skin, fat, muscle wall, lungs, ribs, CT table.

The cross-section is a superellipse, rounder in front and flatter at the back (the patient lies
on the table), scaled slowly along z. Subcutaneous fat fills the space between the outline and a
second, inner superellipse (the abdominal cavity) wrapped in a muscle wall that is thick at the
flanks (the three oblique layers, separated by thin fat planes), thinner in front (rectus, split
by the linea alba). Above the diaphragm (a dome, lowest at the back) the cavity holds lung; the
lower ribs cross the wall obliquely. All in array mm: x to the patient's left, y to the back, z to
the feet (see ``kidneyseg.io``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .appearance import T
from .shapes import Slab


@dataclass
class KidneyInfo:
    """A kidney as the anatomy sees it: centre, hilum (both (z, y, x) mm), half extents (mm), side (+1 left)."""

    center: tuple[float, float, float]
    hilum: tuple[float, float, float]
    half: tuple[float, float, float]
    side: int


@dataclass
class Anatomy:
    """Where the body sits in the array, in mm (array frame: z feet-ward, y back-ward, x to the left).

    Attributes:
        cx, cy: body centre (x is also the spine's midline).
        a, b, b_back: outer half width, half depth in front and at the back (skin).
        a_in, b_in: half width and depth of the abdominal cavity (inside the muscle wall).
        zk: reference level, the renal hilum (z mm); organs are placed relative to it.
        ys: y of the vertebral bodies' centre.
        scale: size of the inner anatomy relative to an average adult (1.0).
        kidneys: the kidneys, right (smaller x) first.
    """

    cx: float
    cy: float
    a: float
    b: float
    a_in: float
    b_in: float
    zk: float
    ys: float
    b_back: float = 0.0
    scale: float = 1.0
    kidneys: list = field(default_factory=list)
    p_front: float = 2.1
    p_back: float = 3.2


def _superellipse_radius(theta, a, b, b_back, p_front, p_back):
    """Radius (mm) of the body superellipse in direction theta (y = sin, x = cos; y > 0 is the back)."""
    c, s = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    back = np.sin(theta) > 0
    p = np.where(back, p_back, p_front)
    return 1.0 / ((c / a) ** p + (s / np.where(back, b_back, b)) ** p) ** (1.0 / p)


class Body:
    """Precomputed in-plane maps of one case's body; :meth:`paint` fills a slab's tissue map."""

    def __init__(self, anat: Anatomy, rng: np.random.Generator, ny: int, nx: int, spacing):
        self.anat = anat
        dz, dy, dx = spacing
        Y = (np.arange(ny) * dy - anat.cy).astype(np.float32)[:, None]
        X = (np.arange(nx) * dx - anat.cx).astype(np.float32)[None, :]
        theta = np.arctan2(Y, X)
        r = np.sqrt(X * X + Y * Y) + 1e-3
        R_out = _superellipse_radius(theta, anat.a, anat.b, anat.b_back, anat.p_front, anat.p_back).astype(np.float32)
        R_in = _superellipse_radius(theta, anat.a_in, anat.b_in, anat.b_in, anat.p_front, anat.p_back).astype(np.float32)
        self.r, self.R_out, self.R_in = r, R_out, R_in
        lateral = np.abs(np.cos(theta)).astype(np.float32)
        front = (np.sin(theta) < 0)
        wall = (7.0 + rng.uniform(6, 10) * lateral ** 2 + 3.0 * front).astype(np.float32) * anat.scale
        wall[front & (np.abs(X) < 5.0 * anat.scale)] = 0.0  # linea alba
        self.wall = wall
        self.lateral = lateral > 0.75
        self.skin = 2.0
        # Diaphragm: z (mm) of its surface above each in-plane point; lowest at the back and flanks.
        dome = anat.zk - anat.scale * rng.uniform(135, 165)
        side = np.where(X < 0, -12.0, 0.0)  # the right dome (liver) rides higher
        back = (Y + anat.b_in) / (2 * anat.b_in)
        self.diaphragm = (dome + side + anat.scale * (70.0 * np.clip(back, 0, 1) ** 1.5
                          + 30.0 * np.clip(np.abs(X) / anat.a_in, 0, 1) ** 2)).astype(np.float32)
        self.heart_z = dome - 10.0
        # The CT table: a curved carbon shell under the patient, a foam pad on top of it.
        gap = rng.uniform(0, 8)
        Xa = X / (1.3 * anat.a)
        top = anat.cy + anat.b_back + gap + 35.0 * Xa ** 2
        Yabs = Y + anat.cy
        pad = (Yabs >= top - 4) & (Yabs < top + 22) & (np.abs(Xa) < 1)
        shell = (Yabs >= top + 22) & (Yabs < top + 27) & (np.abs(Xa) < 1.05)
        self.table = (pad.astype(np.uint8) * T["foam"] + shell.astype(np.uint8) * T["table"]).astype(np.uint8)
        # Body scale along z: a little wider over the hips.
        kz = anat.zk + anat.scale * np.array([-400.0, -150.0, 0.0, 130.0, 260.0, 600.0])
        ks = np.array([0.97, 1.0, 1.0, rng.uniform(1.0, 1.05), rng.uniform(1.04, 1.1), 1.1])
        self._kz, self._ks = kz, ks
        self.ribs = self._draw_ribs(rng)
        self._planes: dict = {}
        # The in-plane box that holds the body at its widest: outside it there is only air and table.
        g = float(ks.max()) * 1.02
        self.box = (slice(max(0, int((anat.cy - g * anat.b) / dy) - 2), min(ny, int((anat.cy + g * anat.b_back) / dy) + 3)),
                    slice(max(0, int((anat.cx - g * anat.a) / dx) - 2), min(nx, int((anat.cx + g * anat.a) / dx) + 3)))
        by, bx = self.box
        for name in ("r", "R_out", "R_in", "wall", "lateral"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[by, bx]))

    #: The body's z scale is quantized to this step, so that slices of equal scale share one plane.
    SCALE_STEP = 0.002

    def scale_at(self, z_mm: np.ndarray) -> np.ndarray:
        """The body's in-plane scale at each z (mm), quantized to :attr:`SCALE_STEP`."""
        s = np.interp(np.asarray(z_mm, np.float64), self._kz, self._ks)
        return np.round(s / self.SCALE_STEP).astype(np.int64)

    def _plane(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """(tissue, cavity) of the body box at the quantized scale ``q`` (cached)."""
        if q in self._planes:
            return self._planes[q]
        s = np.float32(q * self.SCALE_STEP)
        depth = s * self.R_out - self.r           # mm below the skin (along the ray from the centre)
        outside_cavity = self.r - s * self.R_in   # mm outside the cavity outline
        tissue = np.zeros(depth.shape, np.uint8)
        np.copyto(tissue, np.uint8(T["skin"]), where=depth > 0)
        np.copyto(tissue, np.uint8(T["subcutaneous_fat"]), where=depth > self.skin)
        in_wall = (outside_cavity > 0) & (outside_cavity <= self.wall) & (depth > self.skin)
        np.copyto(tissue, np.uint8(T["muscle"]), where=in_wall)
        for frac in (0.38, 0.7):  # fat planes between the oblique muscles at the flanks
            plane = in_wall & self.lateral & (np.abs(outside_cavity - frac * self.wall) < 0.9)
            np.copyto(tissue, np.uint8(T["subcutaneous_fat"]), where=plane)
        inner = outside_cavity <= 0
        np.copyto(tissue, np.uint8(T["visceral_fat"]), where=inner)
        if len(self._planes) > 64:
            self._planes.clear()
        self._planes[q] = (tissue, inner)
        return tissue, inner

    def paint(self, tissue: np.ndarray, slab: Slab) -> np.ndarray:
        """Air, table, skin, fat, muscle wall and visceral fat; returns the cavity mask (a (z, y, x) bool)."""
        tissue[:] = self.table
        cavity = np.zeros(tissue.shape, bool)
        by, bx = self.box
        for i, q in enumerate(self.scale_at(slab.zmm).tolist()):
            plane, inner = self._plane(q)
            body = tissue[i, by, bx]
            np.copyto(body, plane, where=plane != 0)
            cavity[i, by, bx] = inner
        return cavity

    def paint_thorax(self, tissue: np.ndarray, slab: Slab, cavity: np.ndarray) -> None:
        """Lung above the diaphragm, the heart on it, and the ribs in the wall."""
        z = slab.zmm[:, None, None]
        if float(slab.zmm.min()) < float(self.diaphragm.max()):
            np.copyto(tissue, np.uint8(T["lung"]), where=cavity & (z < self.diaphragm))
            a = self.anat
            Y = slab.ymm[None, :, None] - (a.cy - 0.35 * a.b_in)
            X = slab.xmm[None, None, :] - (a.cx + 0.2 * a.a_in)
            f = ((z - (self.heart_z - 55 * a.scale)) / (65 * a.scale)) ** 2 + (Y / (0.55 * a.b_in)) ** 2 \
                + (X / (0.45 * a.a_in)) ** 2
            np.copyto(tissue, np.uint8(T["heart"]), where=(f < 1) & cavity)
        self._paint_ribs(tissue, slab)

    # ------------------------------------------------------------------------------------ ribs
    def _draw_ribs(self, rng):
        """Ribs 6-12 each side: (z at the back, z drop to the front, angular end, radii)."""
        a = self.anat
        ribs = []
        for k in range(7):  # rib 12 (lowest) first
            z_back = a.zk + a.scale * (rng.uniform(-75, -55) - 27.0 * k)
            for side in (-1, 1):
                ribs.append((side, z_back + rng.uniform(-5, 5), a.scale * rng.uniform(60, 90),
                             0.35, 1.2 + 0.17 * k + rng.uniform(-0.1, 0.1)))
        return ribs

    def _paint_ribs(self, tissue, slab):
        a = self.anat
        dz, dy, dx = slab.spacing
        cortical, marrow = np.uint8(T["bone_cortical"]), np.uint8(T["bone_cancellous"])
        s_all = self.scale_at(slab.zmm) * self.SCALE_STEP
        for side, z_back, drop, phi0, phi1 in self.ribs:
            # phi: angle from the back midline towards the front; the rib sinks by `drop` mm over it.
            phi = (slab.zmm - z_back) / drop * (phi1 - phi0) + phi0
            for i in np.nonzero((phi >= phi0) & (phi <= phi1))[0]:
                th = math.pi / 2 - side * float(phi[i])  # y = sin, x = cos; phi 0 = straight back
                rin = float(_superellipse_radius(np.array(th), a.a_in, a.b_in, a.b_in, a.p_front, a.p_back))
                rad = rin * float(s_all[i]) + 6.0 * a.scale
                yc, xc = a.cy + rad * math.sin(th), a.cx + rad * math.cos(th)
                along = min(30.0, 7.0 / max(0.25, abs(math.sin(float(phi[i]))))) * a.scale  # oblique cut
                ry, rx = 5.5 * a.scale, along
                # the long axis runs along the wall (tangent), approximated by the direction's normal
                ty, tx = math.cos(th), -math.sin(th)
                half = max(ry, rx)
                j0, j1 = max(0, int((yc - half) / dy)), min(slab.ny, int((yc + half) / dy) + 2)
                i0, i1 = max(0, int((xc - half) / dx)), min(slab.nx, int((xc + half) / dx) + 2)
                if j1 <= j0 or i1 <= i0:
                    continue
                Y = slab.ymm[j0:j1, None] - yc
                X = slab.xmm[None, i0:i1] - xc
                u = (Y * ty + X * tx) / rx
                v = (Y * tx - X * ty) / ry
                f = u * u + v * v
                region = tissue[i, j0:j1, i0:i1]
                np.copyto(region, cortical, where=f < 1)
                np.copyto(region, marrow, where=f < 0.35)
