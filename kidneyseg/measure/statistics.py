"""Per-case kidney and tumor statistics from a label map, no ground truth needed (``predict --statistics``).

:func:`case_statistics` is the one function ``predict --statistics``, the viewer and notebook 05
call. For a (z, y, x) label map (0 background, 1 kidney, 2 tumor) with its affine, and
optionally the CT in HU on the same grid, it reports:

* **per kidney** (``left`` / ``right``): volume of the kidney region (kidney tissue + tumor, ml),
  kidney-tissue volume (label 1, ml), mean / sd / median HU of the kidney tissue, its tumors;
* **per tumor** (26-connected components of label 2, largest first): which kidney it lies in,
  volume (ml), longest 3-D diameter and longest axial diameter (mm,
  :mod:`kidneyseg.measure.diameters`), mean / sd / median HU;
* the **tumor count** and the **tumor burden** (total tumor volume, ml).

**Left and right** are told apart in patient coordinates, never by array order: each
26-connected component of the kidney region is placed by the world (RAS) x of its centroid
(through the affine; RAS x grows towards the patient's *right*) relative to a midline. The
midline is the centre of the body on the axial slice through the kidneys when the CT is given
(voxels above -500 HU), else halfway between the two largest components, else the scanner's
isocentre (x = 0); ``midline`` in the result says which. Components on the same side form one
kidney (``components`` counts them).

Volumes use ``|det(affine)|`` per voxel and distances go through the affine, so oblique and
sheared grids are measured exactly. Work is done on the foreground's bounding box (and on each
tumor's own box): a 1059 x 512 x 512 case costs what its kidneys cost. HU statistics are NaN
without an image or for an empty structure.

>>> import numpy as np
>>> lab = np.zeros((10, 10, 20), np.uint8); lab[2:8, 2:8, 2:6] = 1; lab[2:8, 2:8, 14:18] = 1
>>> lab[4:6, 4:6, 14:16] = 2
>>> aff = np.diag([-1.0, -1.0, -1.0, 1.0])[:, [2, 1, 0, 3]]   # axis 2 runs to the patient's left
>>> s = case_statistics(lab, aff)
>>> [k.side for k in s.kidneys], s.tumor_count, s.tumors[0].kidney
(['right', 'left'], 1, 'left')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from .components import bounding_box, component_sizes, components, select
from .diameters import axial_diameter_mm, max_diameter_mm
from .volumes import linear_part, voxel_volume_ml

__all__ = ["BODY_HU", "CSV_COLUMNS", "CaseStatistics", "KidneyStatistics", "TumorStatistics", "case_statistics"]

#: Voxels above this HU count as body when the midline is taken from the CT.
BODY_HU = -500.0
SIDES = ("right", "left")


@dataclass
class KidneyStatistics:
    """One kidney (all kidney-region components on one side of the midline).

    Volumes in ml, HU of the kidney tissue (label 1), centroid in world RAS mm.
    """

    side: str
    volume_ml: float
    tissue_ml: float
    tumor_ml: float
    tumor_count: int
    hu_mean: float
    hu_sd: float
    hu_median: float
    components: int
    centroid_ras_mm: tuple[float, float, float]


@dataclass
class TumorStatistics:
    """One tumor (a 26-connected component of label 2), numbered from 1 by decreasing volume."""

    number: int
    kidney: str
    volume_ml: float
    diameter_3d_mm: float
    diameter_axial_mm: float
    hu_mean: float
    hu_sd: float
    hu_median: float
    centroid_ras_mm: tuple[float, float, float]


#: The columns of ``statistics.csv`` (one row per case; see :meth:`CaseStatistics.row`).
CSV_COLUMNS = (
    ["case_id"]
    + [f"{side}_kidney_{key}" for side in ("right", "left")
       for key in ("ml", "tissue_ml", "hu_mean", "hu_sd", "hu_median", "tumor_count", "tumor_ml")]
    + ["tumor_count", "tumor_burden_ml", "largest_tumor_kidney", "largest_tumor_ml",
       "largest_tumor_diameter_3d_mm", "largest_tumor_diameter_axial_mm", "largest_tumor_hu_mean", "midline"]
)


@dataclass
class CaseStatistics:
    """Everything :func:`case_statistics` measured on one case.

    Attributes:
        kidneys: right first, then left (only the sides that hold a kidney).
        tumors: largest first.
        midline: how left and right were told apart: ``"body"``, ``"kidneys"`` or ``"isocentre"``.
        midline_x_mm: the midline's world RAS x (mm).
        voxel_ml: the volume of one voxel (ml).
        hu: whether HU statistics were computed (an image was given).
    """

    kidneys: list[KidneyStatistics] = field(default_factory=list)
    tumors: list[TumorStatistics] = field(default_factory=list)
    midline: str = "isocentre"
    midline_x_mm: float = 0.0
    voxel_ml: float = float("nan")
    hu: bool = False

    @property
    def tumor_count(self) -> int:
        return len(self.tumors)

    @property
    def tumor_burden_ml(self) -> float:
        """Total tumor volume (ml)."""
        return float(sum(t.volume_ml for t in self.tumors))

    def kidney(self, side: str) -> KidneyStatistics | None:
        """The ``"left"`` or ``"right"`` kidney, or ``None``."""
        return next((k for k in self.kidneys if k.side == side), None)

    def to_dict(self) -> dict:
        """JSON-ready (NaN -> ``None``): what ``<case>.statistics.json`` holds."""
        out = {
            "units": {"volume": "ml", "diameter": "mm", "intensity": "HU", "coordinates": "RAS mm"},
            "kidneys": {k.side: asdict(k) for k in self.kidneys},
            "tumor_count": self.tumor_count,
            "tumor_burden_ml": self.tumor_burden_ml,
            "tumors": [asdict(t) for t in self.tumors],
            "midline": {"method": self.midline, "x_ras_mm": self.midline_x_mm},
            "voxel_ml": self.voxel_ml,
        }
        return _json_ready(out)

    def row(self, case_id: str) -> dict:
        """One flat row of ``statistics.csv`` (:data:`CSV_COLUMNS`; NaN where a value does not exist)."""
        nan = float("nan")
        out: dict = {"case_id": case_id}
        for side in ("right", "left"):
            k = self.kidney(side)
            vals = ((k.volume_ml, k.tissue_ml, k.hu_mean, k.hu_sd, k.hu_median, k.tumor_count, k.tumor_ml)
                    if k else (nan, nan, nan, nan, nan, 0, 0.0))
            for key, v in zip(("ml", "tissue_ml", "hu_mean", "hu_sd", "hu_median", "tumor_count", "tumor_ml"), vals):
                out[f"{side}_kidney_{key}"] = v
        t = self.tumors[0] if self.tumors else None
        out.update({
            "tumor_count": self.tumor_count, "tumor_burden_ml": self.tumor_burden_ml,
            "largest_tumor_kidney": t.kidney if t else "",
            "largest_tumor_ml": t.volume_ml if t else nan,
            "largest_tumor_diameter_3d_mm": t.diameter_3d_mm if t else nan,
            "largest_tumor_diameter_axial_mm": t.diameter_axial_mm if t else nan,
            "largest_tumor_hu_mean": t.hu_mean if t else nan,
            "midline": self.midline,
        })
        return out


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _hu(values: np.ndarray | None) -> tuple[float, float, float]:
    if values is None or values.size == 0:
        return float("nan"), float("nan"), float("nan")
    v = values.astype(np.float64, copy=False)
    return float(v.mean()), float(v.std()), float(np.median(v))


def _world(affine: np.ndarray, index) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(index, float) + affine[:3, 3]


def _midline(image, affine, centroids_x, sizes, fg_center) -> tuple[str, float]:
    """(method, world x) of the patient's midline (see the module docstring)."""
    if image is not None:
        k = int(round(fg_center[0]))
        body = np.asarray(image[k]) > BODY_HU
        if body.any():
            comp, n = ndimage.label(body)
            if n > 1:  # the body is the largest region of the slice (not the table, not a stray arm)
                body = comp == int(np.bincount(comp.ravel())[1:].argmax()) + 1
            yx = np.argwhere(body).mean(axis=0)
            return "body", float(_world(affine, (k, yx[0], yx[1]))[0])
    if len(centroids_x) >= 2:
        a, b = np.argsort(sizes)[::-1][:2]
        return "kidneys", float((centroids_x[a] + centroids_x[b]) / 2.0)
    return "isocentre", 0.0


