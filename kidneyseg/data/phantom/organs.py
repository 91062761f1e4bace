"""Organs, bowel, spine, muscles and vessels of a phantom, placed relative to the body and kidneys.

:func:`build_layers` draws one case's structures as two ordered lists of :class:`Layer`:
``viscera`` (painted inside the abdominal cavity before the lungs and the perirenal fat: liver,
gallbladder, spleen, stomach, pancreas, small bowel, colon, bladder) and ``frame`` (painted after
them: spine with discs and posterior elements, psoas, quadratus lumborum, erector spinae, pelvic
bones, aorta, IVC, iliac, mesenteric, portal and renal vessels, ureters). Positions are in array mm
(z to the feet, y to the back, x to the patient's left), scaled by the body's cavity (``a_in``,
``b_in``) in-plane and by ``anat.scale`` along z, relative to the renal hilum level ``anat.zk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .appearance import T
from .body import Anatomy
from .fields import wobble
from .shapes import Capsule, Ellipsoid, Gated, Tube, paint

#: Tissues that bowel, vessels and organs may replace (not bone, not the body wall).
_SOFT = np.zeros(256, bool)
for _name in ("visceral_fat", "liver", "spleen", "pancreas", "bowel_wall", "bowel_fluid", "oral_contrast", "gas",
              "feces", "stomach_wall", "perirenal_fat", "muscle", "lung", "heart", "gallbladder", "urine"):
    _SOFT[T[_name]] = True
_FAT = np.zeros(256, bool)
_FAT[T["visceral_fat"]] = True
_INSIDE = np.ones(256, bool)
_INSIDE[[T["air"], T["table"], T["foam"], T["skin"]]] = False


@dataclass
class Layer:
    """One structure to paint: tissue id, shape and the options of :func:`shapes.paint`."""

    tid: int
    shape: object
    in_cavity: bool = False
    over: np.ndarray | None = None
    minus: object = None
    shell: float | None = None
    y_range: tuple[float, float] | None = None


def paint_layers(tissue, slab, layers, cavity) -> None:
    for ly in layers:
        paint(tissue, slab, ly.shape, ly.tid, over=ly.over, minus=ly.minus, shell=ly.shell, y_range=ly.y_range,
              where=cavity if ly.in_cavity else None)


def random_rotation(rng, spread: float) -> np.ndarray:
    """A random rotation near the identity (angles ~ N(0, spread) rad), rows = axes in (z, y, x)."""
    a, b, c = rng.normal(0, spread, 3)
    rz = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, -math.sin(b)], [0, 1, 0], [math.sin(b), 0, math.cos(b)]])
    rx = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axial_rotation(angle: float) -> np.ndarray:
    """Rotation about z by ``angle`` rad (mixes y and x)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


class _Frame:
    """Converts body-relative positions (z mm from the hilum level, fractions of the cavity) to array mm."""

    def __init__(self, anat: Anatomy):
        self.a = anat

    def p(self, z, y, x):
        a = self.a
        return (a.zk + z * a.scale, a.cy + y * a.b_in, a.cx + x * a.a_in)

    def spine(self, z, dy, dx):
        """z mm (scaled) from the hilum level; dy, dx mm (scaled) from the vertebral bodies' centre."""
        a = self.a
        return (a.zk + z * a.scale, a.ys + dy * a.scale, a.cx + dx * a.scale)


def _hollow(layers, shape_wall, shape_lumen, content: int, gas_level: float | None, in_cavity=True):
    layers.append(Layer(T["bowel_wall"], shape_wall, in_cavity, over=_SOFT))
    layers.append(Layer(content, shape_lumen, in_cavity, over=_SOFT))
    if gas_level is not None:
        layers.append(Layer(T["gas"], shape_lumen, in_cavity, over=_SOFT, y_range=(-1e9, gas_level)))


