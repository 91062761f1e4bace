"""Per-case numbers the dashboard shows: the run's metrics CSV first, the package's metrics otherwise.

The official per-case metrics come from ``kidneyseg evaluate --csv`` (the run's ``metrics_csv``).
When a case has no row there (a manifest opened alone, a run still being evaluated), the viewer
computes them with the package's one implementation, the case's evaluation protocol
(:meth:`kidneyseg.evaluate.protocols.Protocol.case_metrics`), on the structures' bounding box
(plus a margin that keeps every surface inside it, so the values are those of the whole volume).

Which numbers depend on the case's dataset (:func:`metric_columns`):

* KiTS19 (``kits19`` protocol): kidney (label > 0) and tumor Dice, surface Dice at one tolerance
  (2 mm), HD95, the mean Dice; NaN where the reference structure is empty.
* KiTS23 (``kits23`` protocol): per region (kidney and masses {1, 2, 3}, masses {2, 3}, tumor {2})
  the Dice and the surface Dice at the region's own tolerance, the mean Dice and mean surface
  Dice; both masks empty = 1, one empty = 0 (the challenge's rule).

Volumes in ml are measured on the loaded label maps per evaluation region (:func:`volumes_ml`);
the largest tumor diameter too.

>>> import numpy as np
>>> a = np.zeros((6, 6, 6), np.uint8); a[1:4, 1:4, 1:4] = 1
>>> round(quick_metrics(a, a, (1.0, 1.0, 1.0))["kidney_dice"], 3)
1.0
>>> metric_columns("kits23")[:3]
('kidney_and_masses_dice', 'masses_dice', 'tumor_dice')
"""

from __future__ import annotations

import numpy as np

from ..data.datasets import Dataset, get_dataset
from ..evaluate.metrics import volume_ml
from ..evaluate.protocols import DEFAULT_TOLERANCE_MM, get_protocol
from ..measure.components import bounding_box
from ..measure.statistics import case_statistics
from .catalog import METRIC_COLUMNS, CaseData

#: Surface-Dice tolerance (mm) of the kits19 protocol when the viewer computes the metrics itself
#: (evaluate's default); KiTS23's regions carry their own.
TOLERANCE_MM = DEFAULT_TOLERANCE_MM


def metric_columns(dataset: Dataset | str | None = None) -> tuple[str, ...]:
    """The metric columns the dashboard shows for a dataset's cases (from the CSV or computed).

    KiTS19: :data:`~kidneyseg.viewer.catalog.METRIC_COLUMNS`; KiTS23: the kits23 protocol's
    columns without its volumes (each region's Dice, each region's surface Dice, ``mean_dice``,
    ``mean_surface_dice``).
    """
    dataset = get_dataset(dataset)
    if dataset.name == "kits19":
        return METRIC_COLUMNS
    return tuple(c for c in get_protocol(dataset).columns[1:] if not c.endswith("_ml"))


def volume_keys(dataset: Dataset | str | None = None) -> tuple[str, ...]:
    """``gt_<region>_ml`` then ``pred_<region>_ml`` per evaluation region of the dataset (KiTS19:
    :data:`~kidneyseg.viewer.catalog.VOLUME_KEYS`)."""
    regions = [r.name for r in get_dataset(dataset).regions]
    return tuple(f"{prefix}_{name}_ml" for prefix in ("gt", "pred") for name in regions)


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
                  tolerance_mm: float | None = None, dataset: Dataset | str | None = None) -> dict:
    """The dataset's :func:`metric_columns` for two (z, y, x) label maps, with its protocol.

    Args:
        label: reference label map (uint8, the dataset's label values) or ``None``.
        prediction: predicted label map on the same grid, or ``None``.
        spacing: voxel size in mm, (z, y, x).
        tolerance_mm: surface-Dice tolerance of the kits19 protocol (default 2 mm); KiTS23 fixes
            one per region, so it must stay ``None`` there.
        dataset: the maps' dataset (default KiTS19).

    Returns:
        dict with the metric columns (NaN without both maps) and the volumes of :func:`volumes_ml`.
    """
    dataset = get_dataset(dataset)
    protocol = get_protocol(dataset)
    protocol.tolerance(tolerance_mm)  # refuses a tolerance for KiTS23 before any work
    columns = metric_columns(dataset)
    out = {key: float("nan") for key in columns}
    out.update(volumes_ml(label, prediction, spacing, dataset))
    if label is None or prediction is None:
        return out
    box = bounding_box((label > 0) | (prediction > 0), 2) or (slice(None),) * 3
    m = protocol.case_metrics(prediction[box], label[box], spacing, tolerance_mm)
    out.update({key: float(m[key]) for key in columns})
    return out


