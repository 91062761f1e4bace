"""Where the body goes: drawn for a synthetic case, or fitted around the kidneys of a real label.

Both return an :class:`~kidneyseg.data.phantom.body.Anatomy` in array mm. The inner anatomy (the
abdominal cavity, 250-290 mm wide for an average adult) varies little between people; body width
varies mostly with subcutaneous fat, so a wider body means more fat.
"""

from __future__ import annotations

import math

import numpy as np

from .body import Anatomy
from ...measure.components import bounding_box
from .kidneys import draw_kidneys, kidney_components, kidney_infos
from .options import PhantomOptions


def _cavity(rng, scale):
    a_in = rng.uniform(125, 145) * scale
    return a_in, a_in * rng.uniform(0.68, 0.78)


def draw_synthetic(rng: np.random.Generator, opts: PhantomOptions):
    """Draw the geometry and kidney/tumor label of one synthetic case.

    Returns:
        ``(label (z, y, x) uint8, spacing (z, y, x) mm, anatomy, largest tumor diameter cm)``.
    """
    scale = rng.uniform(0.9, 1.08)
    a_in, b_in = _cavity(rng, scale)
    a = max(rng.uniform(*opts.body_width_mm) / 2, a_in + 25 * scale)
    fat = a - a_in - 15 * scale
    ys_rel = rng.uniform(0.55, 0.7) * b_in  # vertebral bodies behind the centre
    b = b_in + 10 * scale + fat * rng.uniform(0.6, 0.9)
    b_back = ys_rel + 85 * scale + fat * rng.uniform(0.4, 0.7)
    n = int(opts.size)
    if opts.spacing_xy is None:
        dxy = round(2 * a * rng.uniform(1.08, 1.3) / n, 4)
    else:
        dxy = round(float(rng.uniform(*opts.spacing_xy)), 4)
    dz = float(rng.choice(np.asarray(opts.spacing_z, float)))
    fov = n * dxy
    if fov >= 2 * a * 1.02:
        cx = fov / 2 + rng.uniform(-0.03, 0.03) * fov
        cy = fov / 2 - (b_back - b) / 2 + rng.uniform(-0.03, 0.02) * fov
    else:  # a field of view smaller than the body: centred on the kidneys
        cx = fov / 2 + rng.uniform(-0.02, 0.02) * fov
        cy = fov / 2 - ys_rel - 8 * scale
    # Along z: the kidneys sit around 0 (the hilum level), the scan covers them plus margins.
    ext_top, ext_bot = -75 * scale * opts.kidney_scale, 95 * scale * opts.kidney_scale
    if opts.slices is None:
        top = ext_top - rng.uniform(*opts.coverage_mm)
        bottom = ext_bot + rng.uniform(*opts.coverage_mm)
        nz = max(4, int(math.ceil((bottom - top) / dz)))
    else:
        nz = int(rng.integers(opts.slices[0], opts.slices[1] + 1))
        top = (ext_top + ext_bot) / 2 - nz * dz / 2 + rng.uniform(-0.1, 0.1) * nz * dz
    anat = Anatomy(cx=float(cx), cy=float(cy), a=float(a), b=float(b), a_in=float(a_in), b_in=float(b_in),
                   zk=float(-top), ys=float(cy + ys_rel), b_back=float(b_back), scale=float(scale),
                   p_front=float(rng.uniform(1.9, 2.3)), p_back=float(rng.uniform(2.6, 3.6)))
    spacing = (dz, dxy, dxy)
    label, diam = draw_kidneys(rng, anat, (nz, n, n), spacing, opts.tumor_counts, float(opts.kidney_scale))
    return label, spacing, anat, diam


def anatomy_from_label(label, spacing, rng: np.random.Generator) -> Anatomy:
    """Fit a body around the kidneys of a (real) label map.

    The spine goes midway between the two largest kidney components (real kidney centres are
    ~150 mm apart, which sets the inner anatomy's scale), the vertebral bodies at the kidneys'
    depth, the body outline around them with drawn subcutaneous fat, shrunk where needed to stay
    inside the field of view. The hilum level is the kidneys' mean centre.

    Args:
        label: (z, y, x) label map (any memory order); spacing: (z, y, x) mm.
    """
    shape = label.shape
    dz, dy, dx = (float(s) for s in spacing)
    fov_y, fov_x = shape[1] * dy, shape[2] * dx
    box = bounding_box(label)
    comps = kidney_components(label, spacing, box) if box is not None else []
    if len(comps) == 2 and 70 < comps[1][0][2] - comps[0][0][2] < 280:
        cx = (comps[0][0][2] + comps[1][0][2]) / 2
        scale = float(np.clip((comps[1][0][2] - comps[0][0][2]) / 155.0, 0.75, 1.3))
    elif comps:
        k, half = comps[0][0][2], comps[0][1][2]
        if half > 60.0 or abs(k - fov_x / 2) < 40.0:  # one kidney across the midline (horseshoe)
            cx = k
        else:  # one kidney: the spine ~78 mm medial to it
            cx = k + 78.0 if k < fov_x / 2 else k - 78.0
        scale = 1.0
    else:
        cx, scale = fov_x / 2, 1.0
    a_in, b_in = _cavity(rng, scale)
    cx = float(np.clip(cx, min(a_in, fov_x / 2), max(fov_x - a_in, fov_x / 2)))
    ky = float(np.mean([c[0][1] for c in comps])) if comps else fov_y / 2 + 0.4 * b_in
    ys = ky - rng.uniform(0, 10) * scale
    if len(comps) == 1 and abs(comps[0][0][2] - cx) < 40.0:  # a horseshoe kidney lies in front of the spine
        ys = ky + comps[0][1][1] + 20.0
    ys_rel = rng.uniform(0.55, 0.7) * b_in
    cy = ys - ys_rel
    fat = rng.uniform(10, 45)
    room_x = min(cx, fov_x - cx) - 4.0
    a = float(np.clip(a_in + 15 * scale + fat, a_in + 18 * scale, max(room_x, a_in + 18 * scale)))
    b = float(np.clip(b_in + 10 * scale + 0.75 * fat, b_in + 12 * scale, max(cy - 4.0, b_in + 12 * scale)))
    b_back = float(np.clip(ys_rel + 85 * scale + 0.5 * fat, ys_rel + 80 * scale,
                           max(fov_y - cy - 4.0, ys_rel + 80 * scale)))
    zk = float(np.mean([c[0][0] for c in comps])) if comps else shape[0] * dz / 2
    anat = Anatomy(cx=float(cx), cy=float(cy), a=a, b=b, a_in=float(a_in), b_in=float(b_in), zk=zk, ys=float(ys),
                   b_back=b_back, scale=scale, p_front=float(rng.uniform(1.9, 2.3)), p_back=float(rng.uniform(2.6, 3.6)))
    anat.kidneys = kidney_infos(comps, cx)
    return anat
