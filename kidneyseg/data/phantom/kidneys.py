"""Kidneys and tumors: synthetic label maps, and the tissue inside and around any kidney label.

:func:`draw_kidneys` makes the label of a synthetic case: two bean-shaped kidneys (length
100-130 mm, tilted: upper poles medial and posterior, hilum facing front and medially, the right
one lower) and 0-2 tumors whose largest diameter follows KiTS19 (``tumor_sizes``), placed
endophytic (inside the parenchyma), mesophytic or exophytic (bulging out).

:func:`kidney_tissue` turns any kidney label (synthetic or real) into tissue ids inside its
bounding box: cortex (the outer 4-7 mm rind), medullary pyramids, the renal sinus fat and pelvis
at the hilum, perirenal fat around the kidney, and tumors (one contrast class per connected
component, a necrotic core in large ones), label 3 as a cyst. It is computed once per case over
the kidneys' box, so slabs painted later need no context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...measure.components import bounding_box
from .appearance import T, tumor_id
from .body import Anatomy, KidneyInfo
from .fields import ValueNoise, wobble
from .organs import random_rotation
from .shapes import Ellipsoid, Slab, paint
from .tumor_sizes import draw_diameter_cm

#: Margin (mm) around the kidney labels inside which perirenal fat and the sinus are drawn.
MARGIN_MM = 24.0


@dataclass
class KidneyTissue:
    """Tissue ids over the kidneys' box (global (z, y, x) index slices ``box``).

    ``around``: perirenal and sinus fat, renal pelvis (0 = leave as is); painted before the spine,
    muscles and vessels. ``inside``: kidney, tumor and cyst tissue (0 = not in the label);
    painted last, so the label's voxels always show kidney tissue.
    """

    box: tuple[slice, slice, slice]
    around: np.ndarray
    inside: np.ndarray

    def apply(self, tissue: np.ndarray, z0: int, which: str) -> None:
        """Copy ``around`` or ``inside`` into a slab's tissue map whose first slice is ``z0``."""
        b = self.box
        lo, hi = max(b[0].start, z0), min(b[0].stop, z0 + tissue.shape[0])
        if hi <= lo:
            return
        src = (self.around if which == "around" else self.inside)[lo - b[0].start: hi - b[0].start]
        dst = tissue[lo - z0: hi - z0, b[1], b[2]]
        np.copyto(dst, src, where=src != 0)