def _viscera(f: _Frame, rng, contrast: bool) -> list[Layer]:
    a = f.a
    s = a.scale
    L: list[Layer] = []
    # Liver: a big right lobe, a left lobe crossing the midline in front, wobbly outlines.
    L.append(Layer(T["liver"], Ellipsoid(f.p(-85, -0.05, -0.42), (95 * s, 0.82 * a.b_in, 0.52 * a.a_in),
                                         random_rotation(rng, 0.08), (0.07, wobble(rng))), True))
    L.append(Layer(T["liver"], Ellipsoid(f.p(-115, -0.45, 0.12), (45 * s, 0.38 * a.b_in, 0.48 * a.a_in),
                                         random_rotation(rng, 0.1), (0.08, wobble(rng))), True))
    gb = Ellipsoid(f.p(rng.uniform(-45, -20), -0.42, -0.28), (32 * s, 14 * s, 15 * s), random_rotation(rng, 0.3))
    L.append(Layer(T["gallbladder"], gb, True, over=_SOFT))
    # Spleen: a crescent against the left posterolateral wall (concave towards the hilum).
    rot = _axial_rotation(-0.6)
    sc = f.p(-80 + rng.uniform(-10, 10), 0.42, 0.62)
    spleen = Ellipsoid(sc, (55 * s, 0.33 * a.b_in, 0.17 * a.a_in), rot, (0.06, wobble(rng)))
    hil = Ellipsoid((sc[0], sc[1] - 0.18 * a.b_in, sc[2] - 0.2 * a.a_in), (45 * s, 0.22 * a.b_in, 0.14 * a.a_in), rot)
    L.append(Layer(T["spleen"], spleen, True, minus=hil))
    # Stomach: wall, fluid (or oral contrast) and a gas cap in front.
    st = f.p(-110, -0.3, 0.32)
    r = np.array([55 * s, 0.32 * a.b_in, 0.3 * a.a_in])
    rot = random_rotation(rng, 0.15)
    level = st[1] - r[1] * rng.uniform(0.1, 0.7)
    _hollow(L, Ellipsoid(st, r, rot, (0.05, wobble(rng))), Ellipsoid(st, r - 5 * s, rot),
            T["oral_contrast"] if contrast else T["bowel_fluid"], level)
    # Pancreas: tail at the splenic hilum, body over the spine, head by the duodenum.
    pts = [f.p(-60, 0.18, 0.48), f.p(-45, -0.2, 0.05), f.p(-22, -0.22, -0.2), f.p(-5, -0.2, -0.28)]
    for p0, p1, rr in zip(pts[:-1], pts[1:], (10, 11, 14)):
        L.append(Layer(T["pancreas"], Capsule(p0, p1, rr * s), True, over=_SOFT))
    # Colon: ascending, transverse (sagging), descending, sigmoid; feces with gas on top.
    sag = rng.uniform(0, 60)
    colon = [f.p(160, -0.05, -0.72), f.p(-35, -0.05, -0.74), f.p(-25 + sag * 0.3, -0.62, -0.35),
             f.p(-10 + sag, -0.66, 0.2), f.p(-85, 0.05, 0.74), f.p(150, 0.12, 0.78), f.p(220, -0.2, 0.35),
             f.p(260, 0.1, 0.0)]
    rc = rng.uniform(18, 25) * s
    for p0, p1 in zip(colon[:-1], colon[1:]):
        level = min(p0[1], p1[1]) - rc * rng.uniform(0.2, 0.7)
        _hollow(L, Capsule(p0, p1, rc), Capsule(p0, p1, rc - 3 * s), T["feces"], level if rng.random() < 0.7 else None)
    # Small bowel: loops in the mid and lower abdomen, in front.
    for _ in range(int(rng.integers(30, 55))):
        c = f.p(rng.uniform(-20, 230), rng.uniform(-0.85, 0.2), rng.uniform(-0.65, 0.65))
        rb = rng.uniform(11, 17) * s
        radii = np.array([rb * rng.uniform(1.0, 2.4), rb, rb])
        rot = random_rotation(rng, 1.2)
        content = T["oral_contrast"] if contrast and rng.random() < 0.7 else T["bowel_fluid"]
        gas = c[1] - rb * rng.uniform(0.0, 0.6) if rng.random() < 0.2 else None
        _hollow(L, Ellipsoid(c, radii, rot), Ellipsoid(c, radii - 2.5 * s, rot), content, gas)
    # Bladder, low in the pelvis.
    bl = f.p(270 + rng.uniform(-15, 15), -0.3, 0.0)
    L.append(Layer(T["muscle"], Ellipsoid(bl, (50 * s, 0.32 * a.b_in, 0.32 * a.a_in)), True))
    L.append(Layer(T["urine"], Ellipsoid(bl, (47 * s, 0.32 * a.b_in - 3 * s, 0.32 * a.a_in - 3 * s)), True))
    return L


