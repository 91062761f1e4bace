"""The thesis's ROI box (section 3.4): one fixed box size, centred on each case's foreground.

From the training labels we take the largest foreground (kidney + tumor) extent in mm along each
axis, add ``margin_mm`` on both sides, and use that one box size for every case. Each case is cut
with the box centred on the centre of its foreground bounding box (ground truth in training, the
stage-1 prediction at inference). Where the box leaves the volume the crop is padded, and the
:class:`Crop` records start/stop/padding in voxels so :func:`uncrop` restores the full grid exactly.

The per-kidney variant uses one box per kidney: the foreground is split into a left and a right part
(connected components grouped by the side of the patient's midline) and each part gets the fixed
per-kidney box size.

:func:`compare_strategies` measures, on real label maps, the volume each strategy keeps and the
foreground it cuts: the thesis's two alternatives (a fixed-location box, a tight per-label box)
against the fixed-size centred box and the per-kidney boxes.

>>> import numpy as np
>>> lab = np.zeros((10, 10, 10), np.uint8); lab[2:4, 5:8, 1:3] = 1
>>> crop = crop_for_center(foreground_center(lab), (4, 4, 4), lab.shape)
>>> cut = apply_crop(lab, crop)
>>> cut.shape, int(cut.sum()) == int(lab.sum())
((4, 4, 4), True)
>>> bool((uncrop(cut, crop) == lab).all())
True
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
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


def apply_crop(array: np.ndarray, crop: Crop, pad_value: float = 0) -> np.ndarray:
    """Cut ``crop`` out of ``array`` (z, y, x), padding with ``pad_value`` outside the volume."""
    if tuple(array.shape) != tuple(crop.shape):
        raise ValueError(f"array shape {array.shape} differs from the crop's volume shape {crop.shape}")
    out = np.full(crop.size, pad_value, dtype=array.dtype)
    out[crop.in_box] = array[crop.inside]
    return out


def uncrop(box: np.ndarray, crop: Crop, fill: float = 0) -> np.ndarray:
    """Put a box array back into a full volume of ``crop.shape`` (``fill`` outside the box).

    Exact inverse of :func:`apply_crop` inside the box: ``uncrop(apply_crop(a, c), c)`` equals ``a``
    wherever the box covers the volume.
    """
    if tuple(box.shape) != tuple(crop.size):
        raise ValueError(f"box shape {box.shape} differs from the crop size {crop.size}")
    out = np.full(crop.shape, fill, dtype=box.dtype)
    out[crop.inside] = box[crop.in_box]
    return out


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


def crop_for_label(label: np.ndarray, spacing: Sequence[float], box_size_mm: Sequence[float]) -> Crop | None:
    """The fixed-size box (``box_size_mm``) centred on ``label``'s foreground; ``None`` if empty."""
    center = foreground_center(label)
    if center is None:
        return None
    return crop_for_center(center, box_voxels(box_size_mm, spacing), label.shape)


def crops_per_kidney(label: np.ndarray, spacing: Sequence[float], kidney_box_mm: Sequence[float]) -> list[Crop]:
    """One fixed-size box (``kidney_box_mm``) per kidney, centred on that kidney's bounding box."""
    vox = box_voxels(kidney_box_mm, spacing)
    return [crop_for_center(bbox_center(b), vox, label.shape) for b in kidney_boxes(label, spacing)]


# ------------------------------------------------------------------------------ real-label study
@dataclass
class LabelGeometry:
    """What the ROI study needs from one label map (all boxes in voxels, spacing in mm)."""

    case_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    fg_box: BBox | None
    kidney_boxes: list
    fg_voxels: int


def label_geometry(path: str | os.PathLike, case_id: str | None = None) -> LabelGeometry:
    """Read one label file and measure its foreground and per-kidney boxes (canonical z, y, x).

    Reads the voxels with nibabel directly (no value validation: this is a study, not training
    input), which is ~10x faster than :func:`kidneyseg.io.load_volume` on large KiTS19 labels.
    """
    import nibabel as nib
    from nibabel import orientations as nio

    from ..io import CANONICAL_AXCODES, spacing_from_affine, to_canonical
    from ..errors import fail

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises assorted errors on broken files
        raise fail(path, f"cannot read label map ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    affine = np.asarray(img.affine, float)
    ornt = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL_AXCODES))
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        lab, spacing = data, spacing_from_affine(affine)
    else:
        vol = to_canonical(data, affine, str(path))
        lab, spacing = vol.array, vol.spacing
    return LabelGeometry(case_id or Path(path).parent.name, tuple(lab.shape), tuple(spacing),
                         bbox(lab), kidney_boxes(lab, spacing), int(np.count_nonzero(lab)))


def _geom_worker(args):
    return label_geometry(*args)


def scan_labels(paths: Sequence[tuple[str, str]], workers: int = 1, progress: bool = True) -> list[LabelGeometry]:
    """:func:`label_geometry` for many ``(case_id, label_path)`` pairs, in parallel, with a bar."""
    from tqdm.auto import tqdm

    jobs = [(p, c) for c, p in paths]
    if workers <= 1:
        return [label_geometry(*j) for j in tqdm(jobs, desc="labels", disable=not progress)]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(_geom_worker, jobs, chunksize=2), total=len(jobs), desc="labels",
                         disable=not progress))


def _overlap_voxels(a: BBox, b: BBox) -> int:
    return int(np.prod([max(0, min(b1, d1) - max(a0, c0)) for a0, b1, c0, d1 in zip(a[0], a[1], b[0], b[1])]))


def _crop_box(c: Crop) -> BBox:
    return c.start, c.stop


