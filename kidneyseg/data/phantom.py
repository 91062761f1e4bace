"""Procedural CT phantoms of the abdomen with kidney/tumor labels, in the KiTS19 layout.

The phantoms are the package's built-in data: the demo, the tests and the notebooks run on them
when no KiTS19 data is at hand. Each phantom is a small contrast-enhanced abdominal CT (HU) with
its label map (0 background, 1 kidney, 2 tumor):

* a body outline (skin, subcutaneous fat, abdominal-wall muscle) around visceral fat;
* liver (patient right, upper), spleen (left, posterior, upper), bowel loops with wall,
  fluid contents and gas (-1000 HU), aorta (enhancing) and inferior vena cava;
* the spine (cortical rim, cancellous body, canal, posterior arch, discs), psoas and
  paraspinal muscles;
* two kidneys beside the spine, posterior, the right one lower, with an enhancing cortex, darker
  medullary pyramids and a fatty renal sinus at the hilum;
* 0-2 tumors per case, of varied size and contrast (hypo-, iso- or hyper-dense against the
  cortex, textured, large ones with a necrotic core), inside the kidney or bulging out of it;
* partial-volume blur and slightly correlated Gaussian noise (15-25 HU);
* with ``dataset="kits23"``, 0-3 renal cysts (label 3, water density, round, inside or bulging
  from a kidney; :mod:`kidneyseg.data.cysts`), and a ``kits23.json`` instead of ``kits.json``.

Because a real abdomen at 0.6-1.0 mm in-plane spacing needs ~512 pixels, the synthetic anatomy
is a **scaled-down abdomen**: the body fills a ``size`` x ``size`` in-plane grid (default 128) at
the drawn spacing, and the anatomy is scaled to it (0.18-0.35 of life size in-plane and 1.6 times
that along z, so a kidney spans ~6-12 slices even at 5 mm). The slice count (40-80) follows
from the drawn z spacing (1-5 mm, KiTS19-like frequencies) and a scan coverage that always holds
both kidneys.

``paint_ct`` holds the intensity model; it works on any label map, so
``write_phantoms(..., from_labels="kits19")`` paints CT-like images into the real KiTS19 label
maps (real anatomy and geometry: spacing, affine and shape are kept) with a body and organs
placed around the real kidneys.

>>> image, label = make_phantom(0)                                 # doctest: +SKIP
>>> image.array.shape, label.spacing                               # doctest: +SKIP
((40, 128, 128), (3.0, 0.8548, 0.8548))
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from ..errors import ensure_output_dir, fail, write_text_atomic
from ..io import SourceGeometry, Volume, load_volume, new_volume, save_like
from .cysts import CYST_LABEL, add_cysts, paint_cysts
from .datasets import get_dataset

#: Mean HU of each tissue (per case, each value is jittered; see ``_tissue_hu``). Cortex and
#: medulla are corticomedullary-phase values, as in contrast-enhanced KiTS19 scans.
TISSUE_HU = {
    "air": -1000.0, "skin": 30.0, "subcutaneous_fat": -100.0, "muscle": 50.0, "visceral_fat": -90.0,
    "liver": 60.0, "spleen": 50.0, "bone_cortical": 900.0, "bone_cancellous": 400.0, "disc": 80.0,
    "csf": 10.0, "aorta": 220.0, "ivc": 120.0, "bowel_wall": 45.0, "bowel_fluid": 15.0,
    "bowel_gas": -1000.0, "kidney_cortex": 180.0, "kidney_medulla": 120.0, "renal_sinus": -60.0,
}
#: Tumor contrast classes: HU offset range from the case's cortex value, and their frequencies.
TUMOR_CLASSES = {"hypo": ((-140.0, -70.0), 0.45), "iso": ((-20.0, 20.0), 0.30), "hyper": ((40.0, 90.0), 0.25)}


@dataclass
class PhantomOptions:
    """Options of :func:`make_phantom` (all have defaults; unknown names are refused).

    Attributes:
        size: in-plane pixels (square grid, y = x).
        slices: (min, max) slice count.
        spacing_xy: (min, max) in-plane spacing, mm (uniform draw).
        spacing_z: z spacings to draw from, mm (KiTS19-like: many 5 mm and thin-slice scans).
        noise_hu: (min, max) standard deviation of the noise, HU.
        tumor_counts: probabilities of 0, 1, 2 tumors.
        blur: partial-volume blur, Gaussian sigma in voxels (in-plane; z uses half of it).
        kidney_scale: in-plane size of the kidneys relative to the scaled anatomy (1.15 makes
            them a little larger than life relative to the body, so they stay ~10+ voxels wide
            after a stage-1 downsampling of the small default grid).
        dataset: ``"kits19"`` (labels 0-2) or ``"kits23"`` (adds cysts, label 3).
        cyst_counts: probabilities of 0, 1, 2, ... cysts per case (``dataset="kits23"`` only).
        cyst_radius_mm: (min, max) real-life cyst radius, mm, scaled with the anatomy (a little
            larger than the typical 3-12 mm, so cysts stay a few voxels wide on the small grid).
    """

    size: int = 128
    slices: tuple[int, int] = (40, 80)
    spacing_xy: tuple[float, float] = (0.6, 1.0)
    spacing_z: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.0, 4.0, 5.0, 5.0)
    noise_hu: tuple[float, float] = (15.0, 25.0)
    tumor_counts: tuple[float, float, float] = (0.15, 0.55, 0.30)
    blur: float = 0.6
    kidney_scale: float = 1.15
    dataset: str = "kits19"
    cyst_counts: tuple[float, ...] = (0.2, 0.35, 0.3, 0.15)
    cyst_radius_mm: tuple[float, float] = (10.0, 25.0)

    @classmethod
    def from_kwargs(cls, **kwargs) -> "PhantomOptions":
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"unknown phantom option(s) {unknown}; valid options are {valid}")
        opts = cls(**{k: v for k, v in kwargs.items() if v is not None})
        if int(opts.size) < 48:
            raise ValueError(f"size must be >= 48 pixels, got {opts.size!r}")
        lo, hi = opts.slices
        if not 8 <= lo <= hi:
            raise ValueError(f"slices must be (min, max) with 8 <= min <= max, got {opts.slices!r}")
        if min(opts.spacing_xy) <= 0 or min(opts.spacing_z) <= 0:
            raise ValueError(f"spacings must be positive, got {opts.spacing_xy!r} and {opts.spacing_z!r}")
        if not 0.5 <= float(opts.kidney_scale) <= 2.0:
            raise ValueError(f"kidney_scale must be in [0.5, 2], got {opts.kidney_scale!r}")
        p = np.asarray(opts.tumor_counts, float)
        if p.shape != (3,) or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(f"tumor_counts must be 3 probabilities summing to 1, got {opts.tumor_counts!r}")
        get_dataset(opts.dataset)
        p = np.asarray(opts.cyst_counts, float)
        if p.ndim != 1 or p.size < 1 or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(f"cyst_counts must be probabilities of 0, 1, ... cysts summing to 1, got {opts.cyst_counts!r}")
        lo, hi = opts.cyst_radius_mm
        if not 0 < lo <= hi:
            raise ValueError(f"cyst_radius_mm must be (min, max) with 0 < min <= max, got {opts.cyst_radius_mm!r}")
        return opts


@dataclass
class Anatomy:
    """Where the body and organs sit, in mm from the array origin (voxel (0,0,0) centre).

    ``u`` scales real anatomy in-plane (mm per real mm), ``uz`` along z. ``kidneys`` holds the
    (z, y, x) centres of the kidneys (mm), right kidney (smaller x) first.
    """

    x0: float
    y0: float
    half_width: float
    half_depth: float
    u: float
    uz: float
    kidneys: list = field(default_factory=list)

    @property
    def spine_y(self) -> float:
        return self.y0 + 0.36 * self.half_depth

    @property
    def kidney_z(self) -> float:
        return float(np.mean([k[0] for k in self.kidneys])) if self.kidneys else 0.0


# -------------------------------------------------------------------------------- geometry helpers
def _wobble(rng: np.random.Generator, coords, amplitude: float):
    """A smooth random field over normalized local coordinates (sum of 3 low-frequency cosines)."""
    total = 0.0
    for _ in range(3):
        w = rng.normal(0.0, 1.6, size=3)
        phase = rng.uniform(0, 2 * np.pi)
        total = total + np.cos(w[0] * coords[0] + w[1] * coords[1] + w[2] * coords[2] + phase)
    return amplitude * total / 3.0


def _ellipsoid(shape, spacing, center, radii, rng=None, wobble=0.0):
    """Normalized radius of an ellipsoid inside its bounding box.

    Args:
        shape: (z, y, x) array shape; spacing: (z, y, x) mm.
        center, radii: (z, y, x) in mm; a radius of ``inf`` makes a cylinder along that axis.
        rng, wobble: irregular outline, relative amplitude (0 = a smooth ellipsoid).

    Returns:
        ``(slices, f)``: ``f < 1`` inside, on the grid ``array[slices]``; ``None`` if outside.
    """
    sl, axes = [], []
    grow = 1.0 + 2 * wobble
    for n, d, c, r in zip(shape, spacing, center, radii):
        if math.isinf(r):
            lo, hi = 0, n
        else:
            lo = max(0, int(math.floor((c - r * grow) / d)))
            hi = min(n, int(math.ceil((c + r * grow) / d)) + 1)
        if hi <= lo:
            return None
        sl.append(slice(lo, hi))
        axes.append((np.arange(lo, hi) * d - c) / (r if not math.isinf(r) else 1e30))
    q = np.ix_(*[a.astype(np.float32) for a in axes])
    f = q[0] ** 2 + q[1] ** 2 + q[2] ** 2
    if wobble and rng is not None:
        f = f * (1.0 + _wobble(rng, q, wobble)).astype(np.float32)
    return tuple(sl), f


def _paint(img, shape, spacing, center, radii, hu, rng=None, wobble=0.0, where=None, shell=None):
    """Set ``img`` to ``hu`` inside an ellipsoid (optionally only where ``where(local_slices)``)."""
    e = _ellipsoid(shape, spacing, center, radii, rng, wobble)
    if e is None:
        return None
    sl, f = e
    inside = f < 1.0
    if shell is not None:
        inside &= f >= shell
    if where is not None:
        inside &= where[sl]
    img[sl][inside] = hu
    return sl, inside


def _body_maps(ny, nx, spacing, anat: Anatomy, fat_mm: float, wall_mm: float):
    """In-plane (y, x) masks of the body layers: outside, skin, fat, muscle wall, inside."""
    y = (np.arange(ny) * spacing[1] - anat.y0)[:, None]
    x = (np.arange(nx) * spacing[2] - anat.x0)[None, :]
    rho = np.sqrt((x / anat.half_width) ** 2 + (y / anat.half_depth) ** 2)
    depth = (1.0 - rho) * min(anat.half_width, anat.half_depth)  # ~ mm below the skin
    skin_mm = 2.0 * max(anat.u, 0.5)
    return {
        "outside": rho >= 1.0,
        "skin": (rho < 1.0) & (depth < skin_mm),
        "fat": (depth >= skin_mm) & (depth < skin_mm + fat_mm),
        "wall": (depth >= skin_mm + fat_mm) & (depth < skin_mm + fat_mm + wall_mm),
        "inside": depth >= skin_mm + fat_mm + wall_mm,
    }


# ------------------------------------------------------------------------------------ intensities
def _tissue_hu(rng: np.random.Generator) -> dict[str, float]:
    """Per-case tissue values: the table's means jittered (enhancement varies between scans)."""
    hu = dict(TISSUE_HU)
    jitter = {"liver": 10, "spleen": 10, "muscle": 8, "subcutaneous_fat": 10, "visceral_fat": 10,
              "aorta": 40, "ivc": 20, "kidney_cortex": 20, "kidney_medulla": 15, "bone_cortical": 100,
              "bone_cancellous": 60, "bowel_fluid": 10, "bowel_wall": 10}
    for k, s in jitter.items():
        hu[k] += float(rng.uniform(-s, s))
    return hu