def _spine(f: _Frame, rng) -> list[Layer]:
    a = f.a
    s = a.scale
    L: list[Layer] = []
    period = rng.uniform(31, 36) * s
    phase = a.zk + rng.uniform(0, period)
    zz = [-3000, -120, 60, 200, 3000]
    z = [a.zk + v * s for v in zz]
    y = [a.ys] * 5
    x = [a.cx] * 5
    rx = np.array([15.0, 17.0, 22.0, 26.0, 26.0]) * s
    ry = np.array([13.0, 14.0, 16.0, 17.0, 17.0]) * s
    body = Tube(z, y, x, ry, rx)
    L.append(Layer(T["bone_cortical"], body, over=_INSIDE))
    L.append(Layer(T["bone_cancellous"], Tube(z, y, x, ry - 2.5 * s, rx - 2.5 * s), over=_INSIDE))
    L.append(Layer(T["disc"], Gated(Tube(z, y, x, ry, rx), period, phase, 8.5 * s), over=_INSIDE))
    # Posterior arch around the canal, spinous and transverse processes on each vertebra.
    yc = [a.ys + 25 * s] * 5
    L.append(Layer(T["bone_cortical"], Tube(z, yc, x, [13 * s] * 5, [13 * s] * 5), over=_INSIDE))
    L.append(Layer(T["csf"], Tube(z, yc, x, [8 * s] * 5, [9 * s] * 5), over=_INSIDE))
    mid = phase + 8.5 * s + 2 * s
    L.append(Layer(T["bone_cortical"], Gated(Tube(z, [a.ys + 52 * s] * 5, x, [20 * s] * 5, [4 * s] * 5),
                                             period, mid, 0.6 * period), over=_INSIDE))
    for side in (-1, 1):
        tp = Tube([a.zk - 80 * s, a.zk + 140 * s], [a.ys + 22 * s] * 2, [a.cx + side * 33 * s] * 2,
                  [6 * s] * 2, [20 * s] * 2)
        L.append(Layer(T["bone_cortical"], Gated(tp, period, mid + 0.2 * period, 0.3 * period), over=_INSIDE))
    # Iliac wings: plates of bone (cortex and marrow) flaring out over the pelvis.
    for side in (-1, 1):
        c = f.p(190 + rng.uniform(-10, 10), 0.25, side * 0.66)
        rot = _axial_rotation(side * 0.6)
        r = np.array([75 * s, 0.5 * a.b_in, 11 * s])
        L.append(Layer(T["bone_cortical"], Ellipsoid(c, r, rot), over=_INSIDE))
        L.append(Layer(T["bone_cancellous"], Ellipsoid(c, r - np.array([3, 3, 3]) * s, rot), over=_INSIDE))
    return L


def _muscles(f: _Frame, rng) -> list[Layer]:
    a = f.a
    s = a.scale
    L: list[Layer] = []
    g = rng.uniform(0.85, 1.15)  # muscle bulk
    for side in (-1, 1):
        psoas = Tube([a.zk + v * s for v in (-60, -10, 50, 120, 190, 260)],
                     [a.ys + v * s for v in (4, 6, 2, -6, -18, -30)],
                     [a.cx + side * v * s for v in (24, 30, 40, 52, 72, 88)],
                     [v * s * g for v in (5, 13, 18, 22, 24, 20)], [v * s * g for v in (5, 14, 20, 25, 26, 22)])
        L.append(Layer(T["muscle"], psoas, over=_SOFT))
        ql = Tube([a.zk + v * s for v in (-50, 0, 80, 130)], [a.ys + v * s for v in (36, 34, 30, 28)],
                  [a.cx + side * v * s for v in (58, 62, 66, 70)], [v * s * g for v in (6, 10, 11, 8)],
                  [v * s * g for v in (10, 20, 24, 16)])
        L.append(Layer(T["muscle"], ql, over=_SOFT))
        es = Tube([a.zk - 3000, a.zk + 3000], [a.ys + 58 * s] * 2, [a.cx + side * 34 * s] * 2,
                  [24 * s * g] * 2, [27 * s * g] * 2)
        L.append(Layer(T["muscle"], es, over=_SOFT | (np.arange(256) == T["subcutaneous_fat"])))
    return L


