"""Per-case numbers the dashboard shows: metrics CSV values first, a quick fallback otherwise.

The official per-case metrics come from ``kidneyseg evaluate --csv`` (the run's ``metrics_csv``).
When a case has no row there (a manifest opened alone, a run still being evaluated), the viewer
computes them from the loaded volumes: with ``kidneyseg.evaluate.metrics.case_metrics`` on the
structures' bounding box when that module is installed, else with the approximations here
(KiTS19 Dice with kidney = label > 0, tumor = label == 2; HD95 and surface Dice from boundary
*voxels*, not evaluate's area-weighted surface elements, so those two can differ by 0.1-0.2).
HD95 and surface Dice are skipped (NaN) when the bounding box exceeds
:data:`MAX_SURFACE_VOXELS`. Volumes in ml and the largest tumor diameter are always measured
here. Everything is NaN where the reference structure is empty.

>>> import numpy as np
>>> a = np.zeros((4, 4, 4), np.uint8); a[1:3, 1:3, 1:3] = 1
>>> round(dice(a > 0, a > 0), 3), volume_ml(a > 0, (2.0, 1.0, 1.0))
(1.0, 0.016)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .catalog import METRIC_COLUMNS, VOLUME_KEYS, CaseData

#: Surface-Dice tolerance (mm) of the viewer's fallback computation (evaluate's default).
TOLERANCE_MM = 2.0
#: The fallback skips HD95 / surface Dice (NaN) when the masks' bounding box exceeds this many
#: voxels: distance transforms there take tens of seconds and GBs (run ``kidneyseg evaluate``).
MAX_SURFACE_VOXELS = 4_000_000


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when the reference is empty."""
    ref, pred = np.asarray(reference, bool), np.asarray(prediction, bool)
    n_ref = int(ref.sum())
    if n_ref == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(ref, pred).sum()) / (n_ref + int(pred.sum()))