def paint_ct(label: np.ndarray, spacing, rng: np.random.Generator, anatomy: Anatomy | None = None,
             noise_hu: float = 20.0, blur: float = 0.6) -> np.ndarray:
    """Paint a CT-like image (HU) around and into a kidney/tumor label map.

    Args:
        label: (z, y, x) uint8, 0 background, 1 kidney, 2 tumor.
        spacing: (z, y, x) voxel size, mm.
        rng: the random generator (all randomness comes from it).
        anatomy: body and organ placement; derived from the label when ``None``.
        noise_hu: noise standard deviation, HU.
        blur: partial-volume blur sigma in voxels (in-plane; half of it along z).

    Returns:
        (z, y, x) float32 HU, rounded to integers, clipped to [-1024, 3071].
    """
    nz, ny, nx = label.shape
    shape = label.shape
    spacing = tuple(float(s) for s in spacing)
    anat = anatomy if anatomy is not None else anatomy_from_label(label, spacing)
    u, uz = anat.u, anat.uz
    hu = _tissue_hu(rng)
    img = np.empty(shape, np.float32)

    # Body layers: in-plane maps, identical on every slice.
    fat_mm = float(rng.uniform(10, 35)) * u
    maps = _body_maps(ny, nx, spacing, anat, fat_mm, 10.0 * u)
    plane = np.full((ny, nx), hu["visceral_fat"], np.float32)
    plane[maps["outside"]] = hu["air"]
    plane[maps["skin"]] = hu["skin"]
    plane[maps["fat"]] = hu["subcutaneous_fat"]
    plane[maps["wall"]] = hu["muscle"]
    img[:] = plane
    inside = np.broadcast_to(maps["inside"], shape)
    inf = math.inf
    zc = anat.kidney_z
    sy, x0 = anat.spine_y, anat.x0

    # Solid organs (upper abdomen), clipped to the visceral cavity.
    _paint(img, shape, spacing, (zc - 55 * uz, anat.y0 - 0.05 * anat.half_depth, x0 - 75 * u),
           (95 * uz, 0.72 * anat.half_depth, 90 * u), hu["liver"], rng, 0.12, where=inside)
    _paint(img, shape, spacing, (zc - 60 * uz, sy - 10 * u, x0 + 95 * u),
           (55 * uz, 45 * u, 30 * u), hu["spleen"], rng, 0.12, where=inside)

    # Bowel loops: wall, fluid, and gas rising anteriorly (air-fluid level).
    for _ in range(int(rng.integers(6, 12))):
        c = (zc + rng.uniform(-40, 110) * uz, anat.y0 - rng.uniform(0.0, 0.6) * anat.half_depth,
             x0 + rng.uniform(-110, 110) * u)
        r = (rng.uniform(20, 45) * uz, rng.uniform(12, 22) * u, rng.uniform(12, 22) * u)
        hit = _paint(img, shape, spacing, c, r, hu["bowel_wall"], rng, 0.1, where=inside)
        if hit is None:
            continue
        content = hu["bowel_fluid"] + rng.uniform(-10, 25)
        lumen = _paint(img, shape, spacing, c, tuple(v * 0.7 for v in r), content, where=inside)
        if lumen is not None and rng.random() < 0.7:
            level = c[1] + rng.uniform(-0.6, 0.3) * r[1] * 0.7  # gas above this y (anterior)
            sl, m = lumen
            ys = (np.arange(sl[1].start, sl[1].stop) * spacing[1])[None, :, None]
            img[sl][m & (ys < level)] = hu["bowel_gas"]

    # Spine column with discs, canal, arch; muscles beside it; great vessels in front of it.
    disc_period, disc_mm = 32.0 * uz, 7.0 * uz
    z_mm = np.arange(nz) * spacing[0]
    is_disc = ((z_mm - zc + rng.uniform(0, disc_period)) % disc_period) < disc_mm
    for side in (-1, 1):
        _paint(img, shape, spacing, (0, sy + 33 * u, x0 + side * 28 * u), (inf, 18 * u, 20 * u), hu["muscle"])
        _paint(img, shape, spacing, (0, sy - 2 * u, x0 + side * 33 * u), (inf, 14 * u, 14 * u), hu["muscle"],
               where=inside)
    body = _paint(img, shape, spacing, (0, sy, x0), (inf, 17 * u, 20 * u), hu["bone_cortical"])
    _paint(img, shape, spacing, (0, sy, x0), (inf, 14 * u, 17 * u), hu["bone_cancellous"])
    if body is not None:
        sl, m = body
        disc_mask = is_disc[sl[0]][:, None, None] & m
        img[sl][disc_mask] = hu["disc"]
    _paint(img, shape, spacing, (0, sy + 26 * u, x0), (inf, 10 * u, 10 * u), hu["bone_cortical"])
    _paint(img, shape, spacing, (0, sy + 26 * u, x0), (inf, 7 * u, 7 * u), hu["csf"])
    _paint(img, shape, spacing, (0, sy + 44 * u, x0), (inf, 12 * u, 4 * u), hu["bone_cortical"])
    _paint(img, shape, spacing, (0, sy - 30 * u, x0 + 12 * u), (inf, 11 * u, 11 * u), hu["aorta"])
    _paint(img, shape, spacing, (0, sy - 28 * u, x0 - 22 * u), (inf, 9 * u, 13 * u), hu["ivc"], where=inside)

    _paint_kidneys(img, label, spacing, anat, hu, rng)

    # Partial-volume blur, then slightly correlated noise; processed in z-slabs to bound memory.
    out = np.empty(shape, np.float32)
    sigma = (blur * 0.5, blur, blur)
    slab, pad = 48, 4
    for z0 in range(0, nz, slab):
        lo, hi = max(0, z0 - pad), min(nz, z0 + slab + pad)
        blurred = ndimage.gaussian_filter(img[lo:hi], sigma, mode="nearest") if blur > 0 else img[lo:hi]
        noise = rng.standard_normal(blurred.shape, dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, (0, 0.5, 0.5))  # CT noise is correlated in-plane
        noise *= noise_hu / max(float(noise.std()), 1e-6)
        part = blurred + noise
        out[z0:min(nz, z0 + slab)] = part[z0 - lo: z0 - lo + min(slab, nz - z0)]
    np.rint(out, out=out)
    np.clip(out, -1024, 3071, out=out)
    return out


