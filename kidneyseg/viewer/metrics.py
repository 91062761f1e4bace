"""Per-case numbers the dashboard shows: the run's metrics CSV first, the package's metrics otherwise.

The official per-case metrics come from ``kidneyseg evaluate --csv`` (the run's ``metrics_csv``).
When a case has no row there (a manifest opened alone, a run still being evaluated), the viewer
computes them with the same function, :func:`kidneyseg.evaluate.metrics.case_metrics`, on the
structures' bounding box (plus a margin that keeps every surface inside it, so the values are
those of the whole volume). Volumes in ml and the largest tumor diameter are measured on the label
maps. Everything is NaN where the reference structure is empty.

>>> import numpy as np
>>> a = np.zeros((6, 6, 6), np.uint8); a[1:4, 1:4, 1:4] = 1
>>> round(quick_metrics(a, a, (1.0, 1.0, 1.0))["kidney_dice"], 3)
1.0
"""

from __future__ import annotations

import numpy as np

from ..evaluate.metrics import case_metrics, volume_ml
from ..measure.components import bounding_box
from ..measure.statistics import case_statistics
from .catalog import METRIC_COLUMNS, VOLUME_KEYS, CaseData

#: Surface-Dice tolerance (mm) when the viewer computes the metrics itself (evaluate's default).
TOLERANCE_MM = 2.0


def largest_tumor_diameter_mm(labels: np.ndarray | None, affine) -> float:
    """Longest 3-D diameter (mm) of the largest tumor of a label map, NaN without a tumor.

    The figure ``predict --statistics`` reports (:func:`kidneyseg.measure.statistics.case_statistics`);
    KiTS19's ``tumor_size`` (kits.json, cm) is the radiologist's comparable measurement.
    """
    if labels is None:
        return float("nan")
    stats = case_statistics(labels, affine)
    return stats.tumors[0].diameter_3d_mm if stats.tumors else float("nan")


def quick_metrics(label: np.ndarray | None, prediction: np.ndarray | None, spacing,
                  tolerance_mm: float = TOLERANCE_MM) -> dict:
    """The metrics CSV's columns for two (z, y, x) label maps, with :func:`case_metrics`.

    Args:
        label: reference label map (uint8 {0, 1, 2}) or ``None``.
        prediction: predicted label map on the same grid, or ``None``.
        spacing: voxel size in mm, (z, y, x).

    Returns:
        dict with :data:`~kidneyseg.viewer.catalog.METRIC_COLUMNS` (NaN without both maps) and the
        volumes of :func:`volumes_ml`.
    """
    out = {key: float("nan") for key in METRIC_COLUMNS}
    out.update(volumes_ml(label, prediction, spacing))
    if label is None or prediction is None:
        return out
    box = bounding_box((label > 0) | (prediction > 0), 2) or (slice(None),) * 3
    m = case_metrics(prediction[box], label[box], spacing, tolerance_mm)
    out.update({key: float(m[key]) for key in METRIC_COLUMNS})
    return out


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

    Values of the run's metrics CSV win; otherwise they are computed with :func:`quick_metrics`.
    ``source`` says which (``"metrics_csv"`` or ``"viewer"``). Tumor diameters are in cm:
    ``tumor_diameter_gt_cm`` / ``tumor_diameter_pred_cm`` measured on the label maps,
    ``tumor_size_cm`` from the manifest (kits.json) when known.
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
    affine = case.reference.affine
    out["tumor_diameter_gt_cm"] = largest_tumor_diameter_mm(label, affine) / 10.0
    out["tumor_diameter_pred_cm"] = largest_tumor_diameter_mm(pred, affine) / 10.0
    out["tumor_size_cm"] = _num(case.entry.info.get("tumor_size_cm"))
    out["tolerance_mm"] = tolerance_mm
    return out


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


__all__ = ["TOLERANCE_MM", "case_summary", "largest_tumor_diameter_mm", "quick_metrics", "volumes_ml"]
