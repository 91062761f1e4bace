"""Renal cysts for phantoms: round, well-defined, water-dense (0-20 HU) masses, label 3 (KiTS23).

A simple (Bosniak I) renal cyst on contrast CT is a round, sharply marginated, homogeneous mass of
water attenuation that does not enhance; it sits inside the kidney or bulges from its surface.
:func:`place_cysts` draws them into a label map before it is painted (the phantom model of
:mod:`kidneyseg.data.phantom` then paints label 3 as fluid); :func:`add_cysts` puts them into a
phantom that has already been painted (its CT in HU and its label map) for any other generator:

* the centre is a random kidney voxel (label 1), the radius 3-12 mm (scaled with the phantom's
  anatomy by ``scale``), the shape a sphere stretched by at most 10 % per axis;
* a cyst near the kidney's surface bulges out of it (an exophytic cyst); the part outside the
  kidney is labelled too, but a cyst never covers tumor (label 2) and never leaves the tissue
  around the kidney by more than its radius;
* intensity: a per-cyst mean drawn from ``hu`` plus the image's noise level, homogeneous, with
  a sharp margin (no blur across it), as a simple cyst has.

All randomness comes from the ``rng`` argument. Arrays are (z, y, x); spacing (z, y, x) in mm.

>>> import numpy as np
>>> label = np.zeros((20, 40, 40), np.uint8); label[4:16, 8:32, 8:32] = 1
>>> image = np.where(label > 0, 150.0, -100.0).astype(np.float32)
>>> cysts = add_cysts(image, label, (2.0, 1.0, 1.0), np.random.default_rng(0), 2)
>>> len(cysts), bool((label == 3).any()), float(np.median(image[label == 3])) < 40
(2, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["CYST_LABEL", "Cyst", "add_cysts", "paint_cysts", "place_cysts"]

#: KiTS23's cyst label.
CYST_LABEL = 3


@dataclass(frozen=True)
class Cyst:
    """One cyst put into a phantom.

    Attributes:
        center_mm: (z, y, x) centre from the array origin, mm.
        radii_mm: (z, y, x) semi-axes, mm.
        mean_hu: its mean attenuation, HU.
        voxels: voxels labelled 3.
    """

    center_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    mean_hu: float
    voxels: int


def _check(image: np.ndarray, label: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    if image.shape != label.shape or label.ndim != 3:
        raise ValueError(f"image and label must be 3D (z, y, x) of one shape, got {image.shape} and {label.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or min(sp) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (z, y, x mm), got {spacing!r}")
    return sp  # type: ignore[return-value]


def paint_cysts(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], rng: np.random.Generator,
                hu: tuple[float, float] = (0.0, 20.0), noise_hu: float = 15.0) -> list[float]:
    """Paint water attenuation into ``image`` where ``mask`` holds a cyst, in place.

    Each connected component of ``mask`` gets its own mean (uniform in ``hu``) plus Gaussian
    noise of ``noise_hu``, with no blur across its edge (the sharp margin of a simple cyst). Used
    by :func:`add_cysts` and for real KiTS23 label maps whose cysts need an intensity.

    Returns:
        The mean HU drawn for each component.
    """
    _check(image, mask, spacing)
    comps, _ = ndimage.label(mask)
    means = []
    for i, sl in enumerate(ndimage.find_objects(comps)):
        grow = tuple(slice(max(0, s.start - 1), min(d, s.stop + 1)) for s, d in zip(sl, mask.shape))
        m = comps[grow] == i + 1
        mean = float(rng.uniform(*hu))
        values = mean + float(noise_hu) * rng.standard_normal(int(m.sum()))
        image[grow][m] = np.rint(values)
        means.append(mean)
    return means


def _check_n_radius(n: int, radius_mm, scale) -> tuple[float, float, np.ndarray]:
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    lo, hi = (float(v) for v in radius_mm)
    if not 0 < lo <= hi:
        raise ValueError(f"radius_mm must be (min, max) with 0 < min <= max, got {radius_mm!r}")
    scales = np.broadcast_to(np.asarray(scale, float), (3,))
    if (scales <= 0).any():
        raise ValueError(f"scale must be positive, got {scale!r}")
    return lo, hi, scales


def _place(label: np.ndarray, sp, rng: np.random.Generator, n: int, lo: float, hi: float, scales: np.ndarray):
    """Yield ``(slices, inside mask, centre mm, radii mm)`` per placed cyst, labelling it 3 in place."""
    kidney = np.argwhere(label == 1)
    if int(n) == 0 or len(kidney) == 0:
        return
    near_kidney = None
    for _ in range(int(n)):
        c_vox = kidney[int(rng.integers(len(kidney)))]
        r = float(rng.uniform(lo, hi))
        radii = tuple(r * float(s) * float(rng.uniform(0.9, 1.1)) for s in scales)
        r_vox = [max(1, int(np.ceil(ri / d))) + 1 for ri, d in zip(radii, sp)]
        sl = tuple(slice(max(0, int(c) - rv), min(s, int(c) + rv + 1)) for c, rv, s in zip(c_vox, r_vox, label.shape))
        q = np.ix_(*[(np.arange(s.start, s.stop) - int(c)) * d / ri for s, c, d, ri in zip(sl, c_vox, sp, radii)])
        inside = (q[0] ** 2 + q[1] ** 2 + q[2] ** 2) < 1.0
        if near_kidney is None:  # a cyst may bulge out of the kidney, not float away from it
            near_kidney = _near(label > 0, sp, hi * float(scales.max()))
        inside &= (label[sl] != 2) & near_kidney[sl]
        if not inside.any():
            continue
        label[sl][inside] = CYST_LABEL
        yield sl, inside, tuple(float(c * d) for c, d in zip(c_vox, sp)), tuple(float(v) for v in radii)


def place_cysts(label: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, n: int,
                radius_mm: tuple[float, float] = (3.0, 12.0), scale: float | Sequence[float] = 1.0) -> list[Cyst]:
    """Draw ``n`` cysts into a label map before it is painted, in place (kidney voxels become 3).

    Args:
        label: (z, y, x) uint8 labels with kidney (1) voxels (modified).
        spacing: (z, y, x) voxel size, mm.
        rng: the random generator (the only source of randomness).
        n: number of cysts (fewer when the kidney is too small to hold them).
        radius_mm: (min, max) real-life radius, mm, before ``scale``.
        scale: anatomy scale (mm of phantom per real mm; 1 for life size), one number or (z, y, x).

    Returns:
        The :class:`Cyst` list (``mean_hu`` is NaN: the painter chooses the attenuation).
    """
    if label.ndim != 3:
        raise ValueError(f"label must be 3D (z, y, x), got shape {label.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or min(sp) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (z, y, x mm), got {spacing!r}")
    lo, hi, scales = _check_n_radius(n, radius_mm, scale)
    return [Cyst(c, r, float("nan"), int(inside.sum())) for _, inside, c, r in _place(label, sp, rng, n, lo, hi, scales)]


def add_cysts(image: np.ndarray, label: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, n: int,
              radius_mm: tuple[float, float] = (3.0, 12.0), scale: float | Sequence[float] = 1.0,
              hu: tuple[float, float] = (0.0, 20.0), noise_hu: float | None = None) -> list[Cyst]:
    """Put ``n`` cysts into a painted phantom, in place: label 3 in ``label``, water HU in ``image``.

    Args:
        image: (z, y, x) float CT in HU (modified).
        label: (z, y, x) uint8 labels with kidney (1) voxels (modified: cyst voxels become 3).
        spacing: (z, y, x) voxel size, mm.
        rng: the random generator (the only source of randomness).
        n: number of cysts (fewer when the kidney is too small to hold them).
        radius_mm: (min, max) real-life radius, mm, before ``scale``.
        scale: anatomy scale of the phantom (mm of phantom per real mm; 1 for life size), one
            number or one per axis (z, y, x) for an anatomy stretched along z.
        hu: (min, max) of a cyst's mean attenuation, HU.
        noise_hu: noise standard deviation inside a cyst; ``None`` measures it in the kidney
            (median absolute deviation of the image minus its 3x3x3 median).

    Returns:
        The :class:`Cyst` list, in the order they were placed.
    """
    sp = _check(image, label, spacing)
    lo, hi, scales = _check_n_radius(n, radius_mm, scale)
    if int(n) == 0 or not (label == 1).any():
        return []
    if noise_hu is None:
        noise_hu = _kidney_noise(image, label)
    out: list[Cyst] = []
    for sl, inside, centre, radii in _place(label, sp, rng, n, lo, hi, scales):
        means = paint_cysts(image[sl], inside, sp, rng, hu, noise_hu)  # a split cyst has several parts
        out.append(Cyst(centre, radii, float(np.mean(means)), int(inside.sum())))  # type: ignore[arg-type]
    return out


def _near(mask: np.ndarray, spacing, reach_mm: float) -> np.ndarray:
    """Voxels within ``reach_mm`` of ``mask`` (inside included), on the mask's bounding box."""
    out = np.zeros(mask.shape, bool)
    objs = ndimage.find_objects(mask.astype(np.uint8))
    if not objs or objs[0] is None:
        return out
    pad = [int(np.ceil(reach_mm / d)) + 1 for d in spacing]
    box = tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(objs[0], pad, mask.shape))
    dist = ndimage.distance_transform_edt(~mask[box], sampling=spacing)
    out[box] = dist <= reach_mm
    return out


def _kidney_noise(image: np.ndarray, label: np.ndarray) -> float:
    """Noise level (HU) in the kidney: 1.4826 x the median absolute residual after a 3x3x3 median."""
    objs = ndimage.find_objects((label == 1).astype(np.uint8))
    if not objs or objs[0] is None:
        return 0.0
    box = objs[0]
    sub = image[box].astype(np.float32)
    resid = (sub - ndimage.median_filter(sub, size=3))[label[box] == 1]
    return float(1.4826 * np.median(np.abs(resid - np.median(resid)))) if resid.size else 0.0