def _paint_kidneys(img, label, spacing, anat: Anatomy, hu, rng) -> None:
    """Cortex, medulla, sinus and tumors, inside the label's bounding box only (memory, speed)."""
    fg = label > 0
    if not fg.any():
        return
    box = ndimage.find_objects(fg.astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 2), min(n, s.stop + 2)) for s, n in zip(box, label.shape))
    lab = label[box]
    region = img[box]
    kidney = lab > 0
    # Distance (mm) from the kidney+tumor outline: cortex is the outer rind.
    dist = ndimage.distance_transform_edt(kidney, sampling=spacing).astype(np.float32)
    cortex_mm = max(1.2 * max(spacing[1:]), 6.0 * anat.u)
    # Medullary pyramids: blobs of a smooth random field (~10 mm, scaled), cortex columns between.
    q = np.ix_(*[np.arange(n, dtype=np.float32) * d / (5.0 * anat.u) for n, d in zip(lab.shape, spacing)])
    pyramids = _wobble(rng, q, 1.0) > -0.25
    is_kid = lab == 1
    region[is_kid] = hu["kidney_cortex"]
    medulla = is_kid & (dist >= cortex_mm) & pyramids
    region[medulla] = hu["kidney_medulla"]
    texture = np.broadcast_to(_wobble(rng, q, 1.0), lab.shape)
    region[is_kid] += 8.0 * texture[is_kid]

    # Tumors: one contrast class per connected component.
    comps, n = ndimage.label(lab == 2)
    classes = list(TUMOR_CLASSES)
    probs = [TUMOR_CLASSES[c][1] for c in classes]
    objs = ndimage.find_objects(comps)
    for i in range(n):
        kind = classes[int(rng.choice(len(classes), p=probs))]
        lo, hi = TUMOR_CLASSES[kind][0]
        mean = hu["kidney_cortex"] + rng.uniform(lo, hi)
        sl = objs[i]
        m = comps[sl] == i + 1
        sub = region[sl]
        qt = np.ix_(*[np.arange(s.start, s.stop, dtype=np.float32) * d / (8.0 * anat.u) for s, d in zip(sl, spacing)])
        tex = np.broadcast_to(_wobble(rng, qt, 1.0), m.shape)
        sub[m] = mean + rng.uniform(8, 25) * tex[m]
        # Large tumors get a darker necrotic core.
        tdist = ndimage.distance_transform_edt(m, sampling=spacing)
        if tdist.max() > 12.0 * anat.u and rng.random() < 0.6:
            core = tdist > 0.55 * tdist.max()
            sub[core] = mean - rng.uniform(60, 120)