def _vessels(f: _Frame, rng) -> list[Layer]:
    a = f.a
    s = a.scale
    L: list[Layer] = []
    bif = a.zk + rng.uniform(80, 110) * s
    az = [a.zk - 3000, a.zk - 250 * s, a.zk - 120 * s, a.zk, bif]
    ay = [a.ys - 2 * s, a.ys - 18 * s, a.ys - 30 * s, a.ys - 32 * s, a.ys - 33 * s]
    ax = [a.cx + 24 * s, a.cx + 20 * s, a.cx + 9 * s, a.cx + 7 * s, a.cx + 3 * s]
    ar = [v * s * rng.uniform(0.9, 1.15) for v in (13, 12, 11, 10, 9)]
    L.append(Layer(T["aorta"], Tube(az, ay, ax, ar, ar), over=_SOFT))
    iz = [a.zk - 260 * s, a.zk - 150 * s, a.zk - 60 * s, a.zk + 10 * s]
    L.append(Layer(T["ivc"], Tube(iz, [a.ys - v * s for v in (55, 40, 30, 30)], [a.cx - v * s for v in (18, 26, 24, 22)],
                                  [11 * s] * 4, [14 * s] * 4), over=_SOFT))
    L.append(Layer(T["ivc_infrarenal"], Tube([a.zk + 10 * s, bif + 10 * s], [a.ys - 30 * s] * 2,
                                             [a.cx - 22 * s, a.cx - 16 * s], [10 * s] * 2, [13 * s] * 2), over=_SOFT))
    for side in (-1, 1):
        p0 = (bif, a.ys - 33 * s, a.cx + 3 * s)
        p1 = (bif + 90 * s, a.ys - 22 * s, a.cx + side * 45 * s)
        p2 = (bif + 200 * s, a.ys - 30 * s, a.cx + side * 75 * s)
        for q0, q1 in ((p0, p1), (p1, p2)):
            L.append(Layer(T["aorta"], Capsule(q0, q1, 6 * s), over=_SOFT))
        v0 = (bif + 10 * s, a.ys - 28 * s, a.cx - 16 * s)
        v1 = (bif + 95 * s, a.ys - 14 * s, a.cx + side * 38 * s)
        v2 = (bif + 200 * s, a.ys - 20 * s, a.cx + side * 68 * s)
        for q0, q1 in ((v0, v1), (v1, v2)):
            L.append(Layer(T["ivc_infrarenal"], Capsule(q0, q1, 8 * s), over=_SOFT))
    # Superior mesenteric artery and vein, portal vein into the liver.
    L.append(Layer(T["aorta"], Capsule((a.zk - 50 * s, a.ys - 45 * s, a.cx + 3 * s),
                                       (a.zk + 120 * s, a.ys - 85 * s, a.cx - 5 * s), 4 * s), over=_SOFT))
    smv_top = (a.zk - 40 * s, a.ys - 52 * s, a.cx - 12 * s)
    L.append(Layer(T["portal_vein"], Capsule(smv_top, (a.zk + 120 * s, a.ys - 90 * s, a.cx - 18 * s), 6 * s),
                   over=_SOFT))
    L.append(Layer(T["portal_vein"], Capsule(smv_top, f.p(-85, -0.2, -0.35), 7 * s), over=_SOFT))
    # Mesenteric branches fanning out from the SMA/SMV into the fat between the bowel loops.
    for _ in range(int(rng.integers(10, 18))):
        z0 = a.zk + rng.uniform(-20, 110) * s
        root = (z0, a.ys - 60 * s, a.cx - 5 * s)
        tip = f.p((z0 - a.zk) / s + rng.uniform(10, 80), rng.uniform(-0.9, -0.3), rng.uniform(-0.6, 0.6))
        tid = T["aorta"] if rng.random() < 0.5 else T["portal_vein"]
        L.append(Layer(tid, Capsule(root, tip, rng.uniform(1.2, 2.2) * s), over=_FAT))
    # Renal arteries from the aorta, renal veins to the IVC (the left one in front of the aorta), ureters.
    aorta_at = (a.ys - 32 * s, a.cx + 7 * s)
    ivc_at = (a.ys - 30 * s, a.cx - 23 * s)
    for k in a.kidneys:
        hz, hy, hx = k.hilum
        L.append(Layer(T["aorta"], Capsule((hz - 8 * s, *aorta_at), (hz, hy, hx), 3.0 * s), over=_SOFT))
        if k.side > 0:
            front = (hz - 4 * s, aorta_at[0] - 16 * s, aorta_at[1])
            L.append(Layer(T["renal_vein"], Capsule((hz, hy, hx), front, 4.5 * s), over=_SOFT))
            L.append(Layer(T["renal_vein"], Capsule(front, (hz - 6 * s, *ivc_at), 4.5 * s), over=_SOFT))
        else:
            L.append(Layer(T["renal_vein"], Capsule((hz, hy, hx), (hz - 4 * s, *ivc_at), 5 * s), over=_SOFT))
        low = (hz + 120 * s, a.ys - 8 * s, a.cx + k.side * 42 * s)
        L.append(Layer(T["urine"], Capsule((hz + 10 * s, hy, hx), low, 2.5 * s), over=_SOFT))
        L.append(Layer(T["urine"], Capsule(low, (hz + 300 * s, a.ys - 20 * s, a.cx + k.side * 50 * s), 2.5 * s),
                       over=_SOFT))
    return L


def build_layers(anat: Anatomy, rng: np.random.Generator, contrast: bool) -> tuple[list[Layer], list[Layer]]:
    """``(viscera, frame)``: the ordered layers of one case (see the module docstring)."""
    f = _Frame(anat)
    viscera = _viscera(f, rng, contrast)
    frame = _muscles(f, rng) + _spine(f, rng) + _vessels(f, rng)
    return viscera, frame