def volumes_ml(label: np.ndarray | None, prediction: np.ndarray | None, spacing,
               dataset: Dataset | str | None = None) -> dict:
    """Volume (ml) of each evaluation region, :func:`volume_keys` (NaN for an absent map).

    KiTS19: ``gt_kidney_ml`` / ``pred_kidney_ml`` (kidney region, label > 0: kidney including
    tumor) and ``gt_tumor_ml`` / ``pred_tumor_ml`` (label 2). KiTS23: kidney_and_masses, masses,
    tumor.
    """
    dataset = get_dataset(dataset)
    out = {key: float("nan") for key in volume_keys(dataset)}
    for prefix, lab in (("gt", label), ("pred", prediction)):
        if lab is None:
            continue
        for region in dataset.regions:
            # the outermost region is every foreground label: label > 0, one pass
            mask = lab > 0 if region == dataset.foreground else region.mask(lab)
            out[f"{prefix}_{region.name}_ml"] = volume_ml(mask, spacing)
    return out


def case_summary(case: CaseData, tolerance_mm: float | None = None) -> dict:
    """Everything the metrics panel shows for a loaded case.

    Values of the run's metrics CSV win when its row has the dataset's metric columns (a KiTS23
    run's CSV is the kits23 protocol's); otherwise they are computed with :func:`quick_metrics`.
    ``source`` says which (``"metrics_csv"`` or ``"viewer"``), ``protocol`` which protocol.
    Tumor diameters are in cm: ``tumor_diameter_gt_cm`` / ``tumor_diameter_pred_cm`` measured on
    the label maps, ``tumor_size_cm`` from the manifest (the dataset's metadata file) when known.
    Surface-Dice tolerances: ``tolerance_mm`` (KiTS19) or ``<region>_tolerance_mm`` (KiTS23).
    """
    dataset = case.dataset
    protocol = get_protocol(dataset)
    columns = metric_columns(dataset)
    spacing = case.spacing
    label = case.label.array if case.label is not None else None
    pred = case.prediction.array if case.prediction is not None else None
    csv_row = case.entry.metrics
    if columns[0] in csv_row:  # the run's evaluation has this case: show its numbers
        out = {key: _num(csv_row.get(key)) for key in columns}
        out["source"] = "metrics_csv"
        out.update(volumes_ml(label, pred, spacing, dataset))
    else:
        out = quick_metrics(label, pred, spacing, tolerance_mm, dataset)
        out["source"] = "viewer"
    out["protocol"], out["dataset"] = protocol.name, dataset.name
    affine = case.reference.affine
    out["tumor_diameter_gt_cm"] = largest_tumor_diameter_mm(label, affine) / 10.0
    out["tumor_diameter_pred_cm"] = largest_tumor_diameter_mm(pred, affine) / 10.0
    out["tumor_size_cm"] = _num(case.entry.info.get("tumor_size_cm"))
    if protocol.fixed_tolerances:
        out.update({f"{r.name}_tolerance_mm": r.tolerance_mm for r in dataset.regions})
    else:
        out["tolerance_mm"] = protocol.tolerance(tolerance_mm)
    return out


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


__all__ = ["TOLERANCE_MM", "case_summary", "largest_tumor_diameter_mm", "metric_columns", "quick_metrics",
           "volume_keys", "volumes_ml"]