# ---------------------------------------------------------------------------------- anatomy
def anatomy_from_label(label: np.ndarray, spacing) -> Anatomy:
    """Place body and organs around the kidneys of a (real) label map.

    The spine goes midway between the two largest kidney components, the body outline is
    scaled to their distance (real kidneys sit ~150 mm apart) and kept inside the field of view.
    """
    nz, ny, nx = label.shape
    dz, dy, dx = spacing
    fov_y, fov_x = ny * dy, nx * dx
    comps, n = ndimage.label(label > 0)
    centers = []
    if n:
        sizes = np.bincount(comps[comps > 0].ravel(), minlength=n + 1)[1:]
        big = [b for b in np.argsort(sizes)[::-1][:2] + 1 if sizes[b - 1] >= 0.1 * sizes.max()]
        objs = ndimage.find_objects(comps)
        for b in big:
            sl = objs[b - 1]
            com = ndimage.center_of_mass(comps[sl] == b)
            centers.append(tuple((c + s.start) * d for c, s, d in zip(com, sl, spacing)))
    centers.sort(key=lambda c: c[2])
    if len(centers) == 2:
        x0 = (centers[0][2] + centers[1][2]) / 2
        u = abs(centers[1][2] - centers[0][2]) / 150.0
    else:
        x0 = fov_x / 2
        u = 0.42 * fov_x / 170.0
    half_width = min(170.0 * u, 0.48 * fov_x - abs(x0 - fov_x / 2))
    half_width = max(half_width, 0.3 * fov_x)
    u = half_width / 170.0
    half_depth = min(0.72 * half_width, 0.46 * fov_y)
    ky = np.mean([c[1] for c in centers]) if centers else fov_y / 2 + 0.4 * half_depth
    y0 = float(np.clip(ky - 0.42 * half_depth, half_depth * 1.02, fov_y - half_depth * 1.02))
    return Anatomy(float(x0), y0, float(half_width), float(half_depth), float(u), float(u), centers)