def volume_ml(mask: np.ndarray, spacing) -> float:
    """Volume of a boolean mask in ml (spacing in mm, (z, y, x))."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0


def bbox_slices(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """Bounding box of a boolean (z, y, x) mask as slices (grown by ``margin``); ``None`` if empty.

    Uses axis projections (one pass over the volume, no voxel index list).
    """
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    slab = mask[zs[0]: zs[-1] + 1]
    ys = np.flatnonzero(slab.any(axis=(0, 2)))
    xs = np.flatnonzero(slab.any(axis=(0, 1)))
    return tuple(slice(max(int(v[0]) - margin, 0), min(int(v[-1]) + 1 + margin, n))  # type: ignore[return-value]
                 for v, n in zip((zs, ys, xs), mask.shape))


def _crop_pair(a: np.ndarray, b: np.ndarray):
    """Crop both masks to the bounding box of their union plus a 1-voxel margin (zero-padded)."""
    sl = bbox_slices(a | b, 1)
    return np.pad(a[sl], 1), np.pad(b[sl], 1)


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing,
                      max_voxels: int | None = None):
    """Distances (mm) from each boundary voxel of one mask to the other mask's boundary.

    Returns:
        ``(ref_to_pred, pred_to_ref)`` 1D float arrays, or ``None`` if either mask is empty or
        their joint bounding box holds more than ``max_voxels`` voxels (default
        :data:`MAX_SURFACE_VOXELS`).
    """
    max_voxels = MAX_SURFACE_VOXELS if max_voxels is None else max_voxels
    ref, pred = np.asarray(reference, bool), np.asarray(prediction, bool)
    if not ref.any() or not pred.any():
        return None
    ref, pred = _crop_pair(ref, pred)
    if ref.size > max_voxels:
        return None
    b_ref, b_pred = _boundary(ref), _boundary(pred)
    to_pred = ndimage.distance_transform_edt(~b_pred, sampling=spacing)
    to_ref = ndimage.distance_transform_edt(~b_ref, sampling=spacing)
    return to_pred[b_ref], to_ref[b_pred]


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing) -> float:
    """95th percentile symmetric Hausdorff distance in mm; NaN if either mask is empty."""
    d = surface_distances(reference, prediction, spacing)
    if d is None:
        return float("nan")
    return float(np.percentile(np.concatenate(d), 95))


def surface_dice(reference: np.ndarray, prediction: np.ndarray, spacing,
                 tolerance_mm: float = TOLERANCE_MM) -> float:
    """Fraction of boundary voxels of both masks within ``tolerance_mm`` of the other boundary.

    NaN when the reference is empty; 0 when only the prediction is empty.
    """
    if not np.any(reference):
        return float("nan")
    if not np.any(prediction):
        return 0.0
    d = surface_distances(reference, prediction, spacing)
    if d is None:  # too large for the quick path
        return float("nan")
    close = int((d[0] <= tolerance_mm).sum()) + int((d[1] <= tolerance_mm).sum())
    return close / float(d[0].size + d[1].size)


def largest_diameter_mm(mask: np.ndarray, spacing) -> float:
    """Largest extent (max distance between two voxel centres) of the biggest component, in mm.

    KiTS19's ``tumor_size`` (kits.json, cm) is the radiologist's largest diameter; this is the
    comparable figure measured on a label map. NaN for an empty mask.
    """
    mask = np.asarray(mask, bool)
    box = bbox_slices(mask, 1)
    if box is None:
        return float("nan")
    mask = mask[box]  # crop first: labelling a 1059 x 512 x 512 volume takes seconds
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    points = np.argwhere(_boundary(mask)) * np.asarray(spacing, float)
    if len(points) > 4:
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # flat (one-slice) components: fall back to all boundary points
            pass
    if len(points) > 3000:  # keep the pairwise step bounded
        points = points[np.random.default_rng(0).choice(len(points), 3000, replace=False)]
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1)).max())


def quick_metrics(label: np.ndarray | None, prediction: np.ndarray | None, spacing,
                  tolerance_mm: float = TOLERANCE_MM) -> dict:
    """The metrics CSV's columns computed from two (z, y, x) label maps (see module docstring).

    Args:
        label: reference label map (uint8 {0, 1, 2}) or ``None``.
        prediction: predicted label map on the same grid, or ``None``.
        spacing: voxel size in mm, (z, y, x).

    Returns:
        dict with ``kidney_dice``, ``tumor_dice``, ``mean_dice``, ``kidney_surface_dice``,
        ``tumor_surface_dice``, ``kidney_hd95``, ``tumor_hd95`` (NaN without both maps) and the
        volumes of :func:`volumes_ml`.
    """
    out = {key: float("nan") for key in METRIC_COLUMNS}
    out.update(volumes_ml(label, prediction, spacing))
    if label is None or prediction is None:
        return out
    official = _evaluate_metrics(label, prediction, spacing, tolerance_mm)
    if official is not None:
        out.update(official)
        out["method"] = "evaluate"
        return out
    out["method"] = "approx"
    for name, ref, pred in (("kidney", label > 0, prediction > 0), ("tumor", label == 2, prediction == 2)):
        out[f"{name}_dice"] = dice(ref, pred)
        out[f"{name}_surface_dice"] = surface_dice(ref, pred, spacing, tolerance_mm)
        out[f"{name}_hd95"] = hd95(ref, pred, spacing)
    pair = [out["kidney_dice"], out["tumor_dice"]]
    out["mean_dice"] = float(np.mean(pair)) if not any(math.isnan(v) for v in pair) else float("nan")
    return out


def _evaluate_metrics(label: np.ndarray, prediction: np.ndarray, spacing, tolerance_mm: float):
    """The official per-case metrics (``kidneyseg.evaluate``) on the union's bounding box, or
    ``None`` when that module is missing or the box exceeds :data:`MAX_SURFACE_VOXELS`."""
    try:
        from ..evaluate.metrics import case_metrics
    except ImportError:
        return None
    box = bbox_slices((label > 0) | (prediction > 0), 2)
    if box is None or math.prod(s.stop - s.start for s in box) > MAX_SURFACE_VOXELS:
        return None
    # a 2-voxel margin keeps every surface inside the crop, so the metrics are unchanged
    m = case_metrics(prediction[box], label[box], spacing, tolerance_mm)
    return {key: float(m[key]) for key in METRIC_COLUMNS}


def volumes_ml(label: np.ndarray | None, prediction: np.ndarray | None, spacing) -> dict:
    """``gt_kidney_ml``, ``gt_tumor_ml``, ``pred_kidney_ml``, ``pred_tumor_ml`` (NaN when absent).

    Kidney is the KiTS19 kidney region, label > 0 (kidney including tumor); tumor is label 2.
    """
    out = {key: float("nan") for key in VOLUME_KEYS}
    for prefix, lab in (("gt", label), ("pred", prediction)):
        if lab is not None:
            out[f"{prefix}_kidney_ml"] = volume_ml(lab > 0, spacing)
            out[f"{prefix}_tumor_ml"] = volume_ml(lab == 2, spacing)
    return out


def case_summary(case: CaseData, tolerance_mm: float = TOLERANCE_MM) -> dict:
    """Everything the metrics panel shows for a loaded case.

    Values of the run's metrics CSV win; missing ones are computed with :func:`quick_metrics`.
    ``source`` says which (``"metrics_csv"``, ``"viewer"`` or ``"metrics_csv+viewer"``). Tumor
    diameters are in cm: ``tumor_diameter_gt_cm`` / ``tumor_diameter_pred_cm`` measured on the
    label maps, ``tumor_size_cm`` from the manifest (kits.json) when known.
    """
    spacing = case.spacing
    label = case.label.array if case.label is not None else None
    pred = case.prediction.array if case.prediction is not None else None
    csv_row = case.entry.metrics
    if "kidney_dice" in csv_row:  # the run's evaluation has this case: show its numbers
        out = {key: _num(csv_row.get(key)) for key in METRIC_COLUMNS}
        out["source"] = "metrics_csv"
        out.update(volumes_ml(label, pred, spacing))
    else:
        out = quick_metrics(label, pred, spacing, tolerance_mm)
        out["source"] = "viewer"
    out["tumor_diameter_gt_cm"] = (largest_diameter_mm(label == 2, spacing) / 10.0
                                   if label is not None else float("nan"))
    out["tumor_diameter_pred_cm"] = (largest_diameter_mm(pred == 2, spacing) / 10.0
                                     if pred is not None else float("nan"))
    out["tumor_size_cm"] = _num(case.entry.info.get("tumor_size_cm"))
    out["tolerance_mm"] = tolerance_mm
    return out


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


__all__ = ["TOLERANCE_MM", "case_summary", "dice", "hd95", "largest_diameter_mm", "quick_metrics",
           "surface_dice", "surface_distances", "volume_ml", "volumes_ml"]