def compare_strategies(geoms: Sequence[LabelGeometry], train_ids: Iterable[str] | None = None,
                       margin_mm: float = 10.0) -> "pandas.DataFrame":  # noqa: F821
    """Volume kept and foreground cut per case for four ROI strategies.

    Strategies (boxes fitted on ``train_ids``, default all cases, and applied to every case):

    - ``fixed_location``: one box at the same place in every scan (thesis alternative 1): the union
      of all training foreground boxes in *relative* coordinates (fraction of each axis), plus the
      margin.
    - ``tight``: each case's own foreground bounding box plus the margin (thesis alternative 2; sizes
      vary).
    - ``fixed_size_centered``: the thesis's box, fixed size in mm, centred on the case's foreground.
    - ``per_kidney``: one fixed-size box per kidney (union of the two counted once).

    Foreground cut is measured against the foreground bounding box (voxels of the box outside the
    crop), an upper bound on the labelled voxels lost; it is exact zero when nothing is cut.

    Returns:
        DataFrame with columns case_id, split, strategy, box_z_mm, box_y_mm, box_x_mm, kept_fraction,
        removed_fraction, fg_cut_fraction.
    """
    import pandas as pd

    geoms = [g for g in geoms if g.fg_box is not None]
    train = set(train_ids) if train_ids is not None else {g.case_id for g in geoms}
    tr = [g for g in geoms if g.case_id in train]
    if not tr:
        raise ValueError("no training case with foreground for the ROI comparison")
    box_mm = fit_box_size([extent_mm(g.fg_box, g.spacing) for g in tr], margin_mm)
    kid_mm = fit_box_size([extent_mm(b, g.spacing) for g in tr for b in g.kidney_boxes], margin_mm)
    rel_lo = np.min([[a / n for a, n in zip(g.fg_box[0], g.shape)] for g in tr], axis=0)
    rel_hi = np.max([[b / n for b, n in zip(g.fg_box[1], g.shape)] for g in tr], axis=0)
    rows = []
    for g in geoms:
        vol = float(np.prod(g.shape))
        fg = g.fg_box
        fg_vox = float(np.prod([b - a for a, b in zip(*fg)]))
        m = [margin_mm / s for s in g.spacing]
        fixed = (tuple(max(0, int(math.floor(lo * n - mm))) for lo, n, mm in zip(rel_lo, g.shape, m)),
                 tuple(min(n, int(math.ceil(hi * n + mm))) for hi, n, mm in zip(rel_hi, g.shape, m)))
        tight = (tuple(max(0, int(math.floor(a - mm))) for a, mm in zip(fg[0], m)),
                 tuple(min(n, int(math.ceil(b + mm))) for b, n, mm in zip(fg[1], g.shape, m)))
        centered = _crop_box(crop_for_center(bbox_center(fg), box_voxels(box_mm, g.spacing), g.shape))
        kboxes = [_crop_box(crop_for_center(bbox_center(b), box_voxels(kid_mm, g.spacing), g.shape))
                  for b in g.kidney_boxes]
        full = ((0, 0, 0), g.shape)
        variants = {"fixed_location": [fixed], "tight": [tight], "fixed_size_centered": [centered],
                    "per_kidney": kboxes}
        for name, boxes in variants.items():
            inside = [_overlap_voxels(b, full) for b in boxes]
            kept = sum(inside)
            if len(boxes) == 2:
                kept -= _overlap_voxels(boxes[0], boxes[1]) if inside[0] and inside[1] else 0
            if name == "per_kidney":
                need = sum(float(np.prod([b - a for a, b in zip(*kb)])) for kb in g.kidney_boxes)
                got = sum(max(_overlap_voxels(kb, b) for b in boxes) for kb in g.kidney_boxes)
                cut = 1 - got / need if need else 0.0
            else:
                cut = 1 - _overlap_voxels(fg, boxes[0]) / fg_vox
            size = [(b - a) * s for a, b, s in zip(*boxes[0], g.spacing)] if len(boxes) == 1 else \
                list(kid_mm) if name == "per_kidney" else [math.nan] * 3
            if name == "fixed_size_centered":
                size = list(box_mm)
            rows.append({"case_id": g.case_id, "split": "train" if g.case_id in train else "val",
                         "strategy": name, "box_z_mm": size[0], "box_y_mm": size[1], "box_x_mm": size[2],
                         "kept_fraction": kept / vol, "removed_fraction": 1 - kept / vol,
                         "fg_cut_fraction": max(0.0, cut)})
    df = pd.DataFrame(rows)
    df.attrs["box_size_mm"] = box_mm
    df.attrs["kidney_box_size_mm"] = kid_mm
    return df


def summarize_strategies(df) -> "pandas.DataFrame":  # noqa: F821
    """Median/min/max kept fraction and the number of cases with any foreground cut, per strategy."""
    g = df.groupby("strategy", sort=False)
    return g.agg(median_kept=("kept_fraction", "median"), median_removed=("removed_fraction", "median"),
                 min_kept=("kept_fraction", "min"), max_kept=("kept_fraction", "max"),
                 cases_with_fg_cut=("fg_cut_fraction", lambda s: int((s > 0).sum())),
                 max_fg_cut=("fg_cut_fraction", "max"))


__all__ = [
    "BBox", "Crop", "LabelGeometry", "apply_crop", "bbox", "bbox_center", "box_voxels", "compare_strategies",
    "crop_for_center", "crop_for_label", "crops_per_kidney", "extent_mm", "fit_box_size", "foreground_center",
    "kidney_boxes", "label_geometry", "scan_labels", "summarize_strategies", "uncrop",
]