def _synthetic_label(rng: np.random.Generator, opts: PhantomOptions):
    """Draw geometry and the kidney/tumor label of one scaled-down abdomen.

    Returns:
        ``(label (z, y, x) uint8, spacing (z, y, x) mm, anatomy, largest tumor diameter in cm)``.
    """
    n = int(opts.size)
    dxy = round(float(rng.uniform(*opts.spacing_xy)), 4)
    dz = float(rng.choice(np.asarray(opts.spacing_z, float)))
    fov = n * dxy
    half_width = fov * rng.uniform(0.40, 0.46)
    half_depth = half_width * rng.uniform(0.66, 0.78)
    u = half_width / 170.0
    uz = 1.6 * u
    ks = float(opts.kidney_scale)
    kid_r = (55 * uz * rng.uniform(0.9, 1.1), 30 * u * ks * rng.uniform(0.9, 1.1), 35 * u * ks * rng.uniform(0.9, 1.1))
    drop = 12 * uz  # the right kidney sits lower (larger z index = inferior)
    cover_min = 2 * kid_r[0] + drop + 14 * uz
    lo = max(opts.slices[0], math.ceil(cover_min / dz))
    hi = max(lo, min(opts.slices[1], math.floor(4.2 * kid_r[0] / dz)))
    nz = int(rng.integers(lo, hi + 1))
    cover = nz * dz
    # Kidney centre z: anywhere that keeps both kidneys inside the scan.
    zmin, zmax = kid_r[0] + 4 * uz, cover - kid_r[0] - drop - 4 * uz
    zk = float(rng.uniform(zmin, max(zmin, zmax)))
    x0 = fov / 2 + rng.uniform(-0.03, 0.03) * fov
    y0 = fov / 2 + rng.uniform(-0.04, 0.02) * fov
    anat = Anatomy(x0, y0, half_width, half_depth, u, uz)
    spacing = (dz, dxy, dxy)
    shape = (nz, n, n)
    label = np.zeros(shape, np.uint8)
    ky = anat.spine_y + rng.uniform(-4, 6) * u
    for side in (-1, 1):  # -1: patient right (small x), lower
        c = (zk + (drop if side < 0 else 0.0) + rng.uniform(-3, 3) * uz, ky,
             x0 + side * (rng.uniform(78, 88) + 30 * (ks - 1.0)) * u)
        r = tuple(v * rng.uniform(0.93, 1.07) for v in kid_r)
        e = _ellipsoid(shape, spacing, c, r, rng, 0.06)
        sl, f = e
        kid = f < 1.0
        # Bean shape: carve the hilum (renal sinus) on the medial-anterior side.
        hil = _ellipsoid(shape, spacing, (c[0], c[1] - 0.25 * r[1], c[2] - side * 0.9 * r[2]),
                         (0.4 * r[0], 0.35 * r[1], 0.35 * r[2]))
        if hil is not None:
            hsl, hf = hil
            full = np.zeros(shape, bool)
            full[hsl] = hf < 1.0
            kid &= ~full[sl]
        label[sl][kid] = 1
        anat.kidneys.append((c, r, side))
    tumor_diam = 0.0
    n_t = int(rng.choice(3, p=np.asarray(opts.tumor_counts, float)))
    for _ in range(n_t):
        c, r, side = anat.kidneys[int(rng.integers(2))]
        real_r = float(rng.uniform(7, 35) if rng.random() < 0.8 else rng.uniform(35, 55))
        tr = (real_r * uz, real_r * u, real_r * u)
        d = rng.normal(size=3)
        d[2] = abs(d[2]) * side  # prefer the lateral side, away from the spine
        d /= np.linalg.norm(d)
        reach = 1.0 / math.sqrt(sum((d[i] / r[i]) ** 2 for i in range(3)))  # centre-to-surface, mm
        t = rng.uniform(0.35, 1.0 + 0.6 * min(tr[1:]) / reach)  # > 1: bulges out (exophytic)
        tc = tuple(c[i] + d[i] * reach * t for i in range(3))
        e = _ellipsoid(shape, spacing, tc, tr, rng, 0.08)
        if e is None:
            continue
        sl, f = e
        label[sl][f < 1.0] = 2
        tumor_diam = max(tumor_diam, 2 * real_r * u / 10.0)
    anat.kidneys = [c for c, _, _ in anat.kidneys]
    return label, spacing, anat, tumor_diam


