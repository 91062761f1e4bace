"""The thesis's ROI box (section 3.4): one fixed box size, centred on each case's foreground.

From the training labels we take the largest foreground (kidney + tumor) extent in mm along each
axis, add ``margin_mm`` on both sides, and use that one box size for every case
(:func:`fit_box_size`). Each case is cut with the box centred on the centre of its foreground
bounding box (:func:`foreground_center`: ground truth in training, the stage-1 prediction at
inference). Where the box leaves the volume it is padded; a :class:`Crop` records the box in the
volume's voxel grid. Cutting, resampling and the exact inverse happen in one place,
:mod:`kidneyseg.preprocess.case`.

:func:`kidney_boxes` splits the foreground into the patient's left and right kidney (for the
per-kidney box of the ROI study, :mod:`kidneyseg.preprocess.roi_study`).

>>> import numpy as np
>>> lab = np.zeros((10, 10, 10), np.uint8); lab[2:4, 5:8, 1:3] = 1
>>> foreground_center(lab)
(2.5, 6.0, 1.5)
>>> crop = crop_for_center(foreground_center(lab), (4, 4, 4), lab.shape)
>>> crop.start, crop.pad_before
((1, 4, 0), (0, 0, 0))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

BBox = tuple[tuple[int, int, int], tuple[int, int, int]]  # (start, stop) voxel indices, stop exclusive


# --------------------------------------------------------------------------------------- crop boxes
@dataclass(frozen=True)
class Crop:
    """A box in a volume's voxel grid, possibly reaching outside it.

    Attributes:
        start: first voxel of the box (z, y, x); may be negative.
        stop: one past the last voxel (z, y, x); may exceed the shape.
        shape: the full volume's shape (z, y, x).
    """

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def pad_before(self) -> tuple[int, int, int]:
        """Voxels of padding before the volume starts, per axis."""
        return tuple(max(0, -a) for a in self.start)  # type: ignore[return-value]

    @property
    def pad_after(self) -> tuple[int, int, int]:
        """Voxels of padding after the volume ends, per axis."""
        return tuple(max(0, b - n) for b, n in zip(self.stop, self.shape))  # type: ignore[return-value]

    @property
    def inside(self) -> tuple[slice, slice, slice]:
        """Slices of the full volume covered by the box."""
        return tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(self.start, self.stop, self.shape))  # type: ignore

    @property
    def in_box(self) -> tuple[slice, slice, slice]:
        """Slices of the box array that hold volume data (the rest is padding)."""
        return tuple(slice(p, p + (s.stop - s.start)) for p, s in zip(self.pad_before, self.inside))  # type: ignore

    def to_dict(self) -> dict:
        d = {k: list(v) for k, v in asdict(self).items()}
        d["pad_before"], d["pad_after"] = list(self.pad_before), list(self.pad_after)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Crop":
        return cls(tuple(d["start"]), tuple(d["stop"]), tuple(d["shape"]))  # type: ignore[arg-type]


def crop_for_center(center: Sequence[float], size: Sequence[int], shape: Sequence[int]) -> Crop:
    """The box of ``size`` voxels whose centre is nearest to ``center`` (voxel coordinates).

    For an even size the box is ``[round(c - size/2), ... + size)``; the box is **not** shifted to
    stay inside the volume (it is padded instead), so the object stays centred.
    """
    size = tuple(int(s) for s in size)
    if any(s < 1 for s in size):
        raise ValueError(f"box size must be >= 1 voxel per axis, got {size!r}")
    start = tuple(int(math.floor(c - s / 2 + 0.5)) for c, s in zip(center, size))
    return Crop(start, tuple(a + s for a, s in zip(start, size)), tuple(int(n) for n in shape))  # type: ignore


# ----------------------------------------------------------------------------------- foreground
def bbox(mask: np.ndarray) -> BBox | None:
    """Bounding box (start, stop) of the non-zero voxels of ``mask``, or ``None`` when empty."""
    proj_z = mask.any(axis=(1, 2)) if mask.ndim == 3 else None
    if (proj_z is not None and not proj_z.any()) or (proj_z is None and not mask.any()):
        return None
    start, stop = [], []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(proj_z if ax == 0 and proj_z is not None else mask.any(axis=other))
        start.append(int(hit[0]))
        stop.append(int(hit[-1]) + 1)
    return tuple(start), tuple(stop)  # type: ignore[return-value]


def bbox_center(box: BBox) -> tuple[float, float, float]:
    """Centre of a bounding box in voxel coordinates (voxel ``i``'s centre is at ``i``)."""
    return tuple((a + b - 1) / 2 for a, b in zip(*box))  # type: ignore[return-value]


def foreground_center(label: np.ndarray) -> tuple[float, float, float] | None:
    """Centre of the foreground (label > 0) bounding box in voxel coordinates, ``None`` if empty.

    The bounding-box centre (not the centre of mass) guarantees that a box at least as large as
    the extent covers the whole foreground.
    """
    box = bbox(label > 0)
    return None if box is None else bbox_center(box)


def extent_mm(box: BBox, spacing: Sequence[float]) -> tuple[float, float, float]:
    """Physical size (z, y, x mm) of a voxel bounding box."""
    return tuple((b - a) * s for a, b, s in zip(*box, spacing))  # type: ignore[return-value]


def kidney_boxes(label: np.ndarray, spacing: Sequence[float], min_separation_mm: float = 40.0) -> list[BBox]:
    """One bounding box per kidney (foreground split into the patient's left and right).

    Connected components of the foreground are grouped around the two largest ones when their
    centres lie at least ``min_separation_mm`` apart left-right (x); every other component joins
    the nearer of the two. One kidney (or a horseshoe kidney) gives one box. Runs on the
    foreground's bounding box only, so it is cheap on large volumes.

    Returns:
        0, 1 or 2 boxes in the full volume's voxel coordinates, sorted by x.
    """
    outer = bbox(label)
    if outer is None:
        return []
    sl = tuple(slice(a, b) for a, b in zip(*outer))
    comp, n = ndimage.label(label[sl] > 0, structure=np.ones((3, 3, 3), bool))
    if n == 1:
        return [outer]
    sizes = np.bincount(comp.ravel())[1:]
    centers_x = np.array(ndimage.center_of_mass(np.ones_like(comp), comp, range(1, n + 1)))[:, 2]
    order = np.argsort(sizes)[::-1]
    a, b = order[0], order[1]
    if abs(centers_x[a] - centers_x[b]) * spacing[2] < min_separation_mm:
        return [outer]
    side = np.where(np.abs(centers_x - centers_x[a]) <= np.abs(centers_x - centers_x[b]), 0, 1)
    boxes = []
    for s in (0, 1):
        ids = np.flatnonzero(side == s) + 1
        sub = bbox(np.isin(comp, ids))  # never None: ids holds at least the component itself
        boxes.append((tuple(int(v + o) for v, o in zip(sub[0], outer[0])),
                      tuple(int(v + o) for v, o in zip(sub[1], outer[0]))))
    return sorted(boxes, key=lambda bx: bx[0][2])  # type: ignore[return-value]


def fit_box_size(extents_mm: Iterable[Sequence[float]], margin_mm: float = 10.0) -> tuple[float, float, float]:
    """The fixed box size: the largest extent per axis over all cases plus ``margin_mm`` on each side.

    Raises:
        ValueError: when no case has foreground.
    """
    ext = np.array([tuple(e) for e in extents_mm], float)
    if ext.size == 0:
        raise ValueError("no training case has foreground; cannot fit the ROI box size")
    return tuple(float(v) for v in ext.max(axis=0) + 2 * margin_mm)  # type: ignore[return-value]


def box_voxels(box_size_mm: Sequence[float], spacing: Sequence[float]) -> tuple[int, int, int]:
    """Box size in voxels at ``spacing`` (rounded up so the box covers at least ``box_size_mm``)."""
    return tuple(int(math.ceil(b / s - 1e-6)) for b, s in zip(box_size_mm, spacing))  # type: ignore


__all__ = [
    "BBox", "Crop", "bbox", "bbox_center", "box_voxels", "crop_for_center", "extent_mm", "fit_box_size",
    "foreground_center", "kidney_boxes",
]