def _edt(mask: np.ndarray, sp) -> np.ndarray:
    """Distance (mm, float32) from each ``True`` voxel to the nearest ``False`` one, on a ~1.5 mm grid.

    Axes finer than 1.5 mm are subsampled (every k-th voxel, the result repeated k times): the
    cortex, necrosis and perirenal fat need ~1 mm accuracy, and the exact transform at 0.5 x 0.8 x
    0.8 mm was the slowest step of painting (seconds per case).
    """
    k = [max(1, int(round(1.5 / d))) for d in sp]
    sub = mask[:: k[0], :: k[1], :: k[2]]
    d = ndimage.distance_transform_edt(sub, sampling=[s * f for s, f in zip(sp, k)]).astype(np.float32)
    for axis, f in enumerate(k):
        if f > 1:
            d = np.repeat(d, f, axis=axis)
    return d[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def _components(mask: np.ndarray, sp) -> tuple[np.ndarray, int, np.ndarray]:
    """``(labels, n, volumes ml)`` of the connected parts of ``mask``, found on the ~1.5 mm grid of
    :func:`_edt` (labelling at full resolution took seconds on thin-slice cases) and returned at
    full resolution (voxels of ``mask`` only; fragments the coarse grid misses get 0)."""
    k = [max(1, int(round(1.5 / d))) for d in sp]
    coarse, n = ndimage.label(mask[:: k[0], :: k[1], :: k[2]])
    vol = np.bincount(coarse.ravel(), minlength=n + 1)[1:] * (float(np.prod(sp)) * np.prod(k) / 1000.0)
    full = coarse
    for axis, f in enumerate(k):
        if f > 1:
            full = np.repeat(full, f, axis=axis)
    full = full[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    return np.where(mask, full, 0), n, vol


def _kidney_axes(side: int, rng) -> np.ndarray:
    """Rows: the long axis (upper pole medial and back), the front-back axis, the lateral axis."""
    tilt_cor = math.radians(rng.uniform(8, 20)) * side      # upper pole towards the spine
    tilt_sag = math.radians(rng.uniform(5, 20))              # upper pole towards the back
    turn = math.radians(rng.uniform(20, 40)) * side          # hilum faces front and medially
    long = np.array([math.cos(tilt_cor) * math.cos(tilt_sag), -math.sin(tilt_sag), math.sin(tilt_cor)])
    long /= np.linalg.norm(long)
    lateral = np.array([0.0, -math.sin(turn), math.cos(turn)]) * side
    lateral -= long * (lateral @ long)
    lateral /= np.linalg.norm(lateral)
    ap = np.cross(long, lateral)
    return np.stack([long, ap, lateral])


def draw_kidneys(rng: np.random.Generator, anat: Anatomy, shape, spacing, tumor_counts, kidney_scale: float = 1.0):
    """Paint two kidneys and their tumors into a new label map; fills ``anat.kidneys``.

    Returns:
        ``(label (z, y, x) uint8, largest tumor diameter in cm or 0)``.
    """
    label = np.zeros(shape, np.uint8)
    slab = Slab(0, shape[0], shape[1], shape[2], spacing)
    s = anat.scale * kidney_scale
    kidneys = []
    drop = rng.uniform(5, 25) * anat.scale
    for side in (-1, 1):
        radii = np.array([rng.uniform(50, 65), rng.uniform(18, 23), rng.uniform(26, 31)]) * s
        c = np.array([anat.zk + (drop if side < 0 else 0.0) + rng.uniform(-4, 4) * anat.scale,
                      anat.ys + rng.uniform(0, 12) * anat.scale,
                      anat.cx + side * rng.uniform(72, 85) * anat.scale])
        axes = _kidney_axes(side, rng)
        kid = Ellipsoid(c, radii, axes, (0.05, wobble(rng)))
        hilum_local = np.array([0.0, -0.3, -0.85]) * radii
        hc = c + axes.T @ hilum_local
        hil = Ellipsoid(hc, radii * np.array([0.42, 0.42, 0.45]), axes)
        paint(label, slab, kid, 1, minus=hil)
        hilum = c + axes.T @ (np.array([0.0, -0.25, -1.05]) * radii)
        kidneys.append((c, radii, axes, side, hilum))
        anat.kidneys.append(KidneyInfo(tuple(c), tuple(hilum), tuple(radii), side))
    diam = 0.0
    n_t = int(rng.choice(3, p=np.asarray(tumor_counts, float)))
    for t in range(n_t):
        c, radii, axes, side, _ = kidneys[int(rng.integers(2))]
        d_cm = draw_diameter_cm(rng) * (1.0 if t == 0 else rng.uniform(0.3, 0.7))
        rt = 5.0 * d_cm * kidney_scale * anat.scale                   # radius, mm
        tr = rt * rng.uniform(0.85, 1.15, 3)
        u = rng.normal(size=3)
        u[2] = abs(u[2]) * side * 1.5  # mostly away from the hilum
        u /= np.linalg.norm(u)
        q = axes @ u
        reach = 1.0 / math.sqrt(float(((q / radii) ** 2).sum()))    # centre-to-surface along u, mm
        kind = rng.choice(3, p=[0.3, 0.4, 0.3])                      # endo-, meso-, exophytic
        if kind == 0:
            dist = rng.uniform(0, max(0.0, reach - rt)) if reach > rt else 0.3 * reach
        elif kind == 1:
            dist = max(0.0, reach - rt * rng.uniform(0.1, 0.6))
        else:
            dist = reach + rt * rng.uniform(-0.1, 0.5)
        tc = c + u * dist
        paint(label, slab, Ellipsoid(tc, tr, random_rotation(rng, 0.5), (0.07, wobble(rng))), 2)
        diam = max(diam, d_cm * kidney_scale * anat.scale)
    return label, diam


def kidney_components(label, spacing, boxes) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(centre, half extents)`` (mm, (z, y, x)) of the (up to) two largest kidney components, by x.

    ``boxes`` are the global index slices of the label's non-zero box; only ``label[boxes]`` is read.
    """
    sp = np.asarray(spacing, float)
    comps, n, sizes = _components(np.asarray(label[boxes]) > 0, sp)
    if n == 0:
        return []
    order = [int(i) + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] >= 0.1 * sizes.max()]
    objs = ndimage.find_objects(comps)
    off = np.array([b.start for b in boxes], float)
    out = []
    for i in order:
        sl = objs[i - 1]
        com = np.array(ndimage.center_of_mass(comps[sl] == i)) + [s.start for s in sl]
        out.append(((com + off) * sp, np.array([(s.stop - s.start) * d / 2 for s, d in zip(sl, sp)])))
    return sorted(out, key=lambda t: t[0][2])


def kidney_infos(components, cx: float) -> list[KidneyInfo]:
    """:class:`KidneyInfo` of each component; a kidney left of the midline ``cx`` (larger x) has side +1."""
    out = []
    for center, half in components:
        side = 1 if center[2] > cx else -1
        hilum = center + np.array([0.0, -0.25 * half[1], -side * 0.75 * half[2]])
        out.append(KidneyInfo(tuple(center), tuple(hilum), tuple(half), side))
    return out


def kidney_tissue(label, spacing, anat: Anatomy, rng: np.random.Generator) -> KidneyTissue | None:
    """The tissue in and around the kidney label (see the module docstring); ``None`` without kidneys.

    Args:
        label: (z, y, x) label map (any memory order; only the kidneys' box is copied).
        spacing: (z, y, x) mm. anat: the case's anatomy (hilum points). rng: the case's generator.
    """
    fg = bounding_box(label)
    if fg is None:
        return None
    sp = np.asarray(spacing, float)
    m = [int(math.ceil(MARGIN_MM / d)) for d in sp]
    box = tuple(slice(max(0, fg[a].start - m[a]), min(label.shape[a], fg[a].stop + m[a])) for a in range(3))
    lab = np.ascontiguousarray(label[box])
    kid = lab > 0
    around = np.zeros(lab.shape, np.uint8)
    inside = np.zeros(lab.shape, np.uint8)
    origin = np.array([b.start for b in box], float) * sp
    local = Slab(0, lab.shape[0], lab.shape[1], lab.shape[2], tuple(sp))
    # Perirenal fat: within 6-18 mm of the kidney (a wobbly capsule), computed per component box.
    fat_mm = rng.uniform(6, 18)
    pyr_field = ValueNoise(rng, (7.0, 7.0, 7.0), origin, lab.shape * sp)
    cortex_mm = rng.uniform(4.0, 7.0)
    voxel_ml = float(np.prod(sp)) / 1000.0
    np.copyto(inside, np.uint8(T["kidney_cortex"]), where=kid)
    comps, n, sizes = _components(kid, sp)
    for i, sl in enumerate(ndimage.find_objects(comps)):
        if sl is None or sizes[i] < 2.0:  # fragments: cortex only, no distance transforms
            continue
        grow = tuple(slice(max(0, s.start - mm), min(nn, s.stop + mm)) for s, mm, nn in zip(sl, m, lab.shape))
        k = comps[grow] == i + 1
        ring = (~k) & (_edt(~k, sp) <= fat_mm)
        np.copyto(around[grow], np.uint8(T["perirenal_fat"]), where=ring)
        zs, ys, xs = (origin[a] + np.arange(grow[a].start, grow[a].stop) * sp[a] for a in range(3))
        medulla = k & (_edt(k, sp) > cortex_mm) & (pyr_field.sample(zs, ys, xs) > -0.15)
        np.copyto(inside[grow], np.uint8(T["kidney_medulla"]), where=medulla)
    # Renal sinus fat and pelvis at each hilum, outside the label.
    for info in anat.kidneys:
        hz, hy, hx = np.asarray(info.hilum) - origin
        r = max(min(info.half[1], info.half[2]) * 0.55, 8.0)
        paint(around, local, Ellipsoid((hz, hy, hx), (1.6 * r, r, r)), T["sinus_fat"],
              where=~kid)
        paint(around, local, Ellipsoid((hz, hy, hx), (0.9 * r, 0.55 * r, 0.55 * r)), T["urine"], where=~kid)
    # Tumors: one look per connected component; a necrotic core in large ones. Label 3: cyst.
    tum, n_t = ndimage.label(lab == 2)
    if n_t:
        ids = np.array([0] + [tumor_id(i) for i in range(n_t)], np.uint8)
        np.copyto(inside, ids[tum], where=tum > 0)
        big = np.bincount(tum.ravel(), minlength=n_t + 1)[1:] * voxel_ml > 14.0  # > a 30 mm sphere
        for i, sl in enumerate(ndimage.find_objects(tum)):
            if not big[i]:
                continue
            t = tum[sl] == i + 1
            d = _edt(t, sp)
            if d.max() > 15.0 and rng.random() < 0.6:
                inside[sl][t & (d > rng.uniform(0.45, 0.7) * d.max())] = tumor_id(i, True)
    np.copyto(inside, np.uint8(T["cyst"]), where=lab == 3)
    return KidneyTissue(box, around, inside)