# ------------------------------------------------------------------------------------- public API
def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


def make_phantom(seed: int | tuple[int, ...] = 0, **opts) -> tuple[Volume, Volume]:
    """One synthetic case: a CT-like image and its label, deterministic per seed.

    Args:
        seed: int (or tuple of ints) seeding every random choice.
        **opts: fields of :class:`PhantomOptions` (``size``, ``slices``, ``spacing_xy``,
            ``spacing_z``, ``noise_hu``, ``tumor_counts``, ``blur``, ``kidney_scale``).

    Returns:
        ``(image, label)``: canonical (z, y, x) volumes with a KiTS19-style affine; the image is
        float32 HU (integer values), the label uint8 in {0, 1, 2}.

    >>> image, label = make_phantom(3, size=96)
    >>> image.shape == label.shape and image.shape[1:] == (96, 96)
    True
    """
    image, label, _ = _make(seed, PhantomOptions.from_kwargs(**opts))
    return image, label


def _make(seed, opts: PhantomOptions):
    rng = _rng(seed)
    label, spacing, anat, diam = _synthetic_label(rng, opts)
    noise = float(rng.uniform(*opts.noise_hu))
    image = paint_ct(label, spacing, rng, anat, noise_hu=noise, blur=opts.blur)
    if CYST_LABEL in get_dataset(opts.dataset).label_values:
        # Own stream: a KiTS23 phantom is its KiTS19 twin plus cysts.
        crng = _rng((*np.atleast_1d(seed).tolist(), CYST_LABEL))
        n = int(crng.choice(len(opts.cyst_counts), p=np.asarray(opts.cyst_counts, float)))
        add_cysts(image, label, spacing, crng, n, radius_mm=opts.cyst_radius_mm, scale=(anat.uz, anat.u, anat.u),
                  noise_hu=noise)
    return new_volume(image, spacing), new_volume(label, spacing), diam