def case_statistics(labels: np.ndarray, affine: np.ndarray, image: np.ndarray | None = None) -> CaseStatistics:
    """Measure kidneys and tumors of one label map (see the module docstring).

    Args:
        labels: (z, y, x) uint8 in {0, 1, 2}.
        affine: 4x4 voxel -> world (RAS, mm) matrix of ``labels`` (a canonical volume's ``affine``).
        image: the CT in HU on the same grid, or ``None`` (no HU statistics; midline from the kidneys).

    Returns:
        :class:`CaseStatistics`.
    """
    affine = np.asarray(affine, float)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x), got shape {labels.shape}")
    if image is not None and tuple(np.shape(image)) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from labels shape {labels.shape}")
    lin = linear_part(affine)
    voxel_ml = voxel_volume_ml(affine)
    stats = CaseStatistics(voxel_ml=voxel_ml, hu=image is not None)
    box = bounding_box(labels)  # projections of the uint8 map: no full-size mask
    if box is None:
        stats.midline, stats.midline_x_mm = _midline(image, affine, [], [], np.array(labels.shape) / 2.0)
        return stats
    offset = np.array([s.start for s in box], float)
    lab = labels[box]
    img = np.asarray(image[box]) if image is not None else None

    # kidney-region components, their centroids in world x, and the midline
    comp, n = components(lab > 0)
    sizes = component_sizes(comp, n)[1:]
    cents = np.asarray(ndimage.center_of_mass(np.ones(lab.shape, bool), comp, range(1, n + 1)), float).reshape(n, 3)
    world = np.stack([_world(affine, offset + c) for c in cents]) if n else np.zeros((0, 3))
    fg_center = offset + (np.average(cents, axis=0, weights=sizes) if n else np.array(lab.shape) / 2.0)
    stats.midline, stats.midline_x_mm = _midline(image, affine, world[:, 0], sizes, fg_center)
    # RAS x grows towards the patient's right: left of the midline is the smaller x
    side_of = np.array(["left" if x < stats.midline_x_mm else "right" for x in world[:, 0]], dtype=object)

    # tumors, largest first
    tcomp, tn = components(lab == 2)
    tumors = []
    for t, sl in enumerate(ndimage.find_objects(tcomp), start=1):
        m = tcomp[sl] == t
        host = comp[sl][m]
        side = str(side_of[int(np.bincount(host).argmax()) - 1])  # tumor lies inside the kidney region
        cen = offset + np.array([s.start for s in sl]) + np.argwhere(m).mean(axis=0)
        mean, sd, med = _hu(img[sl][m] if img is not None else None)
        tumors.append(TumorStatistics(0, side, float(m.sum()) * voxel_ml, max_diameter_mm(m, lin),
                                      axial_diameter_mm(m, lin), mean, sd, med,
                                      tuple(round(float(v), 2) for v in _world(affine, cen))))
    tumors.sort(key=lambda s: (-s.volume_ml, s.centroid_ras_mm))
    for i, t in enumerate(tumors, start=1):
        t.number = i
    stats.tumors = tumors

    # kidneys, right then left
    for side in SIDES:
        ids = [i + 1 for i in range(n) if side_of[i] == side]
        if not ids:
            continue
        region = select(comp, n, ids)
        tissue = region & (lab == 1)
        w = sizes[np.array(ids) - 1]
        centroid = np.average(world[np.array(ids) - 1], axis=0, weights=w)
        mean, sd, med = _hu(img[tissue] if img is not None else None)
        mine = [t for t in tumors if t.kidney == side]
        stats.kidneys.append(KidneyStatistics(
            side, float(region.sum()) * voxel_ml, float(tissue.sum()) * voxel_ml,
            float(sum(t.volume_ml for t in mine)), len(mine), mean, sd, med, len(ids),
            tuple(round(float(v), 2) for v in centroid)))
    return stats