def phantom_from_label(label: Volume, seed=0, noise_hu: tuple[float, float] = (15.0, 25.0),
                       blur: float = 0.6) -> Volume:
    """Paint the intensity model into a real label map; the image keeps its geometry.

    Args:
        label: a label :class:`Volume` (e.g. a KiTS19 ``segmentation.nii.gz``).
        seed: seed of the random choices.

    Returns:
        The float32 HU image on the label's grid (same shape, affine and source geometry).
    """
    rng = _rng(seed)
    noise = float(rng.uniform(*noise_hu))
    image = paint_ct(label.array, label.spacing, rng, None, noise, blur)
    if (label.array == CYST_LABEL).any():  # KiTS23 cysts: water density
        paint_cysts(image, label.array == CYST_LABEL, label.spacing, rng, noise_hu=noise)
    return label.with_array(image)


def _int16_like(vol: Volume) -> Volume:
    """``vol`` with a source whose header stores int16, so :func:`save_like` writes HU as int16."""
    if vol.source is None:
        header = nib.Nifti1Header()
        src = SourceGeometry("<memory>", vol.shape, vol.affine.copy(), np.array([[0, 1], [1, 1], [2, 1]], float),
                             header)
    else:
        header = vol.source.header.copy() if vol.source.header is not None else nib.Nifti1Header()
        src = SourceGeometry(vol.source.path, vol.source.shape, vol.source.affine, vol.source.to_canonical, header)
    header.set_data_dtype(np.int16)
    return Volume(vol.array, vol.affine, src)


def _write_case(case_dir: Path, image: Volume, label: Volume) -> None:
    case_dir.mkdir(parents=True, exist_ok=True)
    save_like(image.array, case_dir / "imaging.nii.gz", _int16_like(image), kind="image")
    save_like(label.array, case_dir / "segmentation.nii.gz", label, kind="label")


def _synthetic_task(args) -> tuple[str, float, int]:
    out_dir, i, seed, opts = args
    image, label, diam = _make((seed, i), PhantomOptions(**opts))
    case = f"case_{i:05d}"
    _write_case(Path(out_dir) / case, image, label)
    return case, diam, int(label.array.max())


def _from_label_task(args) -> tuple[str, float, int]:
    out_dir, src_case, seed, i = args
    from .volumes import ALL_LABEL_VALUES

    label = load_volume(Path(src_case) / "segmentation.nii.gz", kind="label", label_values=ALL_LABEL_VALUES)
    image = phantom_from_label(label, (seed, i))
    _write_case(Path(out_dir) / Path(src_case).name, image, label)
    return Path(src_case).name, math.nan, int(label.array.max())


def write_phantoms(out_dir: os.PathLike | str, n_cases: int = 8, seed: int = 0,
                   from_labels: os.PathLike | str | None = None, *, workers: int = 1,
                   progress: bool = True, n_val: int | None = None, **opts) -> Path:
    """Write phantom cases in the KiTS layout plus ``OUT_DIR/manifest.csv``.

    Args:
        out_dir: output folder (created); ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``.
        n_cases: number of synthetic cases; with ``from_labels`` the first ``n_cases`` label
            maps (0 = all).
        seed: seed; case ``i`` uses the seed ``(seed, i)``, so a case does not depend on
            ``n_cases``.
        from_labels: a KiTS19-layout folder whose label maps are painted (geometry kept).
        workers: processes (1 = in this process).
        progress: show a progress bar.
        n_val: validation cases in the manifest (default: the thesis's 20/210 rule).
        **opts: :class:`PhantomOptions` fields for synthetic cases (e.g. ``size=160``).

    Returns:
        The manifest path. A ``kits.json`` (``kits23.json`` for ``dataset="kits23"`` or a KiTS23
        source) beside it gives each case's largest tumor diameter (``radiographic_size``, cm;
        the source records for ``from_labels``).
    """
    from .datasets import DATASETS, dataset_for_labels, detect_dataset
    from .manifest import build_manifest, find_cases, read_kits_json

    if int(n_cases) < 0 or (from_labels is None and int(n_cases) < 1):
        raise ValueError(f"n_cases must be >= 1, got {n_cases!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    out_dir = ensure_output_dir(out_dir)
    if from_labels is None:
        popts = asdict(PhantomOptions.from_kwargs(**opts))
        dataset = get_dataset(popts["dataset"])
        tasks = [(str(out_dir), i, int(seed), popts) for i in range(int(n_cases))]
        fn = _synthetic_task
    else:
        if opts and any(v is not None for v in opts.values()):
            raise ValueError(f"phantom options {sorted(opts)} apply to synthetic cases, not to from_labels")
        cases = [c for c in find_cases(from_labels) if (c / "segmentation.nii.gz").exists()]
        if not cases:
            raise fail(from_labels, "holds no case_XXXXX/segmentation.nii.gz")
        if n_cases:
            cases = cases[: int(n_cases)]
        dataset = detect_dataset(from_labels)
        tasks = [(str(out_dir), str(c), int(seed), i) for i, c in enumerate(cases)]
        fn = _from_label_task
    results = {}
    max_label = 0
    with tqdm(total=len(tasks), desc="phantoms", unit="case", disable=not progress) as bar:
        if workers == 1 or len(tasks) == 1:
            for t in tasks:
                case, diam, top = fn(t)
                results[case] = diam
                max_label = max(max_label, top)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(int(workers), len(tasks))) as pool:
                for case, diam, top in pool.map(fn, tasks):
                    results[case] = diam
                    max_label = max(max_label, top)
                    bar.update()
    if from_labels is None:
        records = [{"case_id": c, "radiographic_size": round(d, 2) if d > 0 else None} for c, d in results.items()]
    else:
        sizes = read_kits_json(Path(from_labels) / get_dataset(dataset).metadata_file)
        records = [{"case_id": c, "radiographic_size": sizes.get(c)} for c in results]
        records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                   for r in records]
    if dataset is None:  # a source without metadata file: its labels tell
        dataset = dataset_for_labels(range(max_label + 1)) or get_dataset(None)
    dataset = get_dataset(dataset)
    for other in DATASETS.values():  # a folder re-used for another dataset keeps one metadata file
        if other is not dataset:
            (out_dir / other.metadata_file).unlink(missing_ok=True)
    write_text_atomic(out_dir / dataset.metadata_file, json.dumps(records, indent=1))
    return build_manifest(out_dir, out_dir / "manifest.csv", workers=1, seed=int(seed), progress=False, n_val=n_val,
                          dataset=dataset)


__all__ = ["Anatomy", "PhantomOptions", "TISSUE_HU", "TUMOR_CLASSES", "anatomy_from_label", "make_phantom",
           "paint_ct", "phantom_from_label", "write_phantoms"]
